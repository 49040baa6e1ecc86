"""Silence detection: relative thresholds, digital silence, noise, real speech vs ffmpeg."""

from __future__ import annotations

import math
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from pod_audio.silence import Interval, detect_silences, detect_silences_in_file, frame_levels_dbfs
from tests.audio_factory import concat, has_ffmpeg, jfk_path, noise, silence, tone, write_audio

SR = 44100
GAPS_S = [0.5, 0.8, 1.2, 0.2, 0.6]  # the 0.2 s gap is below min_silence_ms
BURST_S = 1.0
LEAD_S = 0.5


def bursts_with_gaps(
    *, noise_dbfs: float, tone_amplitude: float = 0.5, channels: int = 2
) -> np.ndarray:
    """Tone bursts separated by ``GAPS_S``, all over a noise floor of RMS ``noise_dbfs``."""
    burst = tone(duration_s=BURST_S, sample_rate=SR, channels=channels, amplitude=tone_amplitude)
    parts = [silence(duration_s=LEAD_S, sample_rate=SR, channels=channels)]
    for gap in GAPS_S:
        parts.append(burst)
        parts.append(silence(duration_s=gap, sample_rate=SR, channels=channels))
    parts.append(burst)
    parts.append(silence(duration_s=LEAD_S, sample_rate=SR, channels=channels))
    signal = concat(*parts)
    floor = noise(
        duration_s=signal.shape[0] / SR, sample_rate=SR, channels=channels,
        amplitude=10 ** (noise_dbfs / 20), seed=1,
    )
    return signal + floor[: signal.shape[0]]


def expected_gaps() -> list[Interval]:
    out, t = [Interval(0.0, LEAD_S)], LEAD_S
    for gap in GAPS_S:
        t += BURST_S
        if gap >= 0.3:
            out.append(Interval(t, t + gap))
        t += gap
    t += BURST_S
    out.append(Interval(t, t + LEAD_S))
    return out


def blocks_of(signal: np.ndarray, size: int) -> list[np.ndarray]:
    return [signal[i : i + size] for i in range(0, signal.shape[0], size)]


def assert_same_intervals(found: list[Interval], expected: list[Interval], *, tol_s: float) -> None:
    assert len(found) == len(expected), (found, expected)
    for f, e in zip(found, expected, strict=True):
        assert abs(f.start_s - e.start_s) <= tol_s, (f, e)
        assert abs(f.end_s - e.end_s) <= tol_s, (f, e)


@pytest.mark.parametrize("noise_dbfs", [-60.0, -30.0])
def test_same_gaps_found_at_quiet_and_loud_noise_floors(noise_dbfs: float) -> None:
    signal = bursts_with_gaps(noise_dbfs=noise_dbfs)
    report = detect_silences(blocks_of(signal, 65536), sample_rate=SR)
    assert report.noise_floor_dbfs == pytest.approx(noise_dbfs, abs=1.5)
    assert report.threshold_dbfs > report.noise_floor_dbfs
    assert_same_intervals(report.silences, expected_gaps(), tol_s=0.02)
    assert report.duration_s == pytest.approx(signal.shape[0] / SR)


def test_quiet_recording_where_a_fixed_threshold_would_fail() -> None:
    """Speech-level bursts at about -50 dBFS over a -80 dBFS floor: a fixed -40 dBFS
    threshold would call the whole file silent."""
    signal = bursts_with_gaps(noise_dbfs=-80.0, tone_amplitude=0.0045, channels=1)
    report = detect_silences(blocks_of(signal, 10000), sample_rate=SR)
    assert report.threshold_dbfs < -50.0
    assert_same_intervals(report.silences, expected_gaps(), tol_s=0.02)


def test_result_does_not_depend_on_block_size() -> None:
    signal = bursts_with_gaps(noise_dbfs=-45.0)
    reference = detect_silences(blocks_of(signal, 65536), sample_rate=SR)
    for size in (97, 441, 4410, 100000):
        report = detect_silences(blocks_of(signal, size), sample_rate=SR)
        assert report.silences == reference.silences
        assert report.noise_floor_dbfs == pytest.approx(reference.noise_floor_dbfs, abs=1e-4)
    part = signal[: SR * 2]
    one_by_one = detect_silences(blocks_of(part, 1), sample_rate=SR)
    assert one_by_one.silences == detect_silences([part], sample_rate=SR).silences


