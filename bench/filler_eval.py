"""Measure the filler detector of :mod:`pod_audio.fillers` on speech with known filler times.

Evaluation sets, all generated from fixed seeds (``docs/fillers.md`` discusses the results):

``synthetic_tune`` (seed 101) / ``synthetic_heldout`` (seed 202)
    espeak-ng sentences with "um", "uh", "er", "ah", "hmm" inserted between words. Every
    piece (a run of words, a filler) is synthesized on its own and the pieces are
    concatenated with numpy, so the true filler spans are known to the sample. Each side of a
    filler gets a pause (0.15-0.6 s) or none (0-40 ms); fillers are 0-6 dB softer than the
    words. Half the files are band-limited, all get white or pink noise 20-45 dB below the
    speech. The held-out set uses other sentences, another seed and four voices the tuning
    set never has.
``jfk_mix_dev`` (seed 303) / ``jfk_mix`` (seed 404)
    the real speech of ``jfk.flac`` with synthetic fillers spliced in, half into its pauses
    (over its own room noise), half between two words (no pause). Fillers are band-limited
    and level-matched to the speech.
``jfk_alone``
    ``jfk.flac`` itself: it holds no filler, every detection is a false positive.

The detector's weights are fitted (``--fit``) on ``synthetic_tune`` and ``jfk_mix_dev``
only; ``synthetic_heldout`` and ``jfk_mix`` are the reported results. The two jfk sets share
the same 11 s of real speech, so ``jfk_mix`` is held out in its fillers, not in its speech.

A detection is a transcript word with ``is_filler=True``; it is correct when its centre lies
within a true filler's span +/- 100 ms (each true filler matches at most one detection).
CPU time is process time of :func:`pod_audio.asr.transcribe` with ``workers=1``, split into the
recogniser and the filler detector.

Usage::

    .venv/bin/python bench/filler_eval.py            # table + bench/filler_results.json
    .venv/bin/python bench/filler_eval.py --quick    # 10 files per synthetic set
    .venv/bin/python bench/filler_eval.py --fit      # refit the detector on the tuning sets
                                                     # and print its constants
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import butter, sosfilt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pod_audio import asr, fillers  # noqa: E402
from pod_audio.io import iter_blocks  # noqa: E402
from pod_audio.transcript import Transcript  # noqa: E402

SR = 16000
MATCH_TOLERANCE_S = 0.1
RESULTS_PATH = REPO / "bench" / "filler_results.json"

TUNE_SEED = 101
HELDOUT_SEED = 202
JFK_MIX_DEV_SEED = 303
JFK_MIX_SEED = 404

SENTENCES_TUNE = (
    "so today we are talking about the history of the printing press",
    "I think the most important thing is to listen to your audience",
    "we recorded this episode in a small studio downtown",
    "the weather was terrible but the show went on anyway",
    "my guest has written three books about urban gardening",
    "you can find all the links in the show notes below",
    "last week we had a lot of questions about microphones",
    "the answer depends on how much time you have",
    "she started the company with two friends from college",
    "let me tell you what happened at the conference",
    "there are many ways to make a good cup of coffee",
    "our producer edited the interview over the weekend",
    "it took us almost a year to finish the project",
    "please send your feedback to the address on our website",
    "the city council voted against the new parking rules",
    "he moved to Canada when he was twelve years old",
    "we will be back after a short break",
    "the results of the survey were quite surprising",
    "most listeners prefer shorter episodes in the morning",
    "the new library opens next month on Main Street",
)
SENTENCES_HELDOUT = (
    "the museum keeps a collection of old radios in the basement",
    "before we start I want to thank everyone who wrote in",
    "my brother builds furniture from reclaimed wood",
    "the train was late so I missed the first half of the game",
    "this recipe needs fresh basil and a little lemon juice",
    "we talked to a scientist who studies ocean currents",
    "nobody expected the small team to win the championship",
    "the documentary follows three families over ten years",
    "you should always back up your files before an update",
    "the mountain trail is closed during the winter months",
    "our next guest teaches music at a public high school",
    "the bakery on the corner sells bread until noon",
    "I finally read the book everyone was recommending",
    "the festival moved indoors because of the storm",
    "a good interview starts with a simple question",
    "the engineers tested the bridge for several weeks",
    "she learned to code by building small games",
    "the podcast started as a hobby in a spare bedroom",
    "local farmers sell their vegetables every Saturday",
    "thanks for listening and see you next week",
)
VOICES_TUNE = (
    "en-us+m3", "en-us+f2", "en+m1", "en-gb+f3", "en-us+m7", "en-us+Andy", "en-us+Annie",
    "en-us+m5",
)
VOICES_HELDOUT = (
    "en-us+m3", "en-gb+f3", "en-us+Annie", "en+m1",
    # never in the tuning set:
    "en-us+Michael", "en-029+f2", "en-gb-x-rp+m2", "en-us+f5",
)
FILLER_TEXTS = ("um", "uh", "er", "ah", "hmm")
FILLER_WEIGHTS = (0.35, 0.3, 0.1, 0.1, 0.15)
JFK_FILLER_VOICES = ("en-us+m3", "en-us+m1", "en-us+Michael", "en+m1", "en-us+m5", "en-gb+m3")


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class TrueFiller:
    start_s: float
    end_s: float
    text: str
    context: str  # "paused" (pause on both sides), "one_side" or "tight" (no pause)


@dataclass(frozen=True)
class Item:
    path: str
    duration_s: float
    fillers: tuple[TrueFiller, ...]
    voice: str


@dataclass
class SetScore:
    name: str
    files: int = 0
    audio_s: float = 0.0
    true_fillers: int = 0
    detections: int = 0
    true_positives: int = 0
    recall_by_context: dict[str, list[int]] = field(default_factory=dict)  # context -> [hit, n]
    labels_correct: int = 0  # true positives spelled as the filler that was said
    coverage: list[float] = field(default_factory=list)  # share of each found filler covered
    overshoot_s: list[float] = field(default_factory=list)  # detection outside the true span
    asr_cpu_s: float = 0.0
    filler_cpu_s: float = 0.0
    false_positive_words: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_positives / self.detections if self.detections else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_fillers if self.true_fillers else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["coverage"], out["overshoot_s"]
        out.update(
            span_coverage_median=_percentile(self.coverage, 50),
            span_coverage_p10=_percentile(self.coverage, 10),
            overshoot_s_median=_percentile(self.overshoot_s, 50),
            overshoot_s_p90=_percentile(self.overshoot_s, 90),
            precision=round(self.precision, 3),
            recall=round(self.recall, 3),
            f1=round(self.f1, 3),
            label_accuracy=(
                round(self.labels_correct / self.true_positives, 3) if self.true_positives else None
            ),
            false_positives=self.detections - self.true_positives,
            asr_cpu_s_per_audio_s=round(self.asr_cpu_s / self.audio_s, 4) if self.audio_s else None,
            filler_cpu_s_per_audio_s=(
                round(self.filler_cpu_s / self.audio_s, 4) if self.audio_s else None
            ),
            recall_by_context={
                k: {"found": v[0], "total": v[1], "recall": round(v[0] / v[1], 3) if v[1] else None}
                for k, v in sorted(self.recall_by_context.items())
            },
        )
        out["audio_s"] = round(self.audio_s, 2)
        out["asr_cpu_s"] = round(self.asr_cpu_s, 2)
        out["filler_cpu_s"] = round(self.filler_cpu_s, 2)
        return out


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


# --------------------------------------------------------------------------- synthesis


def espeak(text: str, *, voice: str, speed_wpm: int, pitch: int) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng; 16 kHz float32 mono with silence trimmed."""
    with tempfile.TemporaryDirectory(prefix="filler-eval-") as tmp:
        out = Path(tmp) / "piece.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(out)]
            + [text],
            check=True,
            capture_output=True,
        )
        samples = np.concatenate([b[:, 0] for b in iter_blocks(out, sample_rate=SR, channels=1)])
    return trim_silence(samples)


