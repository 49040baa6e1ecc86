"""Oversampling for true peaks: the polyphase interpolator and the bounds that let the
true-peak meter and the limiter skip audio that cannot reach a threshold.

The skip is exact arithmetic on the filter (no output exceeds ``l1_max`` times the largest
input magnitude it reads), so leaving a stretch out never changes a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import firwin, oaconvolve

__all__ = [
    "Interpolator",
    "candidate_spans",
    "concat_ranges",
    "interpolator",
    "max_abs_over_channels",
    "oversampling_factor",
]


@dataclass(frozen=True)
class Interpolator:
    """Polyphase FIR of a ``factor``-times oversampler.

    ``taps`` has shape ``(per_phase, factor)``: output phase ``p`` for input index ``n`` is
    ``sum_j taps[j, p] * x[n - per_phase + 1 + j]``, a point between ``x[n - per_phase // 2]``
    and ``x[n - per_phase // 2 + 1]`` (the filter's delay).
    """

    factor: int
    taps: np.ndarray
    l1_max: float
    """Largest sum of ``|taps|`` over a phase: no output exceeds ``l1_max * max |input|``."""

    @property
    def per_phase(self) -> int:
        return int(self.taps.shape[0])

    def peaks(self, extended: np.ndarray) -> np.ndarray:
        """Largest ``|oversampled value|`` over channels and phases, per input frame.

        Args:
            extended: ``(per_phase - 1 + frames, channels)``: the ``per_phase - 1`` frames
                before a stretch, then the stretch.

        Returns:
            Shape ``(frames,)``, float32.
        """
        data = np.asarray(extended, dtype=np.float32)
        # FFT convolution of every channel with every phase at once: (frames, ch, phases).
        kernel = self.taps[::-1].astype(np.float32)[:, np.newaxis, :]
        values = np.abs(oaconvolve(data[:, :, np.newaxis], kernel, mode="valid", axes=0))
        return values.reshape(values.shape[0], -1).max(axis=1)

    def run_peaks(self, extended: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """:meth:`peaks` of several stretches of one extended block, in one convolution.

        Args:
            extended: ``(per_phase - 1 + frames, channels)``, as for :meth:`peaks`.
            starts, stops: output frames ``[start, stop)`` of each stretch, ascending and
                not overlapping (as :func:`candidate_spans` gives them).

        Returns:
            The peaks of every stretch, concatenated in order, float32.

        Each stretch is copied with the ``per_phase - 1`` frames before it, and the copies
        are laid end to end: a valid output whose inputs all lie in one copy is that
        stretch's own output, so one FFT convolution serves them all and the outputs that
        straddle two copies are dropped.
        """
        history = self.per_phase - 1
        lengths = stops - starts
        if lengths.size == 1:
            return self.peaks(extended[int(starts[0]) : int(stops[0]) + history])
        gathered = extended[concat_ranges(starts, lengths + history)]
        values = self.peaks(gathered)
        copy_starts = np.cumsum(lengths + history) - (lengths + history)
        return values[concat_ranges(copy_starts, lengths)]


@lru_cache(maxsize=8)
def interpolator(factor: int, taps_per_phase: int) -> Interpolator:
    """The oversampling filter used for true peaks: Kaiser-windowed sinc, cut-off at the
    original Nyquist frequency, ``factor * taps_per_phase`` taps in all."""
    n = factor * taps_per_phase
    h = firwin(n, 1.0 / factor, window=("kaiser", 7.0)) * factor
    # taps[j, p] = h[p + factor * (per_phase - 1 - j)]
    taps = h.reshape(taps_per_phase, factor)[::-1].copy()
    l1 = float(np.max(np.sum(np.abs(taps), axis=0)))
    return Interpolator(factor=factor, taps=taps.astype(np.float64), l1_max=max(l1, 1.0))


def max_abs_over_channels(frames: np.ndarray) -> np.ndarray:
    """``max |x|`` over the channels of ``(frames, channels)``, shape ``(frames,)``."""
    out = np.abs(frames[:, 0])
    for ch in range(1, frames.shape[1]):
        np.maximum(out, np.abs(frames[:, ch]), out=out)
    return out


def candidate_spans(
    magnitude: np.ndarray, *, frames: int, interp: Interpolator, threshold: float,
    chunk_frames: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Stretches ``[start, stop)`` of output frames whose oversampled peak may exceed ``threshold``.

    ``magnitude`` is :func:`max_abs_over_channels` of the extended block (history first).
    Outputs of a chunk read its inputs and the next ``per_phase - 1``; where ``l1_max``
    times their largest magnitude is at most ``threshold``, no output can exceed it.
    Adjacent candidate chunks are merged. The bound is exact arithmetic on the filter, so
    skipping never changes a result; small chunks (``chunk_frames >= per_phase - 1``)
    follow the audio's own peaks closely and leave most of it out.

    Returns:
        ``(starts, stops)``, int64 arrays of equal length (empty when nothing can exceed).
    """
    if chunk_frames < interp.per_phase - 1:
        raise ValueError(f"chunk_frames must be at least {interp.per_phase - 1}")
    n_chunks = -(-frames // chunk_frames)
    padded = np.zeros((n_chunks + 1) * chunk_frames, dtype=magnitude.dtype)
    padded[: magnitude.shape[0]] = magnitude[: padded.shape[0]]
    chunk_max = padded.reshape(-1, chunk_frames).max(axis=1)
    bound = np.maximum(chunk_max[:-1], chunk_max[1:]).astype(np.float64) * interp.l1_max
    candidates = np.flatnonzero(bound > threshold)
    if candidates.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    breaks = np.flatnonzero(np.diff(candidates) > 1)
    starts = np.concatenate((candidates[:1], candidates[breaks + 1])) * chunk_frames
    stops = (np.concatenate((candidates[breaks], candidates[-1:])) + 1) * chunk_frames
    return starts.astype(np.int64), np.minimum(stops, frames).astype(np.int64)


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices ``start, start + 1, ..., start + length - 1`` of every range, concatenated."""
    total = int(np.sum(lengths))
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


def oversampling_factor(sample_rate: int) -> int:
    """Oversampling for true peak: 4x below 88.2 kHz, 2x below 176.4 kHz, else 1x."""
    if sample_rate < 88200:
        return 4
    if sample_rate < 176400:
        return 2
    return 1
