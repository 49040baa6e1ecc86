"""Offline speech recognition with word-accurate timings and filler flags.

:func:`transcribe` turns any audio file :mod:`pod_audio.io` reads into a :class:`Transcript`:

1. **Streaming to 16 kHz.** The file is decoded block by block into a temporary 16-bit mono
   PCM file; one RMS level per 10 ms stays in memory. Memory is bounded by the chunk size,
   not the episode length.
2. **Chunks at pauses** (:func:`plan_chunks`): about ``chunk_target_s`` each, never longer
   than one and a half targets.
3. **Recognition** of each chunk by a :class:`Recogniser`: by default Whisper through
   faster-whisper (:mod:`pod_audio.whisper`), which writes the words right but puts them
   on rough times and leaves hesitations out.
4. **Alignment** (:mod:`pod_audio.align`): the recognised words are force-aligned to the
   chunk, so each word lies on its own phones and pauses and fillers fall between words.
5. **Fillers** (:func:`pod_audio.fillers.fillers_between_words`): hesitations ("um", "uh",
   "er", "ah", "hmm") are looked for only in the stretches between aligned words, so a
   filler never takes a recognised word.

Chunks are independent; a finished chunk can be kept in a :class:`ChunkCache` so that an
interrupted transcription resumes at the first unfinished chunk. Alignment and filler
detection of one chunk run on a helper thread while the recogniser works on the next.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pod_audio import fillers
from pod_audio.align import align_words, aligner_version, dictionary_tokens, is_displaced
from pod_audio.errors import TranscriptionError
from pod_audio.io import iter_blocks
from pod_audio.transcript import Transcript, Word

__all__ = [
    "ALGORITHM_VERSION",
    "SAMPLE_RATE",
    "ChunkCache",
    "PocketsphinxRecogniser",
    "Recogniser",
    "decode_segments",
    "plan_chunks",
    "transcribe",
    "transcribe_samples",
]

ALGORITHM_VERSION = 2
"""Bumped whenever chunking, alignment or filler detection change what a chunk yields:
cached chunks of another version are not reused."""
SAMPLE_RATE = 16000
FRAME_SAMPLES = 160
"""10 ms at 16 kHz: the frame of the level analysis, of chunk splits and of alignment."""
_FRAMES_PER_S = SAMPLE_RATE // FRAME_SAMPLES

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
DEFAULT_CHUNK_S = 20.0
"""Whisper reads 30 s windows: a chunk (at most one and a half targets) fills one."""


# --------------------------------------------------------------------------- public API


@runtime_checkable
class Recogniser(Protocol):
    """Recognises words in one chunk of 16 kHz mono audio.

    ``needs_alignment``: its word times are rough and must be force-aligned.
    ``finds_fillers``: it flags fillers itself (no filler search after it).
    """

    name: str
    needs_alignment: bool
    finds_fillers: bool

    def version(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def recognise(self, samples: np.ndarray) -> list[Word]: ...


class ChunkCache(Protocol):
    """Somewhere finished chunks are kept between attempts (see :func:`transcribe`)."""

    def get(self, key: str) -> list[Word] | None: ...

    def put(self, key: str, words: list[Word]) -> None: ...


Progress = Callable[[float, float], None]
"""Called with (seconds of audio done, total seconds) after every chunk."""


def transcribe(
    path: str | os.PathLike[str],
    *,
    recogniser: Recogniser | None = None,
    chunk_target_s: float = DEFAULT_CHUNK_S,
    detect_fillers: bool = True,
    cache: ChunkCache | None = None,
    progress: Progress | None = None,
) -> Transcript:
    """Transcribe ``path`` with word timings and filler flags.

    Args:
        path: any audio file :func:`pod_audio.io.iter_blocks` decodes.
        recogniser: defaults to Whisper ``tiny.en`` on the CPU (:mod:`pod_audio.whisper`).
        chunk_target_s: the audio is split at pauses near every ``chunk_target_s`` seconds.
        detect_fillers: look for hesitations between the words ("um", "uh", "er", "ah",
            "hmm" with ``is_filler=True``). Without it only words the recogniser itself
            spells as fillers are flagged.
        cache: where finished chunks are kept; a chunk found there (same recogniser, same
            settings, same samples) is not recognised again.
        progress: called after every chunk.

    Returns:
        A :class:`Transcript` whose words are sorted, do not overlap, and lie inside
        ``[0, duration_s]``; ``duration_s`` is the decoded length of the audio. Its
        ``extra`` names the model, its checksum and the aligner.

    Raises:
        AudioInputError: the file cannot be decoded (see :mod:`pod_audio.io`).
        TranscriptionError: the recogniser failed or its model is missing or damaged.
        ValueError: ``chunk_target_s`` is not positive.
    """
    if not chunk_target_s > 0:
        raise ValueError(f"chunk_target_s must be positive, got {chunk_target_s}")
    if recogniser is None:
        recogniser = default_recogniser()
    fingerprint = _fingerprint(recogniser, detect_fillers=detect_fillers)
    with tempfile.TemporaryDirectory(prefix="pod-asr-") as scratch:
        pcm_path = Path(scratch) / "audio16k.s16"
        total_samples, frame_db = _write_pcm(path, pcm_path)
        chunks = [
            (start * FRAME_SAMPLES, min(end * FRAME_SAMPLES, total_samples))
            for start, end in plan_chunks(frame_db, chunk_target_s=chunk_target_s)
        ]
        chunks = [c for c in chunks if _holds_sound(frame_db, *c)]
        results = _run_chunks(
            pcm_path, chunks, recogniser, detect_fillers=detect_fillers, cache=cache,
            fingerprint=fingerprint, progress=progress, total_s=total_samples / SAMPLE_RATE,
        )
    duration_s = total_samples / SAMPLE_RATE
    words = _finalise((w for chunk_words in results for w in chunk_words), duration_s=duration_s)
    return Transcript(
        words=tuple(words),
        duration_s=duration_s,
        engine=recogniser.name,
        engine_version=recogniser.version(),
        extra=_extra(recogniser, detect_fillers=detect_fillers, chunks=len(chunks)),
    )


def transcribe_samples(
    samples: np.ndarray, *, recogniser: Recogniser | None = None, detect_fillers: bool = True
) -> Transcript:
    """Transcribe 16 kHz mono samples held in memory (``int16``, or floats in ``[-1, 1]``)
    as one chunk."""
    pcm = _as_int16(samples)
    if recogniser is None:
        recogniser = default_recogniser()
    duration_s = len(pcm) / SAMPLE_RATE
    words = (
        chunk_words(pcm, recogniser, detect_fillers=detect_fillers)
        if _pcm_holds_sound(pcm)
        else []
    )
    return Transcript(
        words=tuple(_finalise(words, duration_s=duration_s)),
        duration_s=duration_s,
        engine=recogniser.name,
        engine_version=recogniser.version(),
        extra=_extra(recogniser, detect_fillers=detect_fillers, chunks=1),
    )


def default_recogniser() -> Recogniser:
    """Whisper ``tiny.en`` on the CPU, with the weights shipped as a Python package."""
    from pod_audio.whisper import WhisperEngine

    return WhisperEngine()


def chunk_words(pcm: np.ndarray, recogniser: Recogniser, *, detect_fillers: bool) -> list[Word]:
    """Words of one chunk of 16 kHz ``int16`` samples, times from its first sample."""
    words = recogniser.recognise(pcm.astype(np.float32) / 32768.0)
    return finish_chunk(pcm, words, recogniser, detect_fillers=detect_fillers)


def finish_chunk(
    pcm: np.ndarray, words: list[Word], recogniser: Recogniser, *, detect_fillers: bool
) -> list[Word]:
    """Align a chunk's recognised words and add the fillers found between them."""
    if recogniser.finds_fillers:
        return words
    aligned = [True] * len(words)
    heard = list(words)
    if recogniser.needs_alignment and words:
        result = align_words(pcm, words)
        words, aligned = list(result.words), list(result.aligned)
    words = [fillers.flag_spelled_filler(w) for w in words]
    if detect_fillers:
        found = fillers.fillers_between_words(pcm, words, aligned=aligned)
        found = [f for f in found if _neighbours_look_right(f, words, heard)]
        found = [f for f in found if _fits_local_alignment(pcm, f, words)]
        missed = _missed_words(pcm, found, words, recogniser)
        found = [f for f, word_there in zip(found, missed) if not word_there]
        words = fillers.merge_fillers(words, found)
    return words


