"""Benchmark inputs: long speech-like episodes and a real-speech sample for transcription.

Episodes are generated block by block (memory does not grow with their length) and cached
in ``bench/out`` under a name derived from every parameter, so a second run reuses them.

The speech-like signal: phrases of 3-13 "words" separated by pauses of 0.3-3 s. A word is
a harmonic source (a sawtooth at a per-word pitch of 95-170 Hz, plus some noise) through
three formant resonators (~500, ~1500, ~2500 Hz), amplitude-modulated at syllable rate
(about 4.5 syllables per second). About 5 % of the words are fillers ("um", "uh"): one
long flat syllable with a pause on both sides. Under everything lies a low-passed noise
floor, independent per channel. Next to each file lies the transcript that the layout
implies (words with exact times, fillers flagged), so the cleaning step can be measured
without speech recognition.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, lfilter, lfilter_zi, sosfilt

from pod_audio.io import iter_blocks
from pod_audio.writer import open_writer
from pod_audio.transcript import Transcript, Word

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"

GENERATOR_VERSION = 1
"""Bump when the signal changes, so cached files are regenerated."""

_BLOCK_FRAMES = 65536
_VOCABULARY = (
    "the", "show", "today", "we", "talk", "about", "audio", "and", "how", "it", "works",
    "with", "our", "guest", "from", "the", "studio", "really", "think", "that", "data",
    "pipeline", "episode", "listeners", "question", "because", "people", "sound", "time",
)
_FILLERS = ("um", "uh")


@dataclass(frozen=True)
class EpisodeSpec:
    """Parameters of a generated episode; every one of them goes into the cache key."""

    duration_s: float
    sample_rate: int = 44100
    channels: int = 2
    speech_level_dbfs: float = -20.0
    noise_floor_dbfs: float = -60.0
    filler_share: float = 0.05
    seed: int = 1
    version: int = GENERATOR_VERSION

    @property
    def stem(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"speech_{self.duration_s / 60:g}min_{digest[:10]}"


@dataclass(frozen=True)
class Episode:
    """A generated episode on disk."""

    spec: EpisodeSpec
    audio_path: Path
    transcript_path: Path


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    starts_s: np.ndarray  # word starts, sorted
    ends_s: np.ndarray
    pitch_hz: np.ndarray  # per word
    gain: np.ndarray  # per word, linear
    syllables: np.ndarray  # per word; 0 marks a filler (one flat syllable)
    texts: tuple[str, ...]


def _layout(spec: EpisodeSpec) -> _Layout:
    rng = np.random.default_rng(spec.seed)
    starts, ends, pitches, gains, syllables, texts = [], [], [], [], [], []
    t = 0.8  # leading silence
    end_limit = spec.duration_s - 1.2  # trailing silence
    while True:
        phrase_pitch = rng.uniform(100.0, 150.0)
        n_words = int(rng.integers(3, 14))
        phrase: list[tuple[float, float, float, float, int, str]] = []
        pos = t
        for _ in range(n_words):
            if rng.random() < spec.filler_share:
                pos += rng.uniform(0.15, 0.4)
                dur = rng.uniform(0.25, 0.6)
                phrase.append((pos, pos + dur, phrase_pitch * 0.9, 0.6, 0, str(rng.choice(_FILLERS))))
                pos += dur + rng.uniform(0.15, 0.4)
                continue
            dur = rng.uniform(0.15, 0.6)
            n_syl = max(1, int(round(dur * 4.5)))
            pitch = phrase_pitch * rng.uniform(0.85, 1.15)
            phrase.append((pos, pos + dur, pitch, rng.uniform(0.5, 1.0), n_syl, str(rng.choice(_VOCABULARY))))
            pos += dur + rng.uniform(0.02, 0.15)
        if phrase[-1][1] > end_limit:
            break
        for item in phrase:
            starts.append(item[0])
            ends.append(item[1])
            pitches.append(item[2])
            gains.append(item[3])
            syllables.append(item[4])
            texts.append(item[5])
        pause = rng.uniform(0.3, 1.0) if rng.random() < 0.7 else rng.uniform(1.0, 3.0)
        t = phrase[-1][1] + pause
    return _Layout(
        starts_s=np.array(starts),
        ends_s=np.array(ends),
        pitch_hz=np.array(pitches),
        gain=np.array(gains),
        syllables=np.array(syllables),
        texts=tuple(texts),
    )


def transcript_of(spec: EpisodeSpec) -> Transcript:
    """The transcript the layout of ``spec`` implies: every word at its exact time."""
    layout = _layout(spec)
    words = tuple(
        Word(
            text=text,
            start_s=round(float(start), 3),
            end_s=round(float(end), 3),
            confidence=0.9,
            is_filler=bool(n_syl == 0),
        )
        for start, end, n_syl, text in zip(
            layout.starts_s, layout.ends_s, layout.syllables, layout.texts, strict=True
        )
    )
    return Transcript(
        words=words, duration_s=spec.duration_s, engine="synthetic", engine_version=f"bench-{spec.version}"
    )


# --------------------------------------------------------------------------- signal


class _Synth:
    """Streams the signal of a layout, block by block, keeping filter states between blocks."""

    def __init__(self, spec: EpisodeSpec, layout: _Layout, *, speech_gain: float) -> None:
        self.spec = spec
        self.layout = layout
        self.speech_gain = speech_gain
        sr = spec.sample_rate
        self.rng = np.random.default_rng(spec.seed + 1000)
        self.phase = 0.0
        self.formants = [
            butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")
            for lo, hi in ((400.0, 650.0), (1300.0, 1700.0), (2300.0, 2800.0))
        ]
        self.formant_gain = (1.0, 0.5, 0.25)
        self.formant_state = [np.zeros((sos.shape[0], 2)) for sos in self.formants]
        alpha = float(np.exp(-2 * np.pi * 2000.0 / sr))
        self.floor_ba = ([1 - alpha], [1, -alpha])
        zi = lfilter_zi(*self.floor_ba)
        self.floor_state = [zi * 0.0 for _ in range(spec.channels)]
        # White noise through the one-pole low-pass loses this much power.
        self.floor_scale = 10 ** (spec.noise_floor_dbfs / 20) / np.sqrt((1 - alpha) / (1 + alpha))
        self.channel_gain = np.array([1.0, 0.9, 0.95, 0.85][: spec.channels], dtype=np.float64)
        self.pos = 0

    def block(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``frames`` frames: ``(stereo float32 block, mono speech before floor)``."""
        sr = self.spec.sample_rate
        lay = self.layout
        t = (self.pos + np.arange(frames)) / sr
        self.pos += frames
        idx = np.searchsorted(lay.starts_s, t, side="right") - 1
        safe = np.maximum(idx, 0)
        inside = (idx >= 0) & (t < lay.ends_s[safe])
        start = lay.starts_s[safe]
        dur = lay.ends_s[safe] - start
        rel = np.clip((t - start) / dur, 0.0, 1.0)
        n_syl = lay.syllables[safe]
        syllable_env = 0.5 * (1 - np.cos(2 * np.pi * np.maximum(n_syl, 1) * rel))
        filler_env = np.minimum(1.0, np.minimum(rel, 1 - rel) * 8.0)  # flat with soft edges
        env = np.where(n_syl == 0, filler_env, syllable_env) * lay.gain[safe] * inside

        f0 = np.where(inside, lay.pitch_hz[safe], 120.0)
        phase = self.phase + np.cumsum(f0 / sr)
        self.phase = float(phase[-1] % 1.0)
        source = (phase % 1.0) - 0.5 + 0.3 * self.rng.standard_normal(frames)
        voiced = np.zeros(frames)
        for i, sos in enumerate(self.formants):
            out, self.formant_state[i] = sosfilt(sos, source, zi=self.formant_state[i])
            voiced += self.formant_gain[i] * out
        speech = voiced * env * self.speech_gain

        out = np.empty((frames, self.spec.channels), dtype=np.float32)
        for ch in range(self.spec.channels):
            floor, self.floor_state[ch] = lfilter(
                *self.floor_ba, self.rng.standard_normal(frames), zi=self.floor_state[ch]
            )
            out[:, ch] = np.clip(speech * self.channel_gain[ch] + floor * self.floor_scale, -1.0, 1.0)
        return out, speech


