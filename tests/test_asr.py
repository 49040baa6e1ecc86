"""Tests of :mod:`pod_audio.asr`: pocketsphinx transcription, chunking at pauses, parallelism."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from pod_audio import asr
from pod_audio.asr import PocketsphinxTranscriber, Transcriber, plan_chunks, transcribe
from pod_audio.io import iter_blocks
from pod_audio.transcript import Transcript

REPO = Path(__file__).resolve().parents[1]
SR = 16000


JFK = REPO / "samples" / "jfk-inaugural-excerpt.flac"


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes(pcm.tobytes())
    return path


def _jfk_16k() -> np.ndarray:
    return np.concatenate([b[:, 0] for b in iter_blocks(JFK, sample_rate=SR, channels=1)])


def _assert_well_formed(transcript: Transcript) -> None:
    previous_end = 0.0
    for word in transcript.words:
        assert 0.0 <= word.start_s < word.end_s <= transcript.duration_s + 1e-9
        assert word.start_s >= previous_end - 1e-9
        assert 0.0 <= word.confidence <= 1.0
        assert "(" not in word.text
        assert word.text not in ("<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]")
        previous_end = word.end_s


@pytest.fixture(scope="module")
def jfk_transcript() -> Transcript:
    return transcribe(JFK, workers=1)


def test_jfk_words_in_order_inside_duration(jfk_transcript: Transcript) -> None:
    assert jfk_transcript.engine == "pocketsphinx"
    assert jfk_transcript.engine_version == asr.engine_version() != "unknown"
    assert jfk_transcript.duration_s == pytest.approx(11.0, abs=0.05)
    _assert_well_formed(jfk_transcript)
    texts = [w.text for w in jfk_transcript.words]
    # "... ask not what your country can do for you, ask what you can do for your country"
    expected = {"my", "fellow", "not", "what", "your", "country", "can", "do", "for", "you"}
    assert len(expected & set(texts)) >= 6, texts
    assert texts.index("fellow") < texts.index("can")


def test_jfk_has_no_fillers(jfk_transcript: Transcript) -> None:
    assert jfk_transcript.filler_count <= 1


def test_parallel_split_shifts_times_exactly(tmp_path: Path) -> None:
    # "what your country can do for you, ask what you can do for your country", trimmed to
    # its sound, between two identical 1 s stretches of near silence; the file holds it twice.
    speech = _jfk_16k()[int(5.3 * SR) : int(10.96 * SR)]
    pad = np.random.default_rng(0).normal(0, 1e-4, SR).astype(np.float32)
    unit = np.concatenate([pad, speech, pad])
    unit = unit[: len(unit) // 160 * 160]
    path = _write_wav(tmp_path / "twice.wav", np.concatenate([unit, unit]))
    offset_s = len(unit) / SR

    parallel = transcribe(path, workers=2, chunk_target_s=offset_s, detect_fillers=False)
    serial = transcribe(path, workers=1, chunk_target_s=offset_s, detect_fillers=False)
    assert parallel.words == serial.words
    _assert_well_formed(parallel)

    first = [w for w in parallel.words if w.end_s <= offset_s]
    second = [w for w in parallel.words if w.start_s >= offset_s]
    assert len(first) >= 8 and len(first) + len(second) == len(parallel.words)
    # The split falls in the middle of the 2 s pause: both chunks hold the same samples, so
    # they decode to the same words, and the second's times are shifted by exactly the offset.
    pairs = _align([w.text for w in first], [w.text for w in second])
    assert len(pairs) >= 0.8 * max(len(first), len(second))
    for i, j in pairs:
        assert second[j].start_s == pytest.approx(first[i].start_s + offset_s, abs=0.03)
        assert second[j].end_s == pytest.approx(first[i].end_s + offset_s, abs=0.03)


def _align(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of ``a`` and ``b``."""
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            if a[i] == b[j]:
                table[i, j] = table[i + 1, j + 1] + 1
            else:
                table[i, j] = max(table[i + 1, j], table[i, j + 1])
    pairs, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1, j] >= table[i, j + 1]:
            i += 1
        else:
            j += 1
    return pairs