_LOCAL_WORDS = 3
"""Words on each side of a filler candidate that are aligned again around it."""
_MIN_WORD_S = 0.06
_MIN_PHONE_S = 0.03
"""An aligned word shorter than 60 ms, or than 30 ms per letter (up to six), was squeezed."""
_NEIGHBOURS = 2


def _neighbours_look_right(filler: Word, words: Sequence[Word], heard: Sequence[Word]) -> bool:
    """Whether the words next to a filler candidate sit where they plausibly should.

    A candidate next to a squeezed word (aligned to less than 60 ms, or 30 ms per
    letter: "the" on 30 ms) or next to a word aligned more than 0.6 s away from
    where the recogniser heard it lies where the alignment went wrong: the sound in the
    "gap" is most likely that word's. ``heard`` is the recogniser's own words and times, in
    the same order as ``words``.
    """
    index = next((i for i, w in enumerate(words) if w.start_s >= filler.end_s - 1e-6), len(words))
    for i in range(max(0, index - _NEIGHBOURS), min(len(words), index + _NEIGHBOURS)):
        word, rough = words[i], heard[i]
        if word.is_filler:
            continue
        letters = sum(ch.isalpha() for ch in word.text)
        if word.duration_s < max(_MIN_WORD_S, _MIN_PHONE_S * min(letters, 6)):
            return False
        if is_displaced(word, rough):
            return False
    return True


