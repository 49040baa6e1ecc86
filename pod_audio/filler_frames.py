"""Frame analysis for the filler detector: level, voicing and pitch, zero crossings and a
noise-robust spectral flux every 10 ms of a chunk of 16 kHz mono speech.

:func:`frame_features` is what :mod:`pod_audio.filler_candidates` finds and describes
candidates on: a filler is one vowel or nasal held steady, where words change their
spectrum every 50-100 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dct, irfft, rfft
from scipy.ndimage import uniform_filter1d

from pod_audio.dsp import SAMPLE_RATE

__all__ = ["FRAMES_PER_S", "HOP", "WIN", "FrameFeatures", "frame_features"]

HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 40
FRAMES_PER_S = SAMPLE_RATE // HOP

# Frame analysis.
_NOISE_PERCENTILE = 10.0
_NOISE_FLOOR_GAIN = 3.0
"""The log-mel spectrum is taken of ``power + 3 * noise power`` per band: bands holding only
noise then stay flat instead of adding random flux."""
_N_CEPSTRA = 13
_VOICED = 0.6
"""Peak normalised cross-correlation (50-400 Hz) from which a frame counts as voiced."""
_SPEECH_DB = 10.0
"""A frame is speech when its level is this far above the noise floor (10th percentile)."""
_PAUSE_DB = 9.0
"""... and part of a pause when it is at most this far above it."""
_STEADY_WINDOW = 15
"""Frames (150 ms) the flux is averaged over."""

@dataclass(frozen=True)
class FrameFeatures:
    """Per-frame analysis of a chunk; every array has shape ``(frames,)``, 10 ms per frame.

    Attributes:
        level_db: RMS level in dBFS.
        voicing: peak of the normalised cross-correlation between 2.5 and 20 ms lag.
        f0_hz: pitch at that peak (meaningless where ``voicing`` is low).
        zcr: zero crossings per sample.
        flux: cepstral distance between the frames 10 ms before and after.
        steadiness: ``flux`` averaged over 150 ms over its median in voiced speech (1.0 =
            typical speech; sustained sounds are well below).
        high_band_db: share of the frame's power above 1 kHz, in dB (nasal murmurs such as
            the "m" of "um" sit around -25 dB, vowels around -10 dB).
        reference_flux: the median the steadiness is relative to.
        noise_db: the chunk's noise floor in dBFS.
    """

    level_db: np.ndarray
    voicing: np.ndarray
    f0_hz: np.ndarray
    zcr: np.ndarray
    flux: np.ndarray
    steadiness: np.ndarray
    high_band_db: np.ndarray
    reference_flux: float
    noise_db: float

    @property
    def n_frames(self) -> int:
        return len(self.level_db)

    @property
    def speech(self) -> np.ndarray:
        return self.level_db > self.noise_db + _SPEECH_DB

    @property
    def pause(self) -> np.ndarray:
        return self.level_db <= self.noise_db + _PAUSE_DB



def _mel_filterbank() -> np.ndarray:
    def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(60.0), hz_to_mel(7600.0), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    bank = np.zeros((N_MELS, len(bins)), dtype=np.float32)
    for i in range(N_MELS):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        bank[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return bank


_MEL_BANK = _mel_filterbank()
_WINDOW = np.hanning(WIN).astype(np.float32)
_NCCF_LEN = 320  # 20 ms
_HIGH_BAND_BIN = 1000 * N_FFT // SAMPLE_RATE  # 1 kHz
_LAGS = np.arange(SAMPLE_RATE // 400, SAMPLE_RATE // 50 + 1)  # 2.5-20 ms: 50-400 Hz


def frame_features(samples: np.ndarray) -> FrameFeatures:
    """Analyse 16 kHz mono float samples in 25 ms frames every 10 ms.

    Frame ``i`` covers samples ``[160 i, 160 i + 400)``; its time is taken as ``i / 100`` s.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = max(0, 1 + (len(samples) - WIN) // HOP)
    if n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return FrameFeatures(empty, empty, empty, empty, empty, empty, empty, 0.0, -120.0)
    index = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = samples[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    level_db = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-10)
    noise_db = float(np.percentile(level_db, _NOISE_PERCENTILE))

    power = np.abs(rfft(frames * _WINDOW, n=N_FFT, axis=1)) ** 2
    high = power[:, _HIGH_BAND_BIN:].sum(axis=1)
    high_band_db = 10.0 * np.log10((high + 1e-12) / (power.sum(axis=1) + 1e-12))
    mel = power @ _MEL_BANK.T
    noise = np.percentile(mel, _NOISE_PERCENTILE, axis=0)
    log_mel = uniform_filter1d(np.log(mel + _NOISE_FLOOR_GAIN * noise + 1e-10), 3, axis=0)
    cepstra = dct(log_mel, type=2, norm="ortho", axis=1)[:, 1:_N_CEPSTRA]
    flux = np.zeros(n, dtype=np.float32)
    if n > 2:
        flux[1:-1] = np.linalg.norm(cepstra[2:] - cepstra[:-2], axis=1) / 2.0

    voicing, f0_hz = _periodicity(samples, n)
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1)

    smooth_flux = uniform_filter1d(flux, _STEADY_WINDOW)
    voiced_speech = (level_db > noise_db + _SPEECH_DB) & (voicing > _VOICED)
    reference = float(np.median(smooth_flux[voiced_speech])) if voiced_speech.any() else 0.0
    steadiness = smooth_flux / reference if reference > 0 else np.full(n, np.inf)
    return FrameFeatures(
        level_db=level_db.astype(np.float32),
        voicing=voicing.astype(np.float32),
        f0_hz=f0_hz.astype(np.float32),
        zcr=zcr.astype(np.float32),
        flux=flux,
        steadiness=steadiness.astype(np.float32),
        high_band_db=high_band_db.astype(np.float32),
        reference_flux=reference,
        noise_db=noise_db,
    )


def _periodicity(samples: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voicing and pitch of ``n`` frames from the normalised cross-correlation (NCCF).

    For each frame, a 20 ms stretch starting at the frame's centre minus 10 ms is correlated
    with itself shifted by 2.5-20 ms (400-50 Hz); the peak correlation, in ``[-1, 1]``, is the
    voicing and its lag the pitch period.
    """
    start_offset = WIN // 2 - _NCCF_LEN // 2
    max_lag = int(_LAGS[-1])
    padded = np.pad(samples, (max(0, -start_offset), _NCCF_LEN + max_lag + WIN))
    base = max(0, start_offset)
    index = base + HOP * np.arange(n)[:, None] + np.arange(_NCCF_LEN + max_lag)[None, :]
    frames = padded[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    head = frames[:, :_NCCF_LEN]
    size = 1 << int(np.ceil(np.log2(2 * (_NCCF_LEN + max_lag))))
    spectrum = np.conj(rfft(head, n=size, axis=1)) * rfft(frames, n=size, axis=1)
    cross = irfft(spectrum, n=size, axis=1)
    cross = cross[:, _LAGS]
    energy = np.cumsum(np.pad(frames * frames, ((0, 0), (1, 0))), axis=1)
    head_energy = energy[:, _NCCF_LEN]
    lag_energy = energy[:, _LAGS + _NCCF_LEN] - energy[:, _LAGS]
    nccf = cross / np.sqrt(head_energy[:, None] * lag_energy + 1e-12)
    best = nccf.max(axis=1)
    # The shortest lag within 10 % of the best: multiples of the period score as high.
    period = np.argmax(nccf >= 0.9 * best[:, None], axis=1)
    return best, SAMPLE_RATE / _LAGS[period]
