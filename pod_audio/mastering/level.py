"""The gain that reaches a loudness after the limiter: :class:`LevelSolver`, helped by the
programme's 100 ms :class:`PeakProfile`.

Without limiting, loudness after gain is ``lufs_in + gain``. When the gained programme
would exceed the limiter's ceiling the limiter takes some loudness away; the solver then
measures (decode + limit + measure, no encoding) and steps by secants, unless the profile
shows the loss is small enough for the first render to measure it instead.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterator

import numpy as np
from scipy.ndimage import maximum_filter1d

from pod_audio.dsp import amplitude_to_db
from pod_audio.loudness import ABSOLUTE_GATE_LUFS, LoudnessMeter
from pod_audio.mastering.limiter import PeakLimiter

__all__ = ["LevelSolver", "PeakProfile"]


class PeakProfile:
    """Sample peak and mean square of every 100 ms of the programme (8 bytes per 100 ms),
    for :meth:`limiter_loss_lu`."""

    _RELEASE_SPAN = 3
    """100 ms steps after a peak during which the estimate keeps its full reduction
    (the limiter releases with a 150 ms time constant)."""

    def __init__(self, *, sample_rate: int) -> None:
        self._step = max(1, sample_rate // 10)
        self._held: np.ndarray | None = None  # frames of the 100 ms not yet complete
        self._peaks = array("f")
        self._powers = array("f")

    def add(self, block: np.ndarray) -> None:
        """Take in the next ``(frames, channels)`` block of the programme."""
        data = np.asarray(block, dtype=np.float32)
        if self._held is not None and self._held.shape[0]:
            data = np.concatenate((self._held, data))
        whole = data.shape[0] - data.shape[0] % self._step
        if whole:
            # Every 100 ms as one row of all its samples: the peak and mean square of a
            # row are those over its frames and channels.
            rows = np.ascontiguousarray(data[:whole]).reshape(whole // self._step, -1)
            peaks = np.maximum(rows.max(axis=1), -rows.min(axis=1))
            powers = np.einsum("ij,ij->i", rows, rows) / rows.shape[1]
            self._peaks.extend(peaks.tolist())
            self._powers.extend(powers.tolist())
        self._held = data[whole:].copy()

    def limiter_loss_lu(self, gain_db: float, *, ceiling_dbtp: float) -> float:
        """Estimated loudness the limiter takes away at ``gain_db``, LU (an overestimate
        for isolated peaks: every 100 ms with a peak over the ceiling, and the next
        ``_RELEASE_SPAN``, lose the peak's whole excess for their whole length).

        Only 100 ms over the absolute gate count. The true peak can exceed the sample
        peak, so the estimate decides only whether a full solve is worth its pass.
        """
        peaks = np.frombuffer(self._peaks, dtype=np.float32).astype(np.float64)
        powers = np.frombuffer(self._powers, dtype=np.float32).astype(np.float64)
        if peaks.size == 0:
            return 0.0
        excess = np.maximum(amplitude_to_db(peaks) + gain_db - ceiling_dbtp, 0.0)
        if not np.any(excess > 0):
            return 0.0
        # A peak's reduction reaches back into the 100 ms before it (look-ahead) and on
        # over the next _RELEASE_SPAN.
        reduction = maximum_filter1d(
            excess,
            size=self._RELEASE_SPAN + 2,
            origin=self._RELEASE_SPAN - (self._RELEASE_SPAN + 2) // 2,
            mode="constant",
        )
        audible = powers * 10.0 ** (gain_db / 10.0) > 10.0 ** (ABSOLUTE_GATE_LUFS / 10.0)
        total = float(np.sum(powers[audible]))
        if total <= 0.0:
            return 0.0
        kept = float(np.sum(powers[audible] * 10.0 ** (-reduction[audible] / 10.0)))
        return -10.0 * math.log10(max(kept / total, 1e-12))


class LevelSolver:
    """Finds the gain that gives a wanted loudness after the limiter (before coding).

    Without limiting, loudness after gain is ``lufs_in + gain``. When the gained programme
    would exceed the limiter's ceiling, the limiter takes some loudness away, more the
    harder it works; then the gain is found by a few secant steps, each a decode + limit +
    measure pass (no encoding).
    """

    _TOLERANCE_LU = 0.15
    _MAX_STEPS = 6

    _DEFER_BELOW_LU = 0.3
    """Estimated loss under which the first limit-and-measure is left to the render."""

    def __init__(
        self,
        *,
        program: Callable[[], Iterator[np.ndarray]],
        sample_rate: int,
        channels: int,
        lufs_in: float,
        true_peak_in_dbtp: float,
        profile: PeakProfile | None = None,
    ) -> None:
        self._program = program
        self._sample_rate = sample_rate
        self._channels = channels
        self._lufs_in = lufs_in
        self._true_peak_in_dbtp = true_peak_in_dbtp
        self._profile = profile
        self.passes = 0
        """Limit-and-measure passes run so far."""
        self._known: dict[tuple[float, float], float] = {}  # (gain, ceiling) -> LUFS

    def limited_lufs(self, gain_db: float, *, ceiling_dbtp: float) -> float:
        """Loudness of the programme after ``gain_db`` and the limiter, LUFS."""
        if self._true_peak_in_dbtp + gain_db <= ceiling_dbtp:
            return self._lufs_in + gain_db
        known = self._known.get((gain_db, ceiling_dbtp))
        if known is not None:
            return known
        self.passes += 1
        gain = 10.0 ** (gain_db / 20.0)
        limiter = PeakLimiter(
            sample_rate=self._sample_rate, channels=self._channels, ceiling_dbtp=ceiling_dbtp
        )
        meter = LoudnessMeter(sample_rate=self._sample_rate, channels=self._channels)
        for block in self._program():
            meter.add(limiter.process(block * gain))
        meter.add(limiter.flush())
        return meter.integrated_lufs()

    def can_defer(self, aim_lufs: float, *, ceiling_dbtp: float) -> bool:
        """Whether the limiter, at the unlimited gain for ``aim_lufs``, is estimated to take
        away so little (under 0.3 LU) that the render can measure it instead of a pass."""
        gain = aim_lufs - self._lufs_in
        if self._true_peak_in_dbtp + gain <= ceiling_dbtp:
            return False  # nothing to measure: no limiting
        if self._profile is None:
            return False
        return self._profile.limiter_loss_lu(gain, ceiling_dbtp=ceiling_dbtp) <= self._DEFER_BELOW_LU

    def record(self, gain_db: float, lufs: float, *, ceiling_dbtp: float) -> None:
        """Remember the limited loudness at ``gain_db`` measured elsewhere (by a render)."""
        self._known[(gain_db, ceiling_dbtp)] = lufs

    def reached(self, aim_lufs: float, lufs: float) -> bool:
        """Whether ``lufs`` is within the solver's tolerance of ``aim_lufs``."""
        return abs(aim_lufs - lufs) <= self._TOLERANCE_LU

    def gain_for(self, aim_lufs: float, *, ceiling_dbtp: float, defer: bool = False) -> float:
        """Gain in dB that brings the limited programme to ``aim_lufs`` (within 0.15 LU).

        With ``defer``, the first guess (the unlimited gain) is returned unmeasured: the
        caller measures it and hands the result to :meth:`record`, and the next call goes on
        from there as if it had measured it itself.
        """
        gain = aim_lufs - self._lufs_in
        if defer:
            return gain
        level = self.limited_lufs(gain, ceiling_dbtp=ceiling_dbtp)
        previous: tuple[float, float] | None = None
        for _ in range(self._MAX_STEPS):
            miss = aim_lufs - level
            if abs(miss) <= self._TOLERANCE_LU:
                break
            slope = 1.0
            if previous is not None and gain != previous[0]:
                slope = (level - previous[1]) / (gain - previous[0])
                slope = min(1.0, max(0.2, slope))
            previous = (gain, level)
            gain += miss / slope
            level = self.limited_lufs(gain, ceiling_dbtp=ceiling_dbtp)
        return gain
