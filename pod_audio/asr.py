"""Offline speech recognition with word-accurate timings and filler flags.

:func:`transcribe` turns any audio file :mod:`pod_audio.io` reads into a :class:`Transcript`:

1. **Streaming to 16 kHz.** The file is decoded block by block into a temporary 16-bit mono
   PCM file; one RMS level per 10 ms stays in memory. Memory is bounded by the chunk size,
   not the episode length.
2. **Chunks at pauses** (:func:`pod_audio.chunking.plan_chunks`): about ``chunk_target_s`` each, never longer
   than one and a half targets.
3. **Recognition** of each chunk by a :class:`Recogniser`: by default Whisper through
   faster-whisper (:mod:`pod_audio.whisper`), which writes the words right but puts them
   on rough times and leaves hesitations out.
4. **Alignment** (:mod:`pod_audio.align`): the recognised words are force-aligned to the
   chunk, so each word lies on its own phones and pauses and fillers fall between words.
5. **Fillers** (:func:`pod_audio.filler_search.find_fillers`): hesitations ("um", "uh",
   "er", "ah", "hmm") are looked for only in the stretches between aligned words, so a
   filler never takes a recognised word.

Chunks are independent; a finished chunk can be kept in a :class:`ChunkCache` so that an
interrupted transcription resumes at the first unfinished chunk. Alignment and filler
detection of finished chunks run on helper threads while the recogniser works on the next;
on a long file two chunks at once, their pocketsphinx searches in worker processes
(:mod:`pod_audio.search_workers`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pod_audio import filler_checks, fillers, search_workers
from pod_audio.align import align_words, aligner_version, frame_levels_db, widen_to_sound
from pod_audio.chunking import plan_chunks
from pod_audio.dsp import SAMPLE_RATE, as_int16
from pod_audio.filler_search import find_fillers
from pod_audio.io import iter_blocks
from pod_audio.transcript import Transcript, Word

__all__ = [
    "ALGORITHM_VERSION",
    "SAMPLE_RATE",
    "ChunkCache",
    "FinishedChunk",
    "Recogniser",
    "transcribe",
    "transcribe_samples",
]

ALGORITHM_VERSION = 18
"""Bumped whenever chunking, alignment or filler detection change what a chunk yields:
cached chunks of another version are not reused."""
FRAME_SAMPLES = 160
"""10 ms at 16 kHz: the frame of the level analysis, of chunk splits and of alignment."""
_FRAMES_PER_S = SAMPLE_RATE // FRAME_SAMPLES

_MIN_DECODE_S = 0.1
"""Audio shorter than this holds no word: it is not decoded."""
_SILENCE_DBFS = -55.0
"""A chunk whose loudest 10 ms frame stays below this RMS level holds no speech."""
_PCM_BLOCK_FRAMES = 65536
DEFAULT_CHUNK_S = 20.0
"""Whisper reads 30 s windows: a chunk (at most one and a half targets) fills one."""


# --------------------------------------------------------------------------- public API


@runtime_checkable
class Recogniser(Protocol):
    """Recognises words in one chunk of 16 kHz mono audio.

    ``needs_alignment``: its word times are rough and must be force-aligned.
    ``finds_fillers``: it flags fillers itself (no filler search after it).
    ``recognise`` hears any stretch of audio (a chunk, or the pieces the filler checks ask
    about); ``recognise_chunk`` hears a whole chunk the first time, and may ask a second
    model where the first is unsure (it says whether it did).
    """

    name: str
    needs_alignment: bool
    finds_fillers: bool

    def version(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def recognise(self, samples: np.ndarray) -> list[Word]: ...

    def recognise_chunk(self, samples: np.ndarray) -> tuple[list[Word], bool]: ...


@dataclass(frozen=True)
class FinishedChunk:
    """A chunk as a :class:`ChunkCache` keeps it.

    Attributes:
        words: its words, times from the start of the file.
        second_opinion: whether a second model heard it (see
            :meth:`pod_audio.whisper.WhisperEngine.recognise_chunk`), so that a resumed
            transcription still counts it.
    """

    words: list[Word]
    second_opinion: bool = False


class ChunkCache(Protocol):
    """Somewhere finished chunks are kept between attempts (see :func:`transcribe`)."""

    def get(self, key: str) -> FinishedChunk | None: ...

    def put(self, key: str, chunk: FinishedChunk) -> None: ...


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
    _limit_malloc_arenas()
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
        results, second_opinions = _run_chunks(
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
        extra=_extra(
            recogniser, detect_fillers=detect_fillers, chunks=len(chunks),
            second_opinions=second_opinions,
        ),
    )


_MALLOC_ARENAS = 1
"""glibc malloc arenas a transcribing process allocates from (``M_ARENA_MAX``)."""
_M_ARENA_MAX = -8  # glibc's malloc.h


@functools.cache
def _glibc() -> Any:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # pragma: no cover - no C library to load
        return None


def _limit_malloc_arenas() -> None:
    """Let this process's threads share one glibc malloc arena, as ``MALLOC_ARENA_MAX=1``
    would; called before the transcription starts its threads.

    By default glibc gives threads that allocate at the same time arenas of their own (up to
    eight per core), and memory freed in one arena is not reused by the others. Whisper's
    threads, the two chunk helpers and the decoder all allocate at once. Measured on 15
    minutes of speech (the step's process, median of three runs each): 505 MB with two
    arenas, 441 MB with one, 418 MB with one and :func:`_release_freed_memory` after every
    chunk, at the same CPU time (``docs/benchmarks.md``). Nothing is done where
    ``MALLOC_ARENA_MAX`` is set (the operator's choice stands) or the C library is not
    glibc.
    """
    libc = _glibc()
    if libc is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        libc.mallopt(_M_ARENA_MAX, _MALLOC_ARENAS)


def _release_freed_memory() -> None:
    """Give the pages of memory freed since (a finished chunk's audio, features and
    searches) back to the system (glibc's ``malloc_trim``), so that the next chunk's peak
    does not sit on top of the last one's leftovers."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def transcribe_samples(
    samples: np.ndarray, *, recogniser: Recogniser | None = None, detect_fillers: bool = True
) -> Transcript:
    """Transcribe 16 kHz mono samples held in memory (``int16``, or floats in ``[-1, 1]``)
    as one chunk."""
    pcm = as_int16(samples)
    if recogniser is None:
        recogniser = default_recogniser()
    duration_s = len(pcm) / SAMPLE_RATE
    words, second_opinion = (
        chunk_words(pcm, recogniser, detect_fillers=detect_fillers)
        if _pcm_holds_sound(pcm)
        else ([], False)
    )
    return Transcript(
        words=tuple(_finalise(words, duration_s=duration_s)),
        duration_s=duration_s,
        engine=recogniser.name,
        engine_version=recogniser.version(),
        extra=_extra(
            recogniser, detect_fillers=detect_fillers, chunks=1,
            second_opinions=int(second_opinion),
        ),
    )


def default_recogniser() -> Recogniser:
    """Whisper ``tiny.en`` on the CPU, with the weights shipped as a Python package."""
    from pod_audio.whisper import WhisperEngine

    return WhisperEngine()


def chunk_words(
    pcm: np.ndarray, recogniser: Recogniser, *, detect_fillers: bool
) -> tuple[list[Word], bool]:
    """Words of one chunk of 16 kHz ``int16`` samples, times from its first sample, and
    whether a second model heard it (:meth:`Recogniser.recognise_chunk`)."""
    words, second_opinion = recogniser.recognise_chunk(pcm.astype(np.float32) / 32768.0)
    return finish_chunk(pcm, words, recogniser, detect_fillers=detect_fillers), second_opinion


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
        placed = [w for w, ok in zip(result.words, result.aligned) if ok]
        recovered = filler_checks.with_dropped_words(pcm, heard, placed, recogniser)
        if len(recovered) > len(heard):
            heard = recovered
            result = align_words(pcm, heard)
        words, aligned = list(result.words), list(result.aligned)
    words = [fillers.flag_spelled_filler(w) for w in words]
    if detect_fillers:
        words = find_fillers(pcm, words, aligned=aligned, heard=heard, recogniser=recogniser)
    if recogniser.needs_alignment:
        words = widen_to_sound(pcm, words)
    return words


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
) -> tuple[list[list[Word]], int]:
    """Words of each chunk (times from the start of the file), in the chunks' order, and
    how many of the chunks a second model heard (those taken from ``cache`` included).

    The recogniser works through the chunks in this thread; the alignment and filler search
    of the chunks it has finished run on helper threads meanwhile. With more than one chunk
    to work on, as many helpers as the machine has cores (at most two) each finish a chunk,
    and their pocketsphinx searches run in worker processes
    (:mod:`pod_audio.search_workers`), since pocketsphinx holds the GIL while it searches.
    At most one chunk per helper plus the one being recognised is held in memory.
    """
    results: list[list[Word]] = [[] for _ in chunks]
    keys = [_chunk_key(fingerprint, start, end) for start, end in chunks]
    cached = [cache.get(key) if cache is not None else None for key in keys]
    to_do = sum(1 for chunk in cached if chunk is None)
    helpers = min(_PARALLEL_CHUNKS, search_workers.usable_cores()) if to_do > 1 else 1
    pending: deque[tuple[int, Future[list[Word]], bool]] = deque()
    second_opinions = sum(1 for chunk in cached if chunk is not None and chunk.second_opinion)

    def collect() -> None:
        index, future, second_opinion = pending.popleft()
        start, end = chunks[index]
        words = [w.shifted(start / SAMPLE_RATE) for w in future.result()]
        results[index] = words
        if cache is not None:
            cache.put(keys[index], FinishedChunk(words, second_opinion))
        if progress is not None:
            progress(end / SAMPLE_RATE, total_s)
        _release_freed_memory()

    with (
        search_workers.workers(helpers),
        ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="pod-align") as pool,
    ):
        for index, (start, end) in enumerate(chunks):
            finished = cached[index]
            if finished is not None:
                results[index] = finished.words
                if progress is not None:
                    progress(end / SAMPLE_RATE, total_s)
                continue
            pcm = np.fromfile(pcm_path, dtype=np.int16, count=end - start, offset=2 * start)
            words, second_opinion = recogniser.recognise_chunk(pcm.astype(np.float32) / 32768.0)
            second_opinions += second_opinion
            while len(pending) >= helpers:
                collect()
            pending.append((
                index,
                pool.submit(finish_chunk, pcm, words, recogniser, detect_fillers=detect_fillers),
                second_opinion,
            ))
        while pending:
            collect()
    return results, second_opinions


