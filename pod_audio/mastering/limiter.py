"""Look-ahead true-peak limiter (:class:`PeakLimiter`), block by block.

Invariants: no sample leaves above the ceiling; :meth:`PeakLimiter.process` and
:meth:`PeakLimiter.flush` together return exactly as many frames as went in, delayed by
:attr:`PeakLimiter.latency_frames`; the detector oversamples as
:class:`pod_audio.loudness.TruePeakMeter` does, so what one lets through the other
measures the same way.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter1d

from pod_audio.dsp import amplitude_to_db
from pod_audio.oversampling import (
    Interpolator,
    candidate_spans,
    concat_ranges,
    interpolator,
    max_abs_over_channels,
    oversampling_factor,
)

__all__ = ["PeakLimiter"]


class PeakLimiter:
    """Look-ahead true-peak limiter, block by block, with a fixed latency.

    The detector follows the 4x-oversampled signal (all channels linked), so peaks between
    samples are limited too. The gain reduction needed at each point is held for the
    look-ahead window, released exponentially, and smoothed by a moving average over the
    look-ahead window; the audio is delayed by the same amount, so the gain has ramped down
    fully when a peak arrives (attack = ``lookahead_ms``). No sample leaves above the
    ceiling.

    Args:
        sample_rate: Hz.
        channels: channel count of the blocks.
        ceiling_dbtp: largest true peak let through, dBTP.
        lookahead_ms: look-ahead and attack time.
        release_ms: time constant of the recovery after a peak.
        taps_per_phase: length of the oversampling filter's branches; the default matches
            :class:`pod_audio.loudness.TruePeakMeter`, so what one lets through the other
            measures the same way.

    Use :meth:`process` on every block, then :meth:`flush` once; together they return
    exactly as many frames as went in. :attr:`max_reduction_db` tells how hard it worked.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        channels: int,
        ceiling_dbtp: float = -1.5,
        lookahead_ms: float = 5.0,
        release_ms: float = 150.0,
        taps_per_phase: int = 32,
    ) -> None:
        if lookahead_ms <= 0 or release_ms <= 0:
            raise ValueError("lookahead_ms and release_ms must be positive")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.ceiling_dbtp = float(ceiling_dbtp)
        self._ceiling = 10.0 ** (ceiling_dbtp / 20.0)
        self._interp: Interpolator = interpolator(
            oversampling_factor(self.sample_rate), taps_per_phase
        )
        self._window = max(2, int(round(lookahead_ms * self.sample_rate / 1000.0)))
        # Detector value d[m] covers the interval between x[m - D] and x[m - D + 1].
        self._detector_delay = self._interp.per_phase // 2
        self.latency_frames = self._window - 1 + self._detector_delay
        self._release_coef = math.exp(-1.0 / (release_ms * self.sample_rate / 1000.0))

        self._x_history = np.zeros((self._interp.per_phase - 1, self.channels), dtype=np.float32)
        self._r_history = np.zeros(self._window)  # last L required reductions (dB)
        self._q_last = 0.0  # last released reduction (dB)
        self._q_history = np.zeros(self._window - 1)  # for the moving average
        self._audio_delay = np.zeros((self.latency_frames, self.channels), dtype=np.float32)
        self._skip_frames = self.latency_frames  # the delay line's initial zeros
        self.max_reduction_db = 0.0
        self.frames_in = 0
        self._flushed = False

    def _required_reduction_db(self, extended: np.ndarray) -> np.ndarray:
        """Gain reduction (dB >= 0) each detector point needs, shape ``(frames,)``.

        ``extended`` is the block after the last ``per_phase - 1`` input frames. Detector
        point ``m`` covers the samples ``x[m - D]`` and ``x[m - D + 1]`` and the oversampled
        points between them. Only stretches whose samples could reach the ceiling after
        interpolation are interpolated; elsewhere no reduction is needed.
        """
        per_phase = self._interp.per_phase
        frames = extended.shape[0] - (per_phase - 1)
        required = np.zeros(frames)
        magnitude = max_abs_over_channels(extended)
        offset = per_phase - 1 - self._detector_delay  # extended index of x[m - D] is m + offset
        starts, stops = candidate_spans(
            magnitude, frames=frames, interp=self._interp, threshold=self._ceiling
        )
        if starts.size == 0:
            return required
        points = concat_ranges(starts, stops - starts)
        detector = np.maximum(magnitude[points + offset], magnitude[points + offset + 1])
        np.maximum(detector, self._interp.run_peaks(extended, starts, stops), out=detector)
        level_db = amplitude_to_db(detector.astype(np.float64) / self._ceiling)
        required[points] = np.maximum(level_db, 0.0)
        return required

    def _release(self, held: np.ndarray) -> np.ndarray:
        """``q[m] = max(held[m], a * q[m-1])`` for the whole block, vectorised."""
        out = np.empty_like(held)
        a = self._release_coef
        q_last = self._q_last
        step = 8192  # keeps a**-k well inside float range
        for start in range(0, held.shape[0], step):
            part = held[start : start + step]
            k = np.arange(part.shape[0])
            log_a = math.log(a)
            scaled = part * np.exp(-k * log_a)  # held[k] / a**k
            running = np.maximum.accumulate(np.maximum(scaled, q_last * a))
            out[start : start + part.shape[0]] = running * np.exp(k * log_a)
            q_last = float(out[start + part.shape[0] - 1])
        self._q_last = q_last
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        """Limit ``block`` (``(frames, channels)``).

        Returns the limited audio up to :attr:`latency_frames` behind the input: as many
        frames as went in, minus the latency on the first calls.
        """
        if self._flushed:
            raise RuntimeError("the limiter has been flushed")
        data = np.asarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise ValueError(f"block must have shape (frames, {self.channels}), got {data.shape}")
        n = data.shape[0]
        if n == 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        self.frames_in += n
        extended = np.concatenate((self._x_history, data))
        required = self._required_reduction_db(extended)
        self._x_history = extended[extended.shape[0] - self._x_history.shape[0] :].copy()

        # Hold: max over the last L + 1 required reductions (trailing window).
        window = self._window
        r_ext = np.concatenate((self._r_history, required))
        size = window + 1
        centred = maximum_filter1d(r_ext, size=size, mode="nearest")
        idx = np.arange(window, window + n) - window + size // 2
        held = centred[idx]
        self._r_history = r_ext[-window:].copy()

        released = self._release(held)

        # Attack: moving average over L values (trailing window).
        q_ext = np.concatenate((self._q_history, released))
        cumulative = np.concatenate(([0.0], np.cumsum(q_ext)))
        smoothed = (cumulative[window:] - cumulative[:-window]) / window  # length n
        self._q_history = q_ext[-(window - 1) :].copy()
        if smoothed.size:
            self.max_reduction_db = max(self.max_reduction_db, float(np.max(smoothed)))

        delayed = np.concatenate((self._audio_delay, data))
        out = delayed[:n]
        self._audio_delay = delayed[n:].copy()
        limiting = np.flatnonzero(smoothed > 0.0)
        if limiting.size:
            first, last = int(limiting[0]), int(limiting[-1]) + 1
            gain = np.exp(smoothed[first:last] * (-math.log(10.0) / 20.0)).astype(np.float32)
            out[first:last] *= gain[:, np.newaxis]
        np.clip(out, -self._ceiling, self._ceiling, out=out)
        if self._skip_frames:
            skip = min(self._skip_frames, out.shape[0])
            out = out[skip:]
            self._skip_frames -= skip
        return out.astype(np.float32, copy=False)

    def flush(self) -> np.ndarray:
        """Return the frames still in the delay line (the last :attr:`latency_frames`, or all
        if fewer went in)."""
        out = self.process(np.zeros((self.latency_frames, self.channels)))
        self._flushed = True
        return out