def trim_silence(samples: np.ndarray, *, threshold_dbfs: float = -45.0) -> np.ndarray:
    n = len(samples) // 160
    if n == 0:
        return samples[:0]
    level = 10 * np.log10(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > threshold_dbfs)
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] * 160 : (loud[-1] + 1) * 160].astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes(pcm.tobytes())


def read_16k(path: str | os.PathLike[str]) -> np.ndarray:
    return np.concatenate([b[:, 0] for b in iter_blocks(path, sample_rate=SR, channels=1)])


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def _context(before_s: float, after_s: float) -> str:
    paused = (before_s >= 0.15) + (after_s >= 0.15)
    return ("tight", "one_side", "paused")[paused]


def synthetic_set(
    out_dir: Path, *, seed: int, n_files: int, sentences: Sequence[str], voices: Sequence[str]
) -> list[Item]:
    """espeak sentences with fillers inserted between words at known times."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    for index in range(n_files):
        voice = str(voices[rng.integers(len(voices))])
        speed = int(rng.integers(130, 181))
        pitch = int(rng.integers(30, 71))
        picks = rng.choice(len(sentences), size=2, replace=False)
        words = " ".join(sentences[i] for i in picks).split()
        n_fillers = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.3, 0.2]))
        points = sorted(rng.choice(np.arange(1, len(words)), size=n_fillers, replace=False))
        pieces: list[np.ndarray] = [_silence(rng.uniform(0.2, 0.6))]
        position = len(pieces[0])
        truth: list[TrueFiller] = []
        previous = 0
        for point in [*points, len(words)]:
            run = " ".join(words[previous:point])
            text = espeak(run, voice=voice, speed_wpm=speed, pitch=pitch)
            pieces.append(text)
            position += len(text)
            previous = point
            if point == len(words):
                break
            filler_text = str(rng.choice(FILLER_TEXTS, p=FILLER_WEIGHTS))
            filler = espeak(
                filler_text, voice=voice, speed_wpm=int(rng.integers(70, 151)), pitch=pitch
            )
            filler *= 10 ** (rng.uniform(-6.0, 1.0) / 20)  # fillers are often said softer
            gaps = [
                rng.uniform(0.15, 0.6) if rng.random() < 0.6 else rng.uniform(0.0, 0.04)
                for _ in range(2)
            ]
            before, after = _silence(gaps[0]), _silence(gaps[1])
            start = position + len(before)
            truth.append(
                TrueFiller(
                    start / SR, (start + len(filler)) / SR, filler_text, _context(*gaps)
                )
            )
            pieces += [before, filler, after]
            position += len(before) + len(filler) + len(after)
        pieces.append(_silence(rng.uniform(0.2, 0.6)))
        audio = _recording_chain(np.concatenate(pieces), rng)
        path = out_dir / f"{index:03d}.wav"
        write_wav(path, audio)
        items.append(Item(str(path), len(audio) / SR, tuple(truth), voice))
    return items


def _recording_chain(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vary the recording: band limits (half the files), noise 20-45 dB below the speech
    (white or pink), and the overall level."""
    if rng.random() < 0.5:
        low_hz, high_hz = rng.uniform(60, 200), rng.uniform(3400, 7000)
        audio = sosfilt(butter(4, [low_hz, high_hz], btype="bandpass", fs=SR, output="sos"), audio)
    active = audio[np.abs(audio) > 0.01 * np.abs(audio).max()]
    speech_rms = _rms(active) if len(active) else _rms(audio)
    noise = rng.normal(0, 1, len(audio))
    if rng.random() < 0.5:  # pink: -3 dB per octave
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        spectrum[0] = 0
        noise = np.fft.irfft(spectrum, n=len(audio))
    noise *= speech_rms * 10 ** (-rng.uniform(20, 45) / 20) / max(1e-12, _rms(noise))
    audio = audio + noise
    audio *= 10 ** (rng.uniform(-12, -1) / 20) / max(1e-6, float(np.abs(audio).max()))
    return audio.astype(np.float32)


