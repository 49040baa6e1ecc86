"""Offline speech recognition with word timings: pocketsphinx, in parallel over long audio.

:func:`transcribe` decodes any file :mod:`pod_audio.io` reads to 16 kHz mono, streaming, into a
temporary 16-bit PCM file, and splits it at pauses into chunks of about ``chunk_target_s``
seconds. Each chunk is decoded on its own (in this process or in a pool of worker processes
that read their sample range from the PCM file), so memory stays bounded by the chunk size,
not the episode length. A chunk's word times are shifted back by exactly its first sample
over 16 000.

Pocketsphinx does not emit hesitations ("um", "uh") as words, so each chunk also runs the
acoustic filler detector of :mod:`pod_audio.fillers`; see ``docs/fillers.md``.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import multiprocessing
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pod_audio import fillers
from pod_audio.errors import TranscriptionError
from pod_audio.io import iter_blocks
from pod_audio.transcript import FILLER_WORDS, Transcript, Word

__all__ = [
    "ENGINE",
    "SAMPLE_RATE",
    "PocketsphinxTranscriber",
    "Transcriber",
    "decode_segments",
    "plan_chunks",
    "transcribe",
    "transcribe_samples",
]

ENGINE = "pocketsphinx"
SAMPLE_RATE = 16000
"""Pocketsphinx's en-US acoustic model is trained on 16 kHz audio."""
FRAME_SAMPLES = 160
"""Pocketsphinx's frame shift (10 ms at 16 kHz); word times are multiples of it."""
_FRAMES_PER_S = SAMPLE_RATE // FRAME_SAMPLES

_NON_WORDS = frozenset({"<s>", "</s>", "<sil>", "[NOISE]"})
_SPEECH_NOISE = "[SPEECH]"

_MIN_DECODE_S = 0.1
"""Audio shorter than this holds no word: it is not decoded."""
_SILENCE_DBFS = -55.0
"""A chunk whose loudest 10 ms frame stays below this RMS level holds no speech."""
_SPLIT_SMOOTH_S = 0.2
"""A split point must be quiet over this whole window around it."""
_SPLIT_QUIET_MIN_DB = 6.0
_SPLIT_QUIET_MAX_DB = 15.0
"""Quiet means below the noise floor plus 30 % of the floor-to-speech range, within these limits."""
_PCM_BLOCK_FRAMES = 65536


# --------------------------------------------------------------------------- public API


@runtime_checkable
class Transcriber(Protocol):
    """Something that turns an audio file into a :class:`Transcript` with word timings."""

    name: str

    def transcribe(self, path: str | os.PathLike[str], **kwargs: Any) -> Transcript: ...


@dataclass(frozen=True)
class PocketsphinxTranscriber:
    """:class:`Transcriber` backed by :func:`transcribe`; its fields are the defaults of each call.

    Attributes:
        workers: worker processes; 0 uses every core available to this process, 1 decodes
            in this process.
        chunk_target_s: length in seconds the audio is split into (at pauses).
        detect_fillers: run the acoustic filler detector.
    """

    workers: int = 0
    chunk_target_s: float = 30.0
    detect_fillers: bool = True
    name: str = ENGINE

    def transcribe(self, path: str | os.PathLike[str], **kwargs: Any) -> Transcript:
        options: dict[str, Any] = {
            "workers": self.workers,
            "chunk_target_s": self.chunk_target_s,
            "detect_fillers": self.detect_fillers,
        }
        options.update(kwargs)
        return transcribe(path, **options)


def engine_version() -> str:
    """Version of the installed pocketsphinx package."""
    try:
        return importlib.metadata.version("pocketsphinx")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored builds
        return "unknown"