def test_digital_silence_is_one_silence_without_warnings() -> None:
    signal = silence(duration_s=3.0, sample_rate=SR, channels=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = detect_silences(blocks_of(signal, 65536), sample_rate=SR)
        levels = frame_levels_dbfs([signal], sample_rate=SR)
    assert report.noise_floor_dbfs == -math.inf
    assert report.silences == [Interval(0.0, 3.0)]
    assert np.all(levels == -np.inf)


def test_digital_silence_between_bursts() -> None:
    signal = bursts_with_gaps(noise_dbfs=-200.0)  # noise below one LSB: digital silence
    signal[np.abs(signal) < 1e-9] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = detect_silences(blocks_of(signal, 65536), sample_rate=SR)
    assert_same_intervals(report.silences, expected_gaps(), tol_s=0.02)


def test_pure_noise_is_all_noise_floor() -> None:
    signal = noise(duration_s=4.0, sample_rate=SR, channels=2, amplitude=0.05, seed=3)
    report = detect_silences(blocks_of(signal, 65536), sample_rate=SR)
    assert report.noise_floor_dbfs == pytest.approx(-26.0, abs=1.0)
    assert report.silences == [Interval(0.0, 4.0)]


def test_loud_noise_is_never_silence() -> None:
    """A floor above the -20 dBFS ceiling: there is no silence to find."""
    signal = noise(duration_s=2.0, sample_rate=SR, channels=1, amplitude=0.3, seed=4)
    report = detect_silences([signal], sample_rate=SR)
    assert report.threshold_dbfs == -20.0
    assert report.silences == []


def test_hysteresis_keeps_a_flickering_pause_whole() -> None:
    """A pause whose level hovers around the threshold is one silence, not many."""
    quiet = noise(duration_s=2.0, sample_rate=SR, channels=1, amplitude=10 ** (-60 / 20), seed=5)
    # Frames alternate between 10 dB and 13 dB above the floor (threshold: floor + 12).
    wobble = np.repeat(np.tile([10 ** (10 / 20), 10 ** (13 / 20)], 50), 441)[:, np.newaxis]
    pause = quiet[: wobble.shape[0]] * wobble
    loud = tone(duration_s=1.0, sample_rate=SR, amplitude=0.5)
    signal = concat(quiet, loud, pause.astype(np.float32), loud, quiet)
    report = detect_silences([signal], sample_rate=SR)
    middle = [s for s in report.silences if 2.5 < s.start_s < 4.5]
    assert len(middle) == 1 and middle[0].duration_s == pytest.approx(1.0, abs=0.02)
    no_hysteresis = detect_silences([signal], sample_rate=SR, hysteresis_db=0.0)
    assert not any(s.duration_s > 0.5 for s in no_hysteresis.silences if 2.5 < s.start_s < 4.5)


def test_min_silence_ms_and_mono_1d_blocks() -> None:
    signal = bursts_with_gaps(noise_dbfs=-60.0, channels=1)[:, 0]
    report = detect_silences(blocks_of(signal, 8192), sample_rate=SR, min_silence_ms=700)
    assert [round(s.duration_s, 1) for s in report.silences] == [0.8, 1.2]


def test_changing_channel_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="channel"):
        blocks = [np.zeros((100, 2), np.float32), np.zeros((100, 1), np.float32)]
        detect_silences(blocks, sample_rate=SR)


def test_empty_input() -> None:
    report = detect_silences([], sample_rate=SR)
    assert report.silences == [] and report.duration_s == 0.0


def test_file_streaming_matches_in_memory(tmp_path: Path) -> None:
    signal = bursts_with_gaps(noise_dbfs=-50.0)
    path = write_audio(tmp_path / "bursts.flac", signal, sample_rate=SR, bits=24)
    from_file = detect_silences_in_file(path, block_frames=30000)
    in_memory = detect_silences([signal], sample_rate=SR)
    assert_same_intervals(from_file.silences, in_memory.silences, tol_s=0.011)


def _ffmpeg_silences(path: Path, *, noise_db: float, min_s: float) -> tuple[list[Interval], float]:
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path),
         "-af", f"silencedetect=n={noise_db}dB:d={min_s}", "-f", "null", "-"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    starts = [float(x) for x in re.findall(r"silence_start: ([0-9.]+)", proc.stderr)]
    ends = [float(x) for x in re.findall(r"silence_end: ([0-9.]+)", proc.stderr)]
    return [Interval(s, e) for s, e in zip(starts, ends, strict=False)], len(starts) - len(ends)


@pytest.mark.skipif(not has_ffmpeg(), reason="needs the ffmpeg binary")
@pytest.mark.skipif(not jfk_path().exists(), reason="needs fixtures/jfk.flac")
def test_real_speech_agrees_with_ffmpeg_silencedetect() -> None:
    """ffmpeg's silencedetect compares sample peaks with a fixed level. At a level suited
    to this recording (-20 dB peak: our RMS threshold plus the ~10 dB crest of room noise)
    it finds the same pauses we find with our defaults. At the common -40 dB it finds none:
    the room noise of this recording is louder than that."""
    ours = detect_silences_in_file(jfk_path())
    assert -50.0 < ours.noise_floor_dbfs < -35.0
    theirs, unterminated = _ffmpeg_silences(jfk_path(), noise_db=-20.0, min_s=0.3)
    assert unterminated == 0
    assert len(theirs) == len(ours.silences) >= 5
    for o, t in zip(ours.silences, theirs, strict=True):
        assert abs(o.start_s - t.start_s) < 0.05 and abs(o.end_s - t.end_s) < 0.05, (o, t)
    none_at_40, _ = _ffmpeg_silences(jfk_path(), noise_db=-40.0, min_s=0.3)
    assert none_at_40 == []