def jfk_mix_set(out_dir: Path, *, jfk_path: Path, seed: int, n_files: int) -> list[Item]:
    """``jfk.flac`` with synthetic fillers spliced into its pauses and between its words."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    speech = read_16k(jfk_path)
    frame_db = _frame_db(speech)
    floor_db = float(np.percentile(frame_db, 10))
    loud = frame_db > floor_db + 10
    speech_rms = float(np.sqrt(np.mean(speech[: len(loud) * 160].reshape(-1, 160)[loud] ** 2)))
    pauses = _pauses(loud, min_frames=30)  # pauses of 0.3 s or more: (start, end) samples
    noise = speech[pauses[0][0] : pauses[0][1]] if pauses else np.zeros(SR, dtype=np.float32)
    words = asr.transcribe_samples(speech, detect_fillers=False).words
    # Cuts between two words with no pause between them, away from the file's ends.
    word_cuts = [
        round(word.end_s * SR)
        for word, following in zip(words, words[1:])
        if following.start_s - word.end_s < 0.02
    ]
    band = butter(4, [150, 3800], btype="bandpass", fs=SR, output="sos")
    items: list[Item] = []
    for index in range(n_files):
        n_fillers = int(rng.integers(1, 4))
        # Half the fillers go into pauses, half between two words.
        kinds = ["pause" if rng.random() < 0.5 else "word" for _ in range(n_fillers)]
        pause_at = [(a + b) // 2 for a, b in pauses]
        n_pauses = min(kinds.count("pause"), len(pause_at))
        n_words = min(kinds.count("word"), len(word_cuts))
        chosen = sorted(
            [("pause", int(at)) for at in rng.choice(pause_at, size=n_pauses, replace=False)]
            + [("word", int(at)) for at in rng.choice(word_cuts, size=n_words, replace=False)],
            key=lambda slot: slot[1],
        )
        voice = str(JFK_FILLER_VOICES[rng.integers(len(JFK_FILLER_VOICES))])
        pieces: list[np.ndarray] = []
        truth: list[TrueFiller] = []
        position = 0
        cursor = 0
        for kind, at in chosen:
            pieces.append(speech[cursor:at])
            position += at - cursor
            cursor = at
            text = str(rng.choice(FILLER_TEXTS, p=FILLER_WEIGHTS))
            filler = espeak(
                text,
                voice=voice,
                speed_wpm=int(rng.integers(70, 151)),
                pitch=int(rng.integers(30, 66)),
            )
            filler = sosfilt(band, filler).astype(np.float32)
            filler *= speech_rms * rng.uniform(0.5, 1.0) / max(1e-6, _rms(filler))
            if kind == "pause":
                before_s, after_s = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4)
            else:
                before_s, after_s = rng.uniform(0.0, 0.03), rng.uniform(0.0, 0.03)
            inserted_len = int((before_s + after_s) * SR) + len(filler)
            bed = _loop(noise, inserted_len, rng)
            start = int(before_s * SR)
            bed[start : start + len(filler)] += filler
            truth.append(
                TrueFiller((position + start) / SR, (position + start + len(filler)) / SR, text,
                           _context(before_s, after_s))
            )
            pieces.append(bed)
            position += inserted_len
        pieces.append(speech[cursor:])
        audio = np.concatenate(pieces)
        path = out_dir / f"{index:03d}.wav"
        write_wav(path, audio)
        items.append(Item(str(path), len(audio) / SR, tuple(truth), voice))
    return items


def _frame_db(samples: np.ndarray) -> np.ndarray:
    n = len(samples) // 160
    return 10 * np.log10(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)


def _pauses(loud: np.ndarray, *, min_frames: int) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([1], loud.astype(np.int8), [1])))
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    return [
        (int(a) * 160, int(b) * 160)
        for a, b in zip(starts, ends)
        if b - a >= min_frames and a > 0 and b < len(loud)
    ]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def _loop(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    reps = -(-length // max(1, len(noise))) + 1
    tiled = np.tile(noise, reps)
    offset = int(rng.integers(0, max(1, len(noise))))
    return tiled[offset : offset + length].astype(np.float32).copy()


# --------------------------------------------------------------------------- scoring


def match(
    detections: Sequence[tuple[float, float]], truth: Sequence[TrueFiller]
) -> list[int | None]:
    """Pair detections ``(start_s, end_s)`` with true fillers, each detection used at most once.

    Returns, for each true filler, the index of the first unused detection whose centre lies
    in the filler's span +/- :data:`MATCH_TOLERANCE_S`, or ``None``.
    """
    used: set[int] = set()
    pairs: list[int | None] = []
    for filler in truth:
        pair = None
        for i, (start, end) in enumerate(detections):
            centre = (start + end) / 2
            low, high = filler.start_s - MATCH_TOLERANCE_S, filler.end_s + MATCH_TOLERANCE_S
            if i not in used and low <= centre <= high:
                used.add(i)
                pair = i
                break
        pairs.append(pair)
    return pairs


class _FillerTimer:
    """Wraps :func:`pod_audio.fillers.detect_fillers` to add up its process time."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self._original: Callable[..., Any] = fillers.detect_fillers

    def __enter__(self) -> _FillerTimer:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return self._original(*args, **kwargs)
            finally:
                self.cpu_s += time.process_time() - start

        fillers.detect_fillers = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        fillers.detect_fillers = self._original  # type: ignore[assignment]