@pytest.mark.parametrize(
    "samples",
    [
        np.zeros(2 * SR, dtype=np.float32),
        np.random.default_rng(1).normal(0, 3e-4, 2 * SR).astype(np.float32),  # -70 dBFS hiss
        np.zeros(400, dtype=np.float32),  # 25 ms
        0.3 * np.sin(2 * np.pi * 220 * np.arange(800) / SR).astype(np.float32),  # 50 ms tone
    ],
    ids=["digital-silence", "hiss", "25ms", "50ms-tone"],
)
def test_silence_and_very_short_input_give_empty_transcript(
    tmp_path: Path, samples: np.ndarray
) -> None:
    path = _write_wav(tmp_path / "quiet.wav", samples)
    result = transcribe(path, workers=1)
    assert result.words == ()
    assert result.duration_s == pytest.approx(len(samples) / SR, abs=1e-3)


def test_wav_without_samples_gives_empty_transcript(tmp_path: Path) -> None:
    path = _write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    result = transcribe(path, workers=1)
    assert result.words == () and result.duration_s == 0.0


def test_transcribe_samples_on_silence() -> None:
    result = asr.transcribe_samples(np.zeros(SR, dtype=np.int16))
    assert result.words == () and result.duration_s == 1.0


@pytest.mark.parametrize("kwargs", [{"workers": -1}, {"chunk_target_s": 0.0}])
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    path = _write_wav(tmp_path / "x.wav", np.zeros(SR, dtype=np.float32))
    with pytest.raises(ValueError):
        transcribe(path, **kwargs)


def test_pocketsphinx_transcriber_is_a_transcriber(tmp_path: Path) -> None:
    transcriber = PocketsphinxTranscriber(workers=1)
    assert isinstance(transcriber, Transcriber)
    assert transcriber.name == "pocketsphinx"
    path = _write_wav(tmp_path / "x.wav", np.zeros(SR, dtype=np.float32))
    assert transcriber.transcribe(path, detect_fillers=False).words == ()


# --------------------------------------------------------------------------- plan_chunks


def _levels(pattern: list[tuple[float, float]]) -> np.ndarray:
    """Frame levels (dBFS, 10 ms frames) from ``(seconds, level_db)`` pieces."""
    return np.concatenate([np.full(round(s * 100), db, dtype=np.float32) for s, db in pattern])


def test_plan_chunks_short_audio_is_one_chunk() -> None:
    assert plan_chunks(_levels([(20.0, -20.0)]), chunk_target_s=30.0) == [(0, 2000)]
    assert plan_chunks(np.zeros(0, dtype=np.float32)) == []


def test_plan_chunks_splits_in_pauses_only() -> None:
    rng = np.random.default_rng(2)
    pattern: list[tuple[float, float]] = []
    for _ in range(40):  # speech of 2-9 s separated by pauses of 0.3-1.5 s
        pattern += [(float(rng.uniform(2, 9)), -18.0), (float(rng.uniform(0.3, 1.5)), -65.0)]
    levels = _levels(pattern)
    levels += rng.normal(0, 1.0, len(levels)).astype(np.float32)
    chunks = plan_chunks(levels, chunk_target_s=20.0)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(levels)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for start, _ in chunks[1:]:
        assert levels[start - 5 : start + 5].max() < -50, "split inside speech"
    lengths = [(end - start) / 100 for start, end in chunks]
    assert max(lengths) <= 3 * 20.0 and min(lengths) >= 10.0


def test_plan_chunks_continuous_sound_still_bounded() -> None:
    levels = _levels([(200.0, -20.0)])
    chunks = plan_chunks(levels, chunk_target_s=30.0)
    assert len(chunks) >= 4
    assert max(end - start for start, end in chunks) <= 45 * 100