def _speech_gain(spec: EpisodeSpec, layout: _Layout) -> float:
    """Gain that puts the RMS of the spoken parts at ``spec.speech_level_dbfs``."""
    probe_spec = EpisodeSpec(**{**asdict(spec), "duration_s": min(spec.duration_s, 60.0)})
    synth = _Synth(probe_spec, layout, speech_gain=1.0)
    total = 0.0
    count = 0
    remaining = int(probe_spec.duration_s * spec.sample_rate)
    while remaining > 0:
        n = min(_BLOCK_FRAMES, remaining)
        remaining -= n
        _, speech = synth.block(n)
        voiced = speech[np.abs(speech) > 0]
        total += float(np.sum(voiced**2))
        count += voiced.size
    rms = np.sqrt(total / max(count, 1))
    return float(10 ** (spec.speech_level_dbfs / 20) / max(rms, 1e-12))


def episode_blocks(spec: EpisodeSpec) -> Iterator[np.ndarray]:
    """The episode's audio as ``float32`` blocks of shape ``(frames, channels)``."""
    layout = _layout(spec)
    synth = _Synth(spec, layout, speech_gain=_speech_gain(spec, layout))
    remaining = int(round(spec.duration_s * spec.sample_rate))
    while remaining > 0:
        n = min(_BLOCK_FRAMES, remaining)
        remaining -= n
        yield synth.block(n)[0]