def score_set(name: str, items: Sequence[Item]) -> SetScore:
    score = SetScore(name)
    for item in items:
        with _FillerTimer() as timer:
            start = time.process_time()
            transcript: Transcript = asr.transcribe(item.path, workers=1)
            total_cpu = time.process_time() - start
        detected = [w for w in transcript.words if w.is_filler]
        pairs = match([(w.start_s, w.end_s) for w in detected], item.fillers)
        hits = [pair is not None for pair in pairs]
        used = {pair for pair in pairs if pair is not None}
        score.files += 1
        score.audio_s += item.duration_s
        score.true_fillers += len(item.fillers)
        score.detections += len(detected)
        score.true_positives += sum(hits)
        score.asr_cpu_s += total_cpu - timer.cpu_s
        score.filler_cpu_s += timer.cpu_s
        for filler, pair in zip(item.fillers, pairs):
            counts = score.recall_by_context.setdefault(filler.context, [0, 0])
            counts[0] += pair is not None
            counts[1] += 1
            if pair is not None:
                word = detected[pair]
                score.labels_correct += word.text == filler.text
                inside = max(0.0, min(word.end_s, filler.end_s) - max(word.start_s, filler.start_s))
                score.coverage.append(inside / (filler.end_s - filler.start_s))
                score.overshoot_s.append(word.end_s - word.start_s - inside)
        score.false_positive_words += [
            f"{Path(item.path).parent.name}/{Path(item.path).name}@{w.start_s:.2f}:{w.text}"
            for i, w in enumerate(detected)
            if i not in used
        ]
    return score