def transcribe(
    path: str | os.PathLike[str],
    *,
    workers: int = 0,
    chunk_target_s: float = 30.0,
    detect_fillers: bool = True,
) -> Transcript:
    """Transcribe ``path`` with word timings and filler flags.

    Args:
        path: any audio file :func:`pod_audio.io.iter_blocks` decodes.
        workers: worker processes decoding chunks in parallel; 0 uses all cores available to
            this process, 1 decodes in this process.
        chunk_target_s: the audio is split at pauses near every ``chunk_target_s`` seconds;
            chunks are decoded independently.
        detect_fillers: run the acoustic filler detector on each chunk (hesitations become
            words "um", "uh", "er", "ah", "hmm" with ``is_filler=True``). Without it only words
            the recogniser itself spells as fillers are flagged.

    Returns:
        A :class:`Transcript` whose words are sorted, do not overlap, and lie inside
        ``[0, duration_s]``; ``duration_s`` is the decoded length of the audio.

    Raises:
        AudioInputError: the file cannot be decoded (see :mod:`pod_audio.io`).
        TranscriptionError: the recogniser failed.
        ValueError: ``workers`` is negative or ``chunk_target_s`` is not positive.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if not chunk_target_s > 0:
        raise ValueError(f"chunk_target_s must be positive, got {chunk_target_s}")
    with tempfile.TemporaryDirectory(prefix="pod-asr-") as scratch:
        pcm_path = Path(scratch) / "audio16k.s16"
        total_samples, frame_db = _write_pcm(path, pcm_path)
        chunks = plan_chunks(frame_db, chunk_target_s=chunk_target_s)
        jobs = [
            _ChunkJob(
                pcm_path=str(pcm_path),
                start_sample=start * FRAME_SAMPLES,
                end_sample=min(end * FRAME_SAMPLES, total_samples),
                detect_fillers=detect_fillers,
            )
            for start, end in chunks
        ]
        jobs = [job for job in jobs if _holds_sound(frame_db, job)]
        results = _run_jobs(jobs, workers=_worker_count(workers, len(jobs)))
    duration_s = total_samples / SAMPLE_RATE
    words = _finalise(
        (word for chunk_words in results for word in chunk_words), duration_s=duration_s
    )
    return Transcript(
        words=tuple(words), duration_s=duration_s, engine=ENGINE, engine_version=engine_version()
    )


def transcribe_samples(samples: np.ndarray, *, detect_fillers: bool = True) -> Transcript:
    """Transcribe 16 kHz mono samples held in memory, as one chunk, in this process.

    Args:
        samples: 1-D ``int16`` PCM, or floats in ``[-1, 1]``, at 16 kHz.
        detect_fillers: as for :func:`transcribe`.
    """
    pcm = _as_int16(samples)
    duration_s = len(pcm) / SAMPLE_RATE
    words = _transcribe_pcm(pcm, detect_fillers=detect_fillers) if _pcm_holds_sound(pcm) else []
    return Transcript(
        words=tuple(_finalise(words, duration_s=duration_s)),
        duration_s=duration_s,
        engine=ENGINE,
        engine_version=engine_version(),
    )


def decode_segments(pcm: np.ndarray) -> list[Word]:
    """Decode 16 kHz mono ``int16`` samples with the language model, as one utterance.

    Returns every segment of the best path except sentence marks and silences: dictionary
    words (pronunciation variants ``"(2)"`` stripped), ``"[SPEECH]"`` and ``"[NOISE]"``, with
    times in seconds from the first sample and ``confidence`` the segment's posterior
    probability.
    """
    if len(pcm) < _MIN_DECODE_S * SAMPLE_RATE:
        return []
    decoder = _decoder()
    try:
        decoder.start_utt()
        decoder.process_raw(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return []
        segments = list(decoder.seg())
    except RuntimeError as exc:
        raise TranscriptionError(f"pocketsphinx failed: {exc}") from exc
    out: list[Word] = []
    for seg in segments:
        text = _strip_variant(seg.word)
        if text in ("<s>", "</s>", "<sil>"):
            continue
        start_s = seg.start_frame / _FRAMES_PER_S
        end_s = (seg.end_frame + 1) / _FRAMES_PER_S
        out.append(Word(text, start_s, end_s, confidence=_clip01(seg.prob)))
    return out


# --------------------------------------------------------------------------- chunk planning


def plan_chunks(
    frame_db: np.ndarray, *, chunk_target_s: float = 30.0
) -> list[tuple[int, int]]:
    """Split a recording into chunks at pauses.

    Args:
        frame_db: RMS level in dBFS of each 10 ms frame (shape ``(frames,)``).
        chunk_target_s: wanted chunk length in seconds.

    Returns:
        ``(start_frame, end_frame)`` pairs covering ``[0, frames)`` without gaps. Each split
        lies in a pause (a stretch quiet for at least 0.2 s) between half and one and a half
        targets after the previous split, preferring long pauses near the target. Audio with
        no pause at all in that span (music, a breathless talker) is split at its quietest
        0.2 s. No chunk is longer than one and a half targets: the decoder's memory grows
        with the length of the chunk it decodes.
    """
    n_frames = len(frame_db)
    target = max(1, round(chunk_target_s * _FRAMES_PER_S))
    if n_frames <= 1.5 * target:
        return [(0, n_frames)] if n_frames else []
    smooth = _max_filter(frame_db, max(1, round(_SPLIT_SMOOTH_S * _FRAMES_PER_S)))
    quiet = smooth < _quiet_threshold_db(frame_db)
    chunks: list[tuple[int, int]] = []
    start = 0
    while n_frames - start > 1.5 * target:
        split = _find_split(smooth, quiet, start=start, target=target, n_frames=n_frames)
        chunks.append((start, split))
        start = split
    chunks.append((start, n_frames))
    return chunks


def _quiet_threshold_db(frame_db: np.ndarray) -> float:
    floor_db = float(np.percentile(frame_db, 10))
    speech_db = float(np.percentile(frame_db, 95))
    margin_db = min(_SPLIT_QUIET_MAX_DB, max(_SPLIT_QUIET_MIN_DB, 0.3 * (speech_db - floor_db)))
    return floor_db + margin_db


def _find_split(
    smooth: np.ndarray, quiet: np.ndarray, *, start: int, target: int, n_frames: int
) -> int:
    ideal = start + target
    lo = start + target // 2
    # Never leave a tail shorter than half a target.
    hi = max(lo + 1, min(start + int(1.5 * target), n_frames - target // 2))
    best: tuple[float, int] | None = None
    for run_start, run_end in _runs(quiet[lo:hi]):
        centre = lo + (run_start + run_end) // 2
        # Prefer long pauses, then closeness to the target.
        length_score = min(run_end - run_start, _FRAMES_PER_S) / _FRAMES_PER_S
        score = length_score - 0.5 * abs(centre - ideal) / target
        if best is None or score > best[0]:
            best = (score, centre)
    if best is not None:
        return best[1]
    return lo + int(np.argmin(smooth[lo:hi]))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` index pairs of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _max_filter(values: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import maximum_filter1d

    return maximum_filter1d(values, size=width, mode="nearest")


# --------------------------------------------------------------------------- decoding to PCM


def _write_pcm(path: str | os.PathLike[str], pcm_path: Path) -> tuple[int, np.ndarray]:
    """Decode ``path`` to 16 kHz mono ``int16`` in ``pcm_path``, streaming.

    Returns the number of samples written and the RMS level (dBFS) of each 10 ms frame.
    """
    levels: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    with open(pcm_path, "wb") as out:
        for block in iter_blocks(
            path, sample_rate=SAMPLE_RATE, channels=1, block_frames=_PCM_BLOCK_FRAMES
        ):
            mono = block[:, 0]
            out.write(_as_int16(mono).tobytes())
            total += len(mono)
            carry = np.concatenate((carry, mono)) if len(carry) else mono
            whole = len(carry) // FRAME_SAMPLES * FRAME_SAMPLES
            if whole:
                levels.append(_frame_db(carry[:whole]))
            carry = carry[whole:].copy()
    if len(carry):
        levels.append(_frame_db(np.pad(carry, (0, FRAME_SAMPLES - len(carry)))))
    frame_db = np.concatenate(levels) if levels else np.zeros(0, dtype=np.float32)
    return total, frame_db


def _frame_db(samples: np.ndarray) -> np.ndarray:
    frames = samples.reshape(-1, FRAME_SAMPLES).astype(np.float32)
    power = np.mean(frames * frames, axis=1)
    return (10.0 * np.log10(power + 1e-12)).astype(np.float32)


def _as_int16(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.reshape(-1)
    scaled = np.clip(samples.reshape(-1).astype(np.float32), -1.0, 1.0) * 32767.0
    return np.round(scaled).astype(np.int16)


def _pcm_holds_sound(pcm: np.ndarray) -> bool:
    usable = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
    if usable < _MIN_DECODE_S * SAMPLE_RATE:
        return False
    return float(_frame_db(pcm[:usable].astype(np.float32) / 32768.0).max()) >= _SILENCE_DBFS


# --------------------------------------------------------------------------- chunk jobs


@dataclass(frozen=True)
class _ChunkJob:
    pcm_path: str
    start_sample: int
    end_sample: int
    detect_fillers: bool


def _holds_sound(frame_db: np.ndarray, job: _ChunkJob) -> bool:
    if job.end_sample - job.start_sample < _MIN_DECODE_S * SAMPLE_RATE:
        return False
    window = frame_db[job.start_sample // FRAME_SAMPLES : -(-job.end_sample // FRAME_SAMPLES)]
    return bool(len(window)) and float(window.max()) >= _SILENCE_DBFS


def _worker_count(workers: int, n_jobs: int) -> int:
    if workers == 0:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            workers = os.cpu_count() or 1
    return max(1, min(workers, n_jobs))


def _run_jobs(jobs: Sequence[_ChunkJob], *, workers: int) -> list[list[Word]]:
    """Words of each job, in the jobs' order."""
    if workers <= 1 or len(jobs) <= 1:
        return [_run_chunk(job) for job in jobs]
    # "spawn": the parent may run threads (a Dagster step does), which fork does not survive.
    context = multiprocessing.get_context("spawn")
    # Longest first, so that no worker is left with a long chunk while the others idle.
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].start_sample - jobs[i].end_sample)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {i: pool.submit(_run_chunk, jobs[i]) for i in order}
            return [futures[i].result() for i in range(len(jobs))]
    except BrokenProcessPool as exc:
        raise TranscriptionError(f"a transcription worker died: {exc}") from exc