def _fits_local_alignment(pcm: np.ndarray, filler: Word, words: Sequence[Word]) -> bool:
    """Whether ``filler`` still lies between the words when only the few words around it
    are force-aligned again, on their own stretch of audio.

    Aligning a whole chunk can drift where the recogniser left something out (a filler
    it did not write, a word it dropped): a word is then squeezed and the rest of its
    sound left in a "gap". Re-aligned locally, the words settle on their own sound; a
    candidate that now overlaps one of them by more than 40 % of its length was that word.
    """
    lexical = [w for w in words if not w.is_filler]
    before = [w for w in lexical if w.end_s <= filler.start_s + 1e-6][-_LOCAL_WORDS:]
    after = [w for w in lexical if w.start_s >= filler.end_s - 1e-6][:_LOCAL_WORDS]
    lo_s = before[0].start_s - 0.3 if before else 0.0
    hi_s = after[-1].end_s + 0.3 if after else len(pcm) / SAMPLE_RATE
    lo_s, hi_s = max(0.0, lo_s), min(len(pcm) / SAMPLE_RATE, hi_s)
    lo = int(lo_s * SAMPLE_RATE)
    local = align_words(
        pcm[lo : int(hi_s * SAMPLE_RATE)], [w.shifted(-lo_s) for w in [*before, *after]]
    )
    if not local.fully_aligned:
        return False
    start, end = filler.start_s - lo_s, filler.end_s - lo_s
    covered = sum(max(0.0, min(end, w.end_s) - max(start, w.start_s)) for w in local.words)
    return covered <= 0.4 * (end - start)


_RECHECK_CONTEXT_S = 1.5
"""Audio on each side of a filler candidate that is recognised again with it."""


_RECHECK_GAP_S = 1.5
"""Near-silence between two candidates' stretches when they are recognised together."""
_RECHECK_WINDOW_S = 29.0


def _missed_words(
    pcm: np.ndarray, found: Sequence[Word], words: Sequence[Word], recogniser: Recogniser
) -> list[bool]:
    """For each filler candidate, whether the recogniser, asked again about the stretch
    around it, hears a word in its place that the chunk's transcript lacks.

    A recogniser sometimes drops a word (a drawn-out "too" at the end of a sentence, say);
    the gap it leaves then holds a steady vowel that looks like a filler. Each candidate is
    recognised again with 1.5 s of context on each side; a lexical word heard between the
    transcript's words before and after it means the candidate is that word: it is kept.
    The stretches of one chunk are recognised together, laid end to end with 1.5 s of
    near silence between them, one recogniser window (30 s) at a time.
    """
    duration_s = len(pcm) / SAMPLE_RATE
    spans = [
        (max(0.0, f.start_s - _RECHECK_CONTEXT_S), min(duration_s, f.end_s + _RECHECK_CONTEXT_S))
        for f in found
    ]
    heard: list[list[str]] = [[] for _ in found]
    gap = np.random.default_rng(0).normal(0, 3.0, int(_RECHECK_GAP_S * SAMPLE_RATE))
    batch: list[int] = []

    def recognise(batch: list[int]) -> None:
        pieces, offsets, position = [], [], 0
        for i in batch:
            lo, hi = (int(t * SAMPLE_RATE) for t in spans[i])
            offsets.append((position / SAMPLE_RATE, (position + hi - lo) / SAMPLE_RATE))
            pieces += [pcm[lo:hi].astype(np.float32), gap.astype(np.float32)]
            position += hi - lo + len(gap)
        for w in recogniser.recognise(np.concatenate(pieces) / 32768.0):
            centre = (w.start_s + w.end_s) / 2
            for i, (lo_s, hi_s) in zip(batch, offsets):
                if lo_s - 0.5 <= centre <= hi_s + 0.5:
                    if fillers.canonical_filler(w.text.strip(".,!?;:")) is None:
                        heard[i] += dictionary_tokens(w.text)
                    break

    length_s = 0.0
    for i, (lo_s, hi_s) in enumerate(spans):
        if batch and length_s + hi_s - lo_s > _RECHECK_WINDOW_S:
            recognise(batch)
            batch, length_s = [], 0.0
        batch.append(i)
        length_s += hi_s - lo_s + _RECHECK_GAP_S
    if batch:
        recognise(batch)
    return [
        _word_between(filler, words, heard[i], span) for i, (filler, span) in enumerate(zip(found, spans))
    ]