# --------------------------------------------------------------------------- fitting


def candidate_rows(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors of every filler candidate in ``items`` and whether each is a filler
    (its centre within a true filler's span +/- the match tolerance)."""
    vectors: list[np.ndarray] = []
    labels: list[bool] = []
    for item in items:
        pcm = asr._as_int16(read_16k(item.path))
        table = fillers.candidate_table(pcm, segments=asr.decode_segments(pcm))
        for candidate, vector in zip(table.candidates, table.vectors):
            centre = (candidate.start_s + candidate.end_s) / 2
            vectors.append(vector)
            labels.append(
                any(
                    f.start_s - MATCH_TOLERANCE_S <= centre <= f.end_s + MATCH_TOLERANCE_S
                    for f in item.fillers
                )
            )
    return np.array(vectors).reshape(-1, len(fillers.FEATURE_NAMES)), np.array(labels, dtype=float)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iterations: int = 4000, rate: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """L2-regularised logistic regression on standardised features by gradient descent, each
    weight held to the sign :data:`pod_audio.fillers.FEATURE_SIGNS` allows.

    Returns ``(mean, scale, weights, bias)``.
    """
    signs = np.array([fillers.FEATURE_SIGNS[name] for name in fillers.FEATURE_NAMES])
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    weights = np.zeros(x.shape[1])
    bias = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ weights + bias)))
        error = p - y
        weights -= rate * (z.T @ error / len(y) + l2 * weights / len(y))
        bias -= rate * float(error.mean())
        weights = np.where(signs > 0, np.maximum(weights, 0), weights)
        weights = np.where(signs < 0, np.minimum(weights, 0), weights)
    return mean, scale, weights, bias


def fit(work: Path) -> str:
    """Fit the detector on the tuning sets; returns the constants for ``pod_audio/fillers.py``."""
    jfk = JFK_PATH
    items = synthetic_set(
        work / "tune", seed=TUNE_SEED, n_files=40, sentences=SENTENCES_TUNE, voices=VOICES_TUNE
    ) + jfk_mix_set(work / "jfk_mix_dev", jfk_path=jfk, seed=JFK_MIX_DEV_SEED, n_files=20)
    x, y = candidate_rows(items)
    mean, scale, weights, bias = fit_logistic(x, y)
    print(f"{len(y)} candidates, {int(y.sum())} on fillers")
    for name, weight in zip(fillers.FEATURE_NAMES, weights):
        print(f"  {name:<24} {weight:+.3f}")

    def array(values: np.ndarray) -> str:
        return "np.array([" + ", ".join(f"{v:.4g}" for v in values) + "])"

    return (
        f"_FEATURE_MEAN = {array(mean)}\n"
        f"_FEATURE_SCALE = {array(scale)}\n"
        f"_WEIGHTS = {array(weights)}\n"
        f"_BIAS = {bias:.4g}\n"
    )