_PARALLEL_CHUNKS = 2
"""Chunks aligned at once on a long transcription (one per core on the 2-core target)."""


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


def _extra(
    recogniser: Recogniser, *, detect_fillers: bool, chunks: int, second_opinions: int
) -> dict[str, Any]:
    return {
        **recogniser.describe(),
        "aligner": aligner_version() if recogniser.needs_alignment else None,
        "detect_fillers": detect_fillers,
        "chunks": chunks,
        "chunks_second_opinion": second_opinions,
        "algorithm": ALGORITHM_VERSION,
    }


def chunk_to_json(chunk: FinishedChunk) -> bytes:
    """A finished chunk as stored in a :class:`ChunkCache`."""
    return json.dumps({
        "words": [asdict(w) for w in chunk.words],
        "second_opinion": chunk.second_opinion,
    }).encode()


def chunk_from_json(data: bytes) -> FinishedChunk:
    stored = json.loads(data)
    return FinishedChunk([Word(**w) for w in stored["words"]], bool(stored["second_opinion"]))


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
            out.write(as_int16(mono).tobytes())
            total += len(mono)
            carry = np.concatenate((carry, mono)) if len(carry) else mono
            whole = len(carry) // FRAME_SAMPLES * FRAME_SAMPLES
            if whole:
                levels.append(frame_levels_db(carry[:whole]))
            carry = carry[whole:].copy()
    if len(carry):
        levels.append(frame_levels_db(np.pad(carry, (0, FRAME_SAMPLES - len(carry)))))
    frame_db = np.concatenate(levels) if levels else np.zeros(0, dtype=np.float32)
    return total, frame_db



def _pcm_holds_sound(pcm: np.ndarray) -> bool:
    usable = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
    if usable < _MIN_DECODE_S * SAMPLE_RATE:
        return False
    return float(frame_levels_db(pcm[:usable].astype(np.float32) / 32768.0).max()) >= _SILENCE_DBFS




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