def _word_between(
    filler: Word, words: Sequence[Word], heard: list[str], span: tuple[float, float]
) -> bool:
    lo_s, hi_s = span
    lexical = [w for w in words if not w.is_filler and w.end_s > lo_s and w.start_s < hi_s]
    before = [t for w in lexical if w.end_s <= filler.start_s for t in dictionary_tokens(w.text)]
    after = [t for w in lexical if w.start_s >= filler.end_s for t in dictionary_tokens(w.text)]
    # Heard tokens that fall between "before" and "after": inserted right at the boundary,
    # or more tokens than were replaced in an edit that touches it. (Edits away from the
    # boundary come from words cut at the stretch's edges.)
    boundary = len(before)
    matcher = difflib.SequenceMatcher(a=[*before, *after], b=heard, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "insert" and a0 == boundary:
            return True
        if tag == "replace" and a0 <= boundary <= a1 and (b1 - b0) > (a1 - a0):
            return True
    return False


# --------------------------------------------------------------------------- chunks


def _run_chunks(
    pcm_path: Path,
    chunks: list[tuple[int, int]],
    recogniser: Recogniser,
    *,
    detect_fillers: bool,
    cache: ChunkCache | None,
    fingerprint: str,
    progress: Progress | None,
    total_s: float,
) -> list[list[Word]]:
    """Words of each chunk (times from the start of the file), in the chunks' order.

    The recogniser works through the chunks in this thread; each chunk's alignment and
    filler search runs on one helper thread meanwhile (both release the GIL in their
    native code), so at most two chunks are held in memory.
    """
    results: list[list[Word]] = [[] for _ in chunks]
    pending: tuple[int, Future[list[Word]]] | None = None

    def collect() -> None:
        index, future = pending  # type: ignore[misc]
        start, end = chunks[index]
        words = [w.shifted(start / SAMPLE_RATE) for w in future.result()]
        results[index] = words
        if cache is not None:
            cache.put(_chunk_key(fingerprint, start, end), words)
        if progress is not None:
            progress(end / SAMPLE_RATE, total_s)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pod-align") as helper:
        for index, (start, end) in enumerate(chunks):
            cached = cache.get(_chunk_key(fingerprint, start, end)) if cache else None
            if cached is not None:
                results[index] = cached
                if progress is not None:
                    progress(end / SAMPLE_RATE, total_s)
                continue
            pcm = np.fromfile(pcm_path, dtype=np.int16, count=end - start, offset=2 * start)
            words = recogniser.recognise(pcm.astype(np.float32) / 32768.0)
            if pending is not None:
                collect()
            pending = (
                index,
                helper.submit(finish_chunk, pcm, words, recogniser, detect_fillers=detect_fillers),
            )
        if pending is not None:
            collect()
    return results


def _chunk_key(fingerprint: str, start_sample: int, end_sample: int) -> str:
    return f"{fingerprint}-{start_sample}-{end_sample}"


def _fingerprint(recogniser: Recogniser, *, detect_fillers: bool) -> str:
    """What a chunk's words depend on besides its samples."""
    described = {
        "engine": recogniser.name,
        "version": recogniser.version(),
        "algorithm": ALGORITHM_VERSION,
        "detect_fillers": detect_fillers,
        **recogniser.describe(),
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _extra(recogniser: Recogniser, *, detect_fillers: bool, chunks: int) -> dict[str, Any]:
    return {
        **recogniser.describe(),
        "aligner": aligner_version() if recogniser.needs_alignment else None,
        "detect_fillers": detect_fillers,
        "chunks": chunks,
        "algorithm": ALGORITHM_VERSION,
    }


def words_to_json(words: Iterable[Word]) -> bytes:
    """A chunk's words as stored in a :class:`ChunkCache`."""
    return json.dumps([asdict(w) for w in words]).encode()


def words_from_json(data: bytes) -> list[Word]:
    return [Word(**w) for w in json.loads(data)]


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




def _holds_sound(frame_db: np.ndarray, start_sample: int, end_sample: int) -> bool:
    if end_sample - start_sample < _MIN_DECODE_S * SAMPLE_RATE:
        return False
    window = frame_db[start_sample // FRAME_SAMPLES : -(-end_sample // FRAME_SAMPLES)]
    return bool(len(window)) and float(window.max()) >= _SILENCE_DBFS


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


@dataclass(frozen=True)
class PocketsphinxRecogniser:
    """CMU pocketsphinx with its en-US language model, and the acoustic filler detector of
    :mod:`pod_audio.fillers` run over the whole chunk.

    Kept as the baseline the benchmarks compare against: it needs no model download and
    places words on its own 10 ms frames, but gets most conversational words wrong.
    """

    name: str = "pocketsphinx"
    needs_alignment: bool = False
    finds_fillers: bool = True
    detect_fillers: bool = True

    def version(self) -> str:
        try:
            return importlib.metadata.version("pocketsphinx")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            return "unknown"

    def describe(self) -> dict[str, Any]:
        return {"model": "en-us (pocketsphinx)", "model_sha256": None}

    def recognise(self, samples: np.ndarray) -> list[Word]:
        pcm = _as_int16(samples)
        segments = decode_segments(pcm)
        words = [_as_word(seg) for seg in segments if seg.text not in _NON_WORDS]
        if self.detect_fillers:
            found = fillers.detect_fillers(pcm, segments=segments, sample_rate=SAMPLE_RATE)
            words = fillers.apply_fillers(words, found)
        return [w for w in words if w.text != _SPEECH_NOISE]


_NON_WORDS = frozenset({"<s>", "</s>", "<sil>", "[NOISE]"})
_SPEECH_NOISE = "[SPEECH]"


def decode_segments(pcm: np.ndarray) -> list[Word]:
    """Decode 16 kHz mono ``int16`` samples with pocketsphinx's language model, as one
    utterance.

    Returns every segment of the best path except sentence marks and silences: dictionary
    words (pronunciation variants ``"(2)"`` stripped), ``"[SPEECH]"`` and ``"[NOISE]"``, with
    times in seconds from the first sample and ``confidence`` the segment's posterior
    probability.
    """
    if len(pcm) < _MIN_DECODE_S * SAMPLE_RATE:
        return []
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise TranscriptionError("pocketsphinx is not installed") from exc
    try:
        # A fresh decoder per utterance: a reused one keeps phone-loop state from the last.
        decoder = Decoder(loglevel="ERROR")
        decoder.start_utt()
        decoder.process_raw(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return []
        segments = list(decoder.seg())
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(f"pocketsphinx failed: {exc}") from exc
    out: list[Word] = []
    for seg in segments:
        text = seg.word[: seg.word.rindex("(")] if seg.word.endswith(")") else seg.word
        if text in ("<s>", "</s>", "<sil>"):
            continue
        prob = float(seg.prob) if np.isfinite(seg.prob) else 0.0
        out.append(
            Word(text, seg.start_frame / _FRAMES_PER_S, (seg.end_frame + 1) / _FRAMES_PER_S,
                 confidence=min(1.0, max(0.0, prob)))
        )
    return out


def _as_word(seg: Word) -> Word:
    if seg.text == _SPEECH_NOISE:
        return seg
    text = seg.text.lower()
    canonical = fillers.canonical_filler(text)
    if canonical is not None:
        return Word(canonical, seg.start_s, seg.end_s, seg.confidence, is_filler=True)
    return Word(text, seg.start_s, seg.end_s, seg.confidence)