# --------------------------------------------------------------------------- main


JFK_PATH = REPO / "samples" / "jfk-inaugural-excerpt.flac"
"""11 s of real, public-domain speech shipped with the project."""


def build_sets(work: Path, *, quick: bool = False) -> dict[str, list[Item]]:
    n = 10 if quick else 40
    jfk = JFK_PATH
    return {
        "synthetic_tune": synthetic_set(
            work / "tune", seed=TUNE_SEED, n_files=n, sentences=SENTENCES_TUNE, voices=VOICES_TUNE
        ),
        "synthetic_heldout": synthetic_set(
            work / "heldout", seed=HELDOUT_SEED, n_files=n, sentences=SENTENCES_HELDOUT,
            voices=VOICES_HELDOUT,
        ),
        "jfk_mix_dev": jfk_mix_set(
            work / "jfk_mix_dev", jfk_path=jfk, seed=JFK_MIX_DEV_SEED, n_files=n // 2
        ),
        "jfk_mix": jfk_mix_set(work / "jfk_mix", jfk_path=jfk, seed=JFK_MIX_SEED, n_files=n // 2),
        "jfk_alone": [Item(str(jfk), len(read_16k(jfk)) / SR, (), "jfk")],
    }


def print_table(scores: Sequence[SetScore]) -> None:
    header = (
        f"{'set':<18} {'files':>5} {'audio s':>8} {'true':>5} {'found':>5} {'TP':>4} {'FP':>4} "
        f"{'P':>6} {'R':>6} {'F1':>6} {'label':>6} {'cover':>6} {'asr cpu/s':>9} "
        f"{'filler cpu/s':>12}"
    )
    print(header)
    print("-" * len(header))
    for s in scores:
        label = f"{s.labels_correct / s.true_positives:.2f}" if s.true_positives else "-"
        cover = f"{np.median(s.coverage):.2f}" if s.coverage else "-"
        print(
            f"{s.name:<18} {s.files:>5} {s.audio_s:>8.1f} {s.true_fillers:>5} {s.detections:>5} "
            f"{s.true_positives:>4} {s.detections - s.true_positives:>4} {s.precision:>6.3f} "
            f"{s.recall:>6.3f} {s.f1:>6.3f} {label:>6} {cover:>6} {s.asr_cpu_s / s.audio_s:>9.3f} "
            f"{s.filler_cpu_s / s.audio_s:>12.3f}"
        )
    print()
    print("label: share of found fillers spelled as said; cover: median share of a found")
    print("filler's true span that its detection covers; cpu/s: CPU seconds per audio second")
    print()
    for s in scores:
        if s.recall_by_context:
            parts = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(s.recall_by_context.items()))
            print(f"recall by context, {s.name}: {parts}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 files per set instead of 40")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    parser.add_argument("--keep", type=Path, help="keep the generated audio in this directory")
    parser.add_argument(
        "--fit",
        action="store_true",
        help="fit the detector on the tuning sets and print its constants",
    )
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng is not installed")
    work = args.keep or Path(tempfile.mkdtemp(prefix="filler-eval-"))
    if args.fit:
        try:
            print(fit(work))
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        sets = build_sets(work, quick=args.quick)
        scores = [score_set(name, items) for name, items in sets.items()]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(scores)
    result = {
        "match_tolerance_s": MATCH_TOLERANCE_S,
        "seeds": {
            "synthetic_tune": TUNE_SEED,
            "synthetic_heldout": HELDOUT_SEED,
            "jfk_mix_dev": JFK_MIX_DEV_SEED,
            "jfk_mix": JFK_MIX_SEED,
        },
        "quick": args.quick,
        "sets": {s.name: s.as_dict() for s in scores},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