def _run_chunk(job: _ChunkJob) -> list[Word]:
    """Decode one chunk; times in the returned words are from the start of the file."""
    count = job.end_sample - job.start_sample
    pcm = np.fromfile(job.pcm_path, dtype=np.int16, count=count, offset=2 * job.start_sample)
    offset_s = job.start_sample / SAMPLE_RATE
    try:
        words = _transcribe_pcm(pcm, detect_fillers=job.detect_fillers)
    finally:
        _release_memory()
    return [w.shifted(offset_s) for w in words]


def _release_memory() -> None:
    """Hand the freed decoder memory back to the system (glibc keeps it otherwise, and the
    next chunk's decoder then peaks on top of it)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _transcribe_pcm(pcm: np.ndarray, *, detect_fillers: bool) -> list[Word]:
    """Words of one chunk (times from its first sample), fillers included."""
    segments = decode_segments(pcm)
    words = [_as_word(seg) for seg in segments if seg.text not in _NON_WORDS]
    if detect_fillers:
        found = fillers.detect_fillers(pcm, segments=segments, sample_rate=SAMPLE_RATE)
        words = fillers.apply_fillers(words, found)
    return [w for w in words if w.text != _SPEECH_NOISE]


def _as_word(seg: Word) -> Word:
    text = seg.text.lower() if seg.text != _SPEECH_NOISE else seg.text
    canonical = fillers.canonical_filler(text)
    if canonical is not None:
        return Word(canonical, seg.start_s, seg.end_s, seg.confidence, is_filler=True)
    return Word(text, seg.start_s, seg.end_s, seg.confidence, is_filler=text in FILLER_WORDS)


def _finalise(words: Iterable[Word], *, duration_s: float) -> list[Word]:
    """Sort, clip to ``[0, duration_s]`` and remove overlaps (a later word starts no earlier
    than the previous one ends)."""
    out: list[Word] = []
    for word in sorted(words, key=lambda w: (w.start_s, w.end_s)):
        start = min(max(word.start_s, 0.0), duration_s)
        end = min(max(word.end_s, start), duration_s)
        if out and start < out[-1].end_s:
            start = min(out[-1].end_s, end)
        if end <= start:
            continue
        out.append(Word(word.text, round(start, 3), round(end, 3), word.confidence, word.is_filler))
    return out


# --------------------------------------------------------------------------- pocketsphinx


def _decoder() -> Any:
    """A fresh language-model decoder.

    One per utterance: pocketsphinx's phone-loop lookahead keeps state from the previous
    utterance, so a reused decoder gives a chunk different words depending on which chunk the
    process decoded before it. Loading takes about 0.2 s, under 1 % of a 30 s chunk's decode.
    """
    return _new_decoder()


def _new_decoder(**options: Any) -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise TranscriptionError("pocketsphinx is not installed") from exc
    try:
        return Decoder(loglevel="ERROR", **options)
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(f"pocketsphinx cannot start: {exc}") from exc


def _strip_variant(text: str) -> str:
    """``"for(2)"`` -> ``"for"``: pocketsphinx marks alternative pronunciations."""
    if text.endswith(")") and "(" in text:
        return text[: text.rindex("(")]
    return text


def _clip01(value: float) -> float:
    if not np.isfinite(value):
        return 0.0
    return float(min(1.0, max(0.0, value)))

