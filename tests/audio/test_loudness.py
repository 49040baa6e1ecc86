"""Tests of pod_audio.loudness, with ffmpeg's ebur128 filter as the reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import sosfilt, sosfreqz

from pod_audio.io import iter_blocks
from pod_audio.loudness import LoudnessMeter, TruePeakMeter, channel_weights, k_weighting_sos, measure
from pod_audio.oversampling import (
    candidate_spans,
    concat_ranges,
    interpolator,
    max_abs_over_channels,
    oversampling_factor,
)
from tests import audio_factory as af

needs_ffmpeg = pytest.mark.skipif(not af.has_ffmpeg(), reason="system ffmpeg not installed")


def _feed(meter: LoudnessMeter | TruePeakMeter, signal: np.ndarray, block_frames: int) -> None:
    for start in range(0, signal.shape[0], block_frames):
        meter.add(signal[start : start + block_frames])


def _lufs(signal: np.ndarray, sample_rate: int, block_frames: int = 65536) -> float:
    meter = LoudnessMeter(sample_rate=sample_rate, channels=signal.shape[1])
    _feed(meter, signal, block_frames)
    return meter.integrated_lufs()


# --------------------------------------------------------------------------- vs ffmpeg


def _surround_speech() -> np.ndarray:
    voice = af.speech_like(duration_s=5.0, sample_rate=48000, level_dbfs=-24, seed=4)[:, 0]
    bed = af.speech_like(duration_s=5.0, sample_rate=48000, level_dbfs=-34, seed=5,
                         pause_every_s=None)[:, 0]
    lfe = af.tone(duration_s=5.0, sample_rate=48000, freq_hz=60, amplitude=0.2)[:, 0]
    # FL FR FC LFE BL BR
    return np.stack([bed, bed * 0.8, voice, lfe, bed * 0.5, bed * 0.6], axis=1)


REFERENCE_CASES = {
    "tone-1k-48k-mono.wav": (lambda: af.tone(duration_s=4, sample_rate=48000, amplitude=0.5),
                             48000, "float"),
    "tone-997-44k-stereo.wav": (lambda: af.tone(duration_s=4, sample_rate=44100, channels=2,
                                                freq_hz=997, amplitude=0.3,
                                                phase_step_per_channel=1.0), 44100, "float"),
    "speech-44k-stereo.flac": (lambda: af.speech_like(duration_s=8, sample_rate=44100, channels=2,
                                                      level_dbfs=-22), 44100, 24),
    "speech-16k-mono.wav": (lambda: af.speech_like(duration_s=6, sample_rate=16000,
                                                   level_dbfs=-30, seed=3), 16000, "float"),
    "speech-96k-stereo.wav": (lambda: af.speech_like(duration_s=4, sample_rate=96000, channels=2,
                                                     level_dbfs=-18, seed=2), 96000, "float"),
    "surround-5.1-48k.wav": (_surround_speech, 48000, "float"),
    "gated-48k.wav": (lambda: af.concat(
        af.tone(duration_s=3, sample_rate=48000, channels=2, amplitude=0.5),
        af.tone(duration_s=3, sample_rate=48000, channels=2, amplitude=0.005),
        af.silence(duration_s=2, sample_rate=48000, channels=2)), 48000, "float"),
    "speech-44k.mp3": (lambda: af.speech_like(duration_s=6, sample_rate=44100, channels=2,
                                              level_dbfs=-16, seed=7), 44100, None),
}


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_matches_ffmpeg_ebur128(tmp_path: Path, name: str) -> None:
    make, sample_rate, bits = REFERENCE_CASES[name]
    path = af.write_audio(tmp_path / name, make(), sample_rate=sample_rate, bits=bits)
    ours = measure(path)
    ref = af.ffmpeg_ebur128(path)
    assert ours.integrated_lufs == pytest.approx(ref.integrated_lufs, abs=0.1)
    assert ours.true_peak_dbtp == pytest.approx(ref.true_peak_dbtp, abs=0.2)
    assert ours.sample_peak_dbfs <= ours.true_peak_dbtp + 1e-9


@needs_ffmpeg
def test_jfk_matches_ffmpeg() -> None:
    path = af.jfk_path()
    if not path.exists():
        pytest.skip(f"fixture missing: {path}")
    ours = measure(path)
    ref = af.ffmpeg_ebur128(path)
    assert ours.duration_s == pytest.approx(11.0, abs=1e-3)
    assert ours.integrated_lufs == pytest.approx(ref.integrated_lufs, abs=0.1)
    assert ours.true_peak_dbtp == pytest.approx(ref.true_peak_dbtp, abs=0.2)


# --------------------------------------------------------------------------- properties


def test_k_weighting_at_48k_matches_bs1770_table() -> None:
    # Coefficients printed in ITU-R BS.1770-4, Tables 1 and 2.
    sos = k_weighting_sos(48000)
    np.testing.assert_allclose(
        sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285,
                 1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(
        sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000, 96000])
def test_k_weighting_shape_at_any_rate(sample_rate: int) -> None:
    freqs_hz = np.array([20.0, 100.0, 1000.0, 3000.0])
    _, response = sosfreqz(k_weighting_sos(sample_rate), worN=freqs_hz, fs=sample_rate)
    gain_db = 20 * np.log10(np.abs(response))
    assert gain_db[0] < -10  # RLB high pass
    assert -1.5 < gain_db[1] < -0.5
    assert gain_db[2] == pytest.approx(0.69, abs=0.05)  # why -0.691 is in the LUFS formula
    assert 3.5 < gain_db[3] < 4.5  # head-related shelf


@pytest.mark.parametrize(("channels", "amplitude"), [(1, 1.0), (1, 0.1), (2, 0.5)])
def test_sine_at_1khz(channels: int, amplitude: float) -> None:
    # A 1 kHz sine in each of n channels reads 20 log10(A) - 3.01 + 10 log10(n) LUFS
    # (K-weighting is +0.691 dB at 1 kHz, cancelling the -0.691 offset).
    signal = af.tone(duration_s=3.0, sample_rate=48000, channels=channels, amplitude=amplitude)
    expected = 20 * math.log10(amplitude) - 3.0103 + 10 * math.log10(channels)
    assert _lufs(signal, 48000) == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("block_frames", [1, 37, 4410, 65536, 10**6])
def test_block_size_does_not_matter(block_frames: int) -> None:
    signal = af.speech_like(duration_s=2.3 if block_frames > 1 else 0.9, sample_rate=44100,
                            channels=2, seed=9)
    whole = LoudnessMeter(sample_rate=44100, channels=2)
    whole.add(signal)
    peaks_whole = TruePeakMeter(sample_rate=44100, channels=2)
    peaks_whole.add(signal)
    loud = LoudnessMeter(sample_rate=44100, channels=2)
    peaks = TruePeakMeter(sample_rate=44100, channels=2)
    _feed(loud, signal, block_frames)
    _feed(peaks, signal, block_frames)
    assert loud.integrated_lufs() == pytest.approx(whole.integrated_lufs(), abs=1e-9)
    # Oversampling runs in float32 FFT convolutions: equal to ~1e-6 dB.
    assert peaks.true_peak_dbtp() == pytest.approx(peaks_whole.true_peak_dbtp(), abs=1e-4)
    assert loud.frames == signal.shape[0]


def test_gating_blocks_are_k_weighted_mean_squares_for_every_channel() -> None:
    # 5.1 in float32, fed in blocks off the 100 ms grid: each 400 ms gating block is the
    # weighted mean square of the K-weighted channels, filtered as one signal.
    rate = 44100
    signal = np.stack(
        [af.noise(duration_s=1.3, sample_rate=rate, seed=seed)[:, 0] * (0.5 + 0.2 * seed)
         for seed in range(6)], axis=1
    ).astype(np.float32)
    meter = LoudnessMeter(sample_rate=rate, channels=6)
    _feed(meter, signal, 3001)
    filtered = sosfilt(k_weighting_sos(rate), signal.astype(np.float64), axis=0)
    energy = np.square(filtered) @ np.asarray(channel_weights(6))
    step = rate // 10
    expected = [
        -0.691 + 10 * math.log10(float(np.mean(energy[k * step : k * step + 4 * step])))
        for k in range(signal.shape[0] // step - 3)
    ]
    assert meter.block_loudness_lufs() == pytest.approx(expected, abs=1e-9)


def test_odd_sample_rate_sub_blocks() -> None:
    # 11025 Hz: 100 ms is 1102.5 frames; sub-blocks alternate 1102 / 1103 frames.
    signal = af.tone(duration_s=3.0, sample_rate=11025, amplitude=0.5)
    assert _lufs(signal, 11025, block_frames=1000) == pytest.approx(
        20 * math.log10(0.5) - 3.0103, abs=0.05)


def test_silence_and_short_input_are_minus_infinity() -> None:
    assert _lufs(af.silence(duration_s=2.0, sample_rate=48000), 48000) == -math.inf
    assert _lufs(af.tone(duration_s=0.39, sample_rate=48000), 48000) == -math.inf
    peaks = TruePeakMeter(sample_rate=48000, channels=1)
    peaks.add(af.silence(duration_s=1.0, sample_rate=48000))
    assert peaks.true_peak_dbtp() == -math.inf
    assert peaks.sample_peak_dbfs() == -math.inf


def test_absolute_gate_ignores_silence() -> None:
    tone = af.tone(duration_s=3.0, sample_rate=48000, channels=2, amplitude=0.3)
    gap = lambda s: af.silence(duration_s=s, sample_rate=48000, channels=2)  # noqa: E731
    # Blocks straddling the tone's edges count (they are above both gates); pure silence,
    # however much of it, does not.
    short_gaps = _lufs(af.concat(gap(1.0), tone, gap(1.0)), 48000)
    long_gaps = _lufs(af.concat(gap(20.0), tone, gap(20.0)), 48000)
    assert long_gaps == pytest.approx(short_gaps, abs=1e-6)
    assert short_gaps == pytest.approx(_lufs(tone, 48000), abs=0.5)


def test_relative_gate_ignores_much_quieter_parts() -> None:
    loud = af.tone(duration_s=4.0, sample_rate=48000, amplitude=0.5)
    quiet = lambda db, s: af.tone(duration_s=s, sample_rate=48000,  # noqa: E731
                                  amplitude=0.5 * 10 ** (db / 20))
    alone = _lufs(af.concat(loud, af.silence(duration_s=4.0, sample_rate=48000)), 48000)
    # 20 dB quieter is below the relative gate: ignored ...
    assert _lufs(af.concat(loud, quiet(-20, 4.0)), 48000) == pytest.approx(alone, abs=0.02)
    assert _lufs(af.concat(loud, quiet(-20, 8.0)), 48000) == pytest.approx(alone, abs=0.02)
    # ... until there is so much of it that it moves the gate itself.
    assert _lufs(af.concat(loud, quiet(-20, 40.0)), 48000) < alone - 5.0
    # 6 dB quieter is within 10 LU: it counts and lowers the result.
    assert _lufs(af.concat(loud, quiet(-6, 4.0)), 48000) < alone - 1.0


def test_channel_weights() -> None:
    assert channel_weights(1) == (1.0,)
    assert channel_weights(6) == (1.0, 1.0, 1.0, 0.0, 1.41, 1.41)
    # LFE alone does not count; a surround channel counts +1.5 dB.
    tone = af.tone(duration_s=2.0, sample_rate=48000, amplitude=0.5)[:, 0]
    only = lambda ch: np.stack([tone if c == ch else 0 * tone for c in range(6)], axis=1)  # noqa: E731
    assert _lufs(only(3), 48000) == -math.inf
    assert _lufs(only(4), 48000) - _lufs(only(0), 48000) == pytest.approx(
        10 * math.log10(1.41), abs=0.01)
    with pytest.raises(ValueError):
        LoudnessMeter(sample_rate=48000, channels=2, weights=[1.0])


def test_true_peak_between_samples() -> None:
    # A sine at a quarter of the sample rate, sampled 45 degrees off its crests: every
    # sample is at 0.707 of the true peak, which lies between samples.
    sample_rate = 48000
    n = np.arange(sample_rate)
    signal = (0.9 * np.sin(2 * np.pi * n / 4 + np.pi / 4))[:, np.newaxis].astype(np.float32)
    meter = TruePeakMeter(sample_rate=sample_rate, channels=1)
    _feed(meter, signal, 1000)
    assert meter.sample_peak_dbfs() == pytest.approx(20 * math.log10(0.9 / math.sqrt(2)), abs=0.01)
    assert meter.true_peak_dbtp() == pytest.approx(20 * math.log10(0.9), abs=0.1)


def test_meters_reject_wrong_shapes() -> None:
    meter = LoudnessMeter(sample_rate=48000, channels=2)
    with pytest.raises(ValueError):
        meter.add(np.zeros((10, 3)))
    mono = LoudnessMeter(sample_rate=48000, channels=1)
    mono.add(np.zeros(10))  # 1-D is mono
    assert mono.frames == 10


# --------------------------------------------------------------------------- skipped oversampling


def _full_true_peak(signal: np.ndarray, sample_rate: int) -> float:
    """True peak with every sample oversampled (no stretch skipped), linear."""
    interp = interpolator(oversampling_factor(sample_rate), 32)
    history = np.zeros((interp.per_phase - 1, signal.shape[1]))
    padded = np.concatenate((history, signal, history))
    return max(float(np.max(np.abs(signal))), float(np.max(interp.peaks(padded))))


def test_skipped_oversampling_matches_full_on_real_audio() -> None:
    path = af.jfk_path()
    if not path.exists():
        pytest.skip(f"fixture missing: {path}")
    signal = np.concatenate(list(iter_blocks(path, clip=False)))
    for gain_db in (0.0, 12.0):  # as recorded, and louder than full scale
        gained = signal * 10 ** (gain_db / 20)
        meter = TruePeakMeter(sample_rate=16000, channels=signal.shape[1])
        _feed(meter, gained, 4096)
        full = 20 * math.log10(_full_true_peak(gained.astype(np.float64), 16000))
        assert meter.true_peak_dbtp() == pytest.approx(full, abs=0.1)
        assert meter.true_peak_dbtp() > meter.sample_peak_dbfs()


def test_run_peaks_equals_peaks_of_each_stretch() -> None:
    interp = interpolator(4, 32)
    rng = np.random.default_rng(3)
    extended = rng.standard_normal((31 + 5000, 2)).astype(np.float32)
    starts = np.array([0, 100, 2048, 4990])
    stops = np.array([64, 101, 3000, 5000])
    batched = interp.run_peaks(extended, starts, stops)
    one_by_one = np.concatenate([interp.peaks(extended[a : b + 31]) for a, b in zip(starts, stops)])
    assert batched.shape == (int(np.sum(stops - starts)),)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6)


def test_candidate_spans_never_skip_an_exceeding_output() -> None:
    interp = interpolator(4, 32)
    rng = np.random.default_rng(9)
    extended = rng.standard_normal((31 + 20000, 1))
    extended *= np.linspace(0.01, 1.0, extended.shape[0])[:, np.newaxis] ** 4  # quiet, then loud
    frames = extended.shape[0] - 31
    threshold = 1.0
    starts, stops = candidate_spans(
        max_abs_over_channels(extended), frames=frames, interp=interp, threshold=threshold
    )
    covered = np.zeros(frames, dtype=bool)
    covered[concat_ranges(starts, stops - starts)] = True
    exceeding = interp.peaks(extended) > threshold
    assert exceeding.any() and not covered.all()  # the test means something
    assert not np.any(exceeding & ~covered)
