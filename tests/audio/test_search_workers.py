"""Tests of :mod:`pod_audio.search_workers`: pocketsphinx searches in worker processes give
what they give in place, errors come back to the caller, a dead worker is a clear error,
and no worker outlives its block."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from pod_audio import asr, search_workers
from pod_audio.align import align_with_hesitations, align_words
from pod_audio.asr import transcribe
from pod_audio.errors import TranscriptionError
from pod_audio.transcript import Word
from tests.audio_factory import jfk_16k, jfk_path
from tests.speech_factory import SR

# "and so my fellow americans" on rough times, as a recogniser gives them.
ROUGH = [Word("And", 0.0, 0.6), Word("so,", 0.6, 1.4), Word("my", 2.8, 3.2),
         Word("fellow", 3.2, 3.8), Word("Americans,", 3.8, 4.6)]  # fmt: skip


def _jfk_pcm() -> np.ndarray:
    samples = jfk_16k()
    return np.round(samples * 32767).astype(np.int16)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _worker_pids() -> set[int]:
    return {search_workers.run(os.getpid) for _ in range(4)}


def test_outside_a_block_a_search_runs_here() -> None:
    assert search_workers.run(os.getpid) == os.getpid()
    with search_workers.workers(1):  # one worker is no help: searches stay here
        assert search_workers.run(os.getpid) == os.getpid()


def test_searches_in_workers_give_the_alignments_they_give_here() -> None:
    pcm = _jfk_pcm()[: 5 * SR]
    here = (align_words(pcm, ROUGH), align_with_hesitations(pcm, ROUGH))
    assert here[0].fully_aligned
    with search_workers.workers(2):
        pids = _worker_pids()
        there = (align_words(pcm, ROUGH), align_with_hesitations(pcm, ROUGH))
    assert len(pids) == 2 and os.getpid() not in pids
    assert there == here
    assert all(_gone(pid) for pid in pids)  # stopped and reaped when the block ended


def test_nested_blocks_share_the_workers_until_the_outermost_ends() -> None:
    with search_workers.workers(2):
        outer = _worker_pids()
        with search_workers.workers(2):
            assert _worker_pids() == outer
        assert _worker_pids() == outer
    assert search_workers.run(os.getpid) == os.getpid()
    assert all(_gone(pid) for pid in outer)


def test_an_error_in_a_worker_is_raised_in_the_caller_and_the_worker_serves_on() -> None:
    with search_workers.workers(2):
        with pytest.raises(ValueError, match="invalid literal"):
            search_workers.run(int, "not a number")
        assert len(_worker_pids()) == 2


def test_a_worker_that_dies_is_a_clear_error_and_the_block_still_ends() -> None:
    with search_workers.workers(2):
        pids = _worker_pids()
        os.kill(min(pids), signal.SIGKILL)
        with pytest.raises(TranscriptionError, match=r"pocketsphinx worker process died \(exit code -9\)"):
            for _ in range(4):  # one of them reaches the dead worker
                search_workers.run(os.getpid)
    assert all(_gone(pid) for pid in pids)


def test_workers_ignore_ctrl_c() -> None:
    with search_workers.workers(2):
        pids = _worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        assert _worker_pids() == pids


@contextmanager
def _counting_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    counts: list[int] = []
    real = search_workers.workers

    @contextmanager
    def counted(count: int) -> Iterator[None]:
        counts.append(count)
        with real(count):
            yield

    monkeypatch.setattr(search_workers, "workers", counted)
    yield counts


def test_a_transcription_of_several_chunks_gives_the_same_words_with_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _counting_workers(monkeypatch) as counts:
        parallel = transcribe(jfk_path(), chunk_target_s=4.0)
        monkeypatch.setattr(asr, "_PARALLEL_CHUNKS", 1)
        serial = transcribe(jfk_path(), chunk_target_s=4.0)
    assert parallel.extra["chunks"] >= 2
    assert counts == [min(2, search_workers.usable_cores()), 1]
    assert parallel.words == serial.words