def ensure_episode(spec: EpisodeSpec, *, out_dir: Path = OUT_DIR) -> Episode:
    """The cached episode for ``spec``, generated (FLAC, 16 bit) if missing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = out_dir / f"{spec.stem}.flac"
    transcript = out_dir / f"{spec.stem}.transcript.json"
    if not (audio.exists() and transcript.exists()):
        partial = audio.with_name(f".{audio.name}.partial.flac")
        with open_writer(
            partial,
            sample_rate=spec.sample_rate,
            channels=spec.channels,
            codec="flac",
            bits_per_sample=16,
        ) as writer:
            for block in episode_blocks(spec):
                writer.write(block)
        transcript.write_text(transcript_of(spec).to_json())
        os.replace(partial, audio)
    return Episode(spec=spec, audio_path=audio, transcript_path=transcript)


# --------------------------------------------------------------------------- ASR sample


JFK_PATH = REPO / "samples" / "jfk-inaugural-excerpt.flac"
"""11 s of real, public-domain speech shipped with the project."""


def ensure_speech_sample(duration_s: float, *, seed: int = 7, out_dir: Path = OUT_DIR) -> Path:
    """Real speech for transcription: ``jfk.flac`` (11 s) repeated with pauses of 0.4-2.0 s
    (low noise, not digital silence) until ``duration_s``; 44.1 kHz stereo FLAC, cached."""
    source = JFK_PATH
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"jfk_loop_{duration_s:g}s_seed{seed}_v{GENERATOR_VERSION}.flac"
    if path.exists():
        return path
    speech = np.concatenate(list(iter_blocks(source, sample_rate=44100, channels=2)))
    rng = np.random.default_rng(seed)
    total = int(duration_s * 44100)
    partial = path.with_name(f".{path.name}.partial.flac")
    written = 0
    with open_writer(partial, sample_rate=44100, channels=2, codec="flac", bits_per_sample=16) as writer:
        while written < total:
            pause = int(rng.uniform(0.4, 2.0) * 44100)
            gap = (rng.standard_normal((pause, 2)) * 10 ** (-62 / 20)).astype(np.float32)
            for piece in (gap, speech):
                piece = piece[: total - written]
                if len(piece):
                    writer.write(piece)
                    written += len(piece)
    os.replace(partial, path)
    return path


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.workloads episode --minutes 15`` / ``speech --seconds 180``: make
    (or find) an input and print its paths as JSON. The benchmark runner calls this in a
    child process, so its own memory stays small (see ``bench/run.py``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.workloads")
    sub = parser.add_subparsers(dest="kind", required=True)
    episode = sub.add_parser("episode", help="speech-like episode, FLAC 44.1 kHz stereo")
    episode.add_argument("--minutes", type=float, required=True)
    speech = sub.add_parser("speech", help="jfk.flac looped with pauses")
    speech.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    if args.kind == "episode":
        made = ensure_episode(EpisodeSpec(duration_s=args.minutes * 60.0))
        result = {
            "audio": str(made.audio_path),
            "transcript": str(made.transcript_path),
            "spec": asdict(made.spec),
        }
    else:
        result = {"audio": str(ensure_speech_sample(args.seconds))}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
