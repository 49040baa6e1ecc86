"""Speech whose every word and filler time is known by construction (espeak-ng).

Each word and each filler is synthesised on its own, trimmed to its sound and laid end to
end with chosen gaps, so the true span of every piece is known to the sample. Used by the
recogniser and filler tests; the benchmarks build larger sets the same way, with the same
synthesis (:mod:`bench.corpus`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import corpus
from pod_audio.dsp import write_wav

SR = corpus.SR

__all__ = ["SR", "Piece", "Script", "espeak", "has_espeak", "render_script"]


def has_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, *, voice: str = "en-us+m3", speed_wpm: int = 160, pitch: int = 50) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz, trimmed to its sound (-45 dBFS per 10 ms)."""
    return corpus.espeak(text, voice=voice, speed_wpm=speed_wpm, pitch=pitch)


@dataclass(frozen=True)
class Piece:
    """One spoken piece and where it lies in the rendered audio (seconds)."""

    kind: str  # "word" or "filler"
    text: str
    start_s: float
    end_s: float


Script = list[tuple[str, object]]
"""``("say", "a sentence")`` word by word with short gaps; ``("slow", "word")`` one word at
80 words per minute (a drawn-out vowel); ``("filler", "um")``; ``("gap", seconds)``."""


def render_script(
    script: Script, path: Path, *, voice: str = "en-us+m3", seed: int = 0
) -> tuple[Path, list[Piece]]:
    """Render ``script`` to a WAV at ``path``; returns it and every piece's true span.

    Words of a ``say`` item are 20-90 ms apart (seeded); faint noise (-70 dBFS) lies under
    everything so that no stretch is digital silence.
    """
    rng = np.random.default_rng(seed)
    chunks: list[np.ndarray] = [np.zeros(int(0.3 * SR), dtype=np.float32)]
    position = len(chunks[0])
    pieces: list[Piece] = []

    def add(samples: np.ndarray, kind: str | None = None, text: str = "") -> None:
        nonlocal position
        if kind is not None:
            pieces.append(Piece(kind, text, position / SR, (position + len(samples)) / SR))
        chunks.append(samples)
        position += len(samples)

    for kind, value in script:
        if kind == "gap":
            add(np.zeros(int(float(value) * SR), dtype=np.float32))  # type: ignore[arg-type]
        elif kind == "filler":
            add(espeak(str(value), voice=voice, speed_wpm=100), "filler", str(value))
        elif kind == "slow":
            add(espeak(str(value), voice=voice, speed_wpm=80), "word", str(value))
        else:
            for i, word in enumerate(str(value).split()):
                if i:
                    add(np.zeros(int(rng.uniform(0.02, 0.09) * SR), dtype=np.float32))
                add(espeak(word, voice=voice), "word", word)
    add(np.zeros(int(0.3 * SR), dtype=np.float32))
    audio = np.concatenate(chunks)
    audio += rng.normal(0, 3e-4, len(audio)).astype(np.float32)
    return write_wav(path, audio), pieces
