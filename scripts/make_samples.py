"""Builds the sample episodes shipped in ``samples/`` (run once; the outputs are committed).

* ``samples/jfk-inaugural-excerpt.flac``: 11 s of public-domain speech (1961 inaugural),
  committed as is.
* ``samples/studio-chat-with-fillers.mp3``: synthetic speech (espeak-ng) with "um"/"uh"
  fillers and pauses of 1.5-3 s, over a faint noise floor, as an MP3 upload.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE = 22050

SCRIPT: list[tuple[str, float]] = [
    ("Welcome back to the show. Today we talk about building a podcast pipeline.", 0.4),
    ("um", 0.5),
    ("The first step is always the raw recording.", 2.5),
    ("uh", 0.4),
    ("We keep the original bytes, and we never delete them too early.", 0.3),
    ("Then the transcript gives us every word with its time.", 3.0),
    ("um", 0.6),
    ("And finally we master the episode to a steady loudness.", 1.0),
]


def _speak(text: str, out: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out), text], check=True)
    with wave.open(str(out)) as handle:
        assert handle.getframerate() == RATE
        frames = handle.readframes(handle.getnframes())
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0


def build_chat(out_path: Path) -> None:
    rng = np.random.default_rng(7)
    pieces: list[np.ndarray] = [np.zeros(int(0.8 * RATE), np.float32)]
    with tempfile.TemporaryDirectory() as scratch:
        for index, (text, pause_s) in enumerate(SCRIPT):
            pieces.append(_speak(text, Path(scratch) / f"{index}.wav"))
            pieces.append(np.zeros(int(pause_s * RATE), np.float32))
        audio = np.concatenate(pieces)
        audio += rng.normal(0, 10 ** (-55 / 20), audio.shape).astype(np.float32)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        wav = Path(scratch) / "chat.wav"
        with wave.open(str(wav), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(RATE)
            handle.writeframes(pcm.tobytes())
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-ar", "44100", "-ac", "2",
             "-b:a", "96k", str(out_path)],
            check=True,
        )


def main() -> int:
    samples = ROOT / "samples"
    samples.mkdir(exist_ok=True)
    # samples/jfk-inaugural-excerpt.flac (the 1961 inaugural, public domain) is committed as is.
    build_chat(samples / "studio-chat-with-fillers.mp3")
    for path in sorted(samples.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
