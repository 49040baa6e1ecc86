"""Loudness (ITU-R BS.1770-4 / EBU R128) and true peak, measured block by block.

:class:`LoudnessMeter` gives the gated integrated loudness in LUFS, :class:`TruePeakMeter`
the true peak in dBTP (4x oversampled). Both accept audio in blocks of any size and carry
their filter state from one block to the next, so a file of any length is measured with
constant memory (plus 8 bytes per 100 ms of audio for the gating blocks). :func:`measure`
runs both over a file, each on a thread of its own while the file is decoded.

Blocks are ``float32``/``float64`` arrays of shape ``(frames, channels)``, full scale 1.0.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import sosfilt

from pod_audio.dsp import amplitude_to_db, power_to_db
from pod_audio.io import iter_blocks, probe
from pod_audio.oversampling import (
    Interpolator,
    candidate_spans,
    interpolator,
    max_abs_over_channels,
    oversampling_factor,
)

__all__ = [
    "ABSOLUTE_GATE_LUFS",
    "LoudnessMeter",
    "LoudnessReport",
    "RELATIVE_GATE_LU",
    "TruePeakMeter",
    "channel_weights",
    "feed_concurrently",
    "k_weighting_sos",
    "measure",
]

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
GATING_BLOCK_S = 0.4
"""Gating block length; blocks overlap by 75 %, i.e. start every 100 ms."""
_SUB_BLOCKS_PER_BLOCK = 4
_SUB_BLOCKS_PER_S = 10
_LUFS_OFFSET = -0.691

_SURROUND_WEIGHT = 1.41  # +1.5 dB, BS.1770-4 Table 3
_DEFAULT_WEIGHTS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (1.0, 1.0),  # L R
    3: (1.0, 1.0, 1.0),  # L R C
    4: (1.0, 1.0, _SURROUND_WEIGHT, _SURROUND_WEIGHT),  # L R Ls Rs (quad)
    5: (1.0, 1.0, 1.0, _SURROUND_WEIGHT, _SURROUND_WEIGHT),  # L R C Ls Rs
    6: (1.0, 1.0, 1.0, 0.0, _SURROUND_WEIGHT, _SURROUND_WEIGHT),  # L R C LFE Ls Rs
    8: (1.0, 1.0, 1.0, 0.0) + (_SURROUND_WEIGHT,) * 4,  # 7.1: L R C LFE Lb Rb Ls Rs
}


def channel_weights(channels: int) -> tuple[float, ...]:
    """BS.1770-4 channel weights for FFmpeg's default layout of ``channels`` channels.

    Mono, stereo, 3.0, quad, 5.0, 5.1 (LFE weighted 0, surrounds +1.5 dB) and 7.1; other
    counts weight every channel 1.0.
    """
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    return _DEFAULT_WEIGHTS.get(channels, (1.0,) * channels)


@lru_cache(maxsize=32)
def _k_weighting_sos_cached(sample_rate: int) -> tuple[tuple[float, ...], ...]:
    # Analog prototypes of BS.1770's two stages, bilinear-transformed for this rate; at
    # 48 kHz this reproduces the coefficients printed in the recommendation (the same
    # derivation as libebur128 and FFmpeg's ebur128 filter).
    # Stage 1: high shelf, +4 dB above ~1.7 kHz (head effects).
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = (
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    )
    # Stage 2: RLB high pass at ~38 Hz.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass = (1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0)
    return (shelf, highpass)


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """K-weighting filter of BS.1770-4 at ``sample_rate`` Hz as second-order sections.

    Returns:
        Array of shape ``(2, 6)`` for :func:`scipy.signal.sosfilt` (shelf, then high pass).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return np.array(_k_weighting_sos_cached(int(sample_rate)), dtype=np.float64)


def _check_block(block: np.ndarray, channels: int) -> np.ndarray:
    data = np.asarray(block)
    if data.ndim == 1 and channels == 1:
        data = data[:, np.newaxis]
    if data.ndim != 2 or data.shape[1] != channels:
        raise ValueError(f"block must have shape (frames, {channels}), got {data.shape}")
    return data


class LoudnessMeter:
    """Integrated loudness per ITU-R BS.1770-4, fed block by block.

    K-weighting (state carried across blocks), mean square per channel over 400 ms gating
    blocks starting every 100 ms, channel weights, an absolute gate at -70 LUFS and a
    relative gate 10 LU below the loudness of the blocks above the absolute gate.

    Args:
        sample_rate: Hz of the blocks that will be added.
        channels: channel count of the blocks.
        weights: per-channel weights; default :func:`channel_weights` (``channels``).
    """

    def __init__(
        self, *, sample_rate: int, channels: int, weights: Sequence[float] | None = None
    ) -> None:
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._weights = np.asarray(
            channel_weights(channels) if weights is None else weights, dtype=np.float64
        )
        if self._weights.shape != (self.channels,):
            raise ValueError(f"need {channels} channel weights, got {len(self._weights)}")
        self._sos = k_weighting_sos(self.sample_rate)
        self._zi = np.zeros((self._sos.shape[0], self.channels, 2))
        self._frames = 0
        self._sub_index = 0  # index of the 100 ms sub-block being filled
        self._sub_energy = 0.0  # weighted sum of squares in it so far
        self._recent_energy: list[float] = []  # last complete sub-blocks (at most 3)
        self._recent_frames: list[int] = []
        self._block_powers = array("d")  # weighted mean square of each gating block

    @property
    def frames(self) -> int:
        """Frames (per channel) added so far."""
        return self._frames

    @property
    def duration_s(self) -> float:
        """Seconds of audio added so far."""
        return self._frames / self.sample_rate

    def _sub_end(self, index: int) -> int:
        """Absolute frame index where 100 ms sub-block ``index`` ends (exclusive)."""
        return ((index + 1) * self.sample_rate) // _SUB_BLOCKS_PER_S

    def add(self, block: np.ndarray) -> None:
        """Measure ``block``: shape ``(frames, channels)``, full scale 1.0."""
        data = _check_block(block, self.channels)
        n = data.shape[0]
        if n == 0:
            return
        # Channels first: sosfilt filters along the last axis, and converts the block to
        # float64 in the one copy it makes.
        filtered, self._zi = sosfilt(self._sos, data.T, axis=-1, zi=self._zi)
        energy = self._weights @ np.square(filtered, out=filtered)  # (frames,)
        cumulative = np.concatenate(([0.0], np.cumsum(energy)))
        start = self._frames
        stop = start + n
        pos = 0  # position in this block
        while True:
            sub_end = self._sub_end(self._sub_index)
            if sub_end > stop:
                self._sub_energy += cumulative[n] - cumulative[pos]
                break
            end = sub_end - start
            self._sub_energy += cumulative[end] - cumulative[pos]
            sub_frames = sub_end - (self._sub_end(self._sub_index - 1) if self._sub_index else 0)
            self._complete_sub_block(self._sub_energy, sub_frames)
            self._sub_energy = 0.0
            self._sub_index += 1
            pos = end
        self._frames = stop

    def _complete_sub_block(self, energy: float, frames: int) -> None:
        self._recent_energy.append(energy)
        self._recent_frames.append(frames)
        if len(self._recent_energy) == _SUB_BLOCKS_PER_BLOCK:
            self._block_powers.append(sum(self._recent_energy) / sum(self._recent_frames))
            del self._recent_energy[0]
            del self._recent_frames[0]

    def block_loudness_lufs(self) -> np.ndarray:
        """Loudness of every complete 400 ms gating block so far, LUFS, shape ``(blocks,)``."""
        powers = np.frombuffer(self._block_powers, dtype=np.float64)
        return _LUFS_OFFSET + power_to_db(powers)

    def integrated_lufs(self) -> float:
        """Gated integrated loudness of everything added so far, in LUFS.

        ``-inf`` when no gating block is above the absolute gate (silence, or less than
        400 ms of audio).
        """
        powers = np.frombuffer(self._block_powers, dtype=np.float64)
        absolute = 10.0 ** ((ABSOLUTE_GATE_LUFS - _LUFS_OFFSET) / 10.0)
        above = powers[powers > absolute]
        if above.size == 0:
            return float("-inf")
        relative = float(np.mean(above)) * 10.0 ** (RELATIVE_GATE_LU / 10.0)
        gated = above[above > relative]
        if gated.size == 0:
            return float("-inf")
        return _LUFS_OFFSET + 10.0 * math.log10(float(np.mean(gated)))


class TruePeakMeter:
    """True peak (and sample peak) per ITU-R BS.1770-4 Annex 2, fed block by block.

    The signal is oversampled (4x below 88.2 kHz) with a polyphase low-pass FIR whose
    history is carried across blocks; the true peak is the largest magnitude of the
    oversampled signal over all channels. Stretches whose samples are too quiet to beat the
    peak found so far (bounded by the filter's gain) are skipped, so quiet audio costs
    little.

    Args:
        sample_rate: Hz of the blocks.
        channels: channel count of the blocks.
        taps_per_phase: FIR length per polyphase branch. BS.1770 uses 12 (48 taps at 4x);
            longer is closer to ideal reconstruction and costs little here.
    """

    def __init__(self, *, sample_rate: int, channels: int, taps_per_phase: int = 32) -> None:
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._interp = interpolator(oversampling_factor(self.sample_rate), taps_per_phase)
        self._history = np.zeros((self._interp.per_phase - 1, self.channels))
        self._true_peak = 0.0
        self._sample_peak = 0.0

    def add(self, block: np.ndarray) -> None:
        """Measure ``block``: shape ``(frames, channels)``, full scale 1.0."""
        data = _check_block(block, self.channels)
        if data.shape[0] == 0:
            return
        block_peak = float(np.max(np.abs(data)))
        self._sample_peak = max(self._sample_peak, block_peak)
        self._true_peak = max(self._true_peak, block_peak)
        extended = np.concatenate((self._history, data.astype(np.float64, copy=False)))
        self._true_peak = max(self._true_peak, _peak_above(extended, self._interp, self._true_peak))
        self._history = extended[extended.shape[0] - self._history.shape[0] :].copy()

    def _tail_peak(self) -> float:
        """Peak of the filter's ringing after the last sample (the signal followed by zeros)."""
        extended = np.concatenate((self._history, np.zeros_like(self._history)))
        return _peak_above(extended, self._interp, self._true_peak)

    def true_peak(self) -> float:
        """Largest magnitude of the oversampled signal so far, linear (1.0 = full scale)."""
        return max(self._true_peak, self._tail_peak())

    def true_peak_dbtp(self) -> float:
        """True peak in dBTP; ``-inf`` for digital silence."""
        return amplitude_to_db(self.true_peak())

    def sample_peak_dbfs(self) -> float:
        """Largest sample magnitude in dBFS; ``-inf`` for digital silence."""
        return amplitude_to_db(self._sample_peak)


def _peak_above(extended: np.ndarray, interp: Interpolator, floor: float) -> float:
    """Largest |oversampled value| of ``extended`` (history + block), if above ``floor``.

    ``extended`` has shape ``(per_phase - 1 + frames, channels)``; returns ``floor`` or a
    larger value. Stretches whose input magnitude cannot lead above ``floor`` are skipped.
    """
    per_phase = interp.per_phase
    frames = extended.shape[0] - (per_phase - 1)
    if frames <= 0:
        return floor
    magnitude = max_abs_over_channels(extended)
    starts, stops = candidate_spans(magnitude, frames=frames, interp=interp, threshold=floor)
    if starts.size == 0:
        return floor
    best = floor
    # The outputs around the loudest sample first: their peak raises the floor, and the
    # stretches that cannot beat it are left out of the batch.
    loudest = int(np.argmax(magnitude))
    first = min(max(0, loudest - (per_phase - 1)), frames - 1)
    last = min(frames, loudest + 1)
    if last > first:
        best = max(floor, float(np.max(interp.peaks(extended[first : last + per_phase - 1]))))
        starts, stops = candidate_spans(magnitude, frames=frames, interp=interp, threshold=best)
    if starts.size:
        best = max(best, float(np.max(interp.run_peaks(extended, starts, stops))))
    return best


@dataclass(frozen=True)
class LoudnessReport:
    """Loudness of a file.

    Attributes:
        integrated_lufs: gated integrated loudness (BS.1770-4), LUFS; ``-inf`` if silent.
        true_peak_dbtp: true peak, dBTP.
        sample_peak_dbfs: largest sample, dBFS.
        duration_s: seconds measured.
    """

    integrated_lufs: float
    true_peak_dbtp: float
    sample_peak_dbfs: float
    duration_s: float


def feed_concurrently(
    blocks: Iterable[np.ndarray], consumers: Sequence[Callable[[np.ndarray], None]], *,
    depth: int = 4,
) -> None:
    """Hand every block of ``blocks`` to every consumer, each consumer on a thread of its own.

    The blocks are produced (decoded) in the caller's thread; each consumer gets them in
    order, at most ``depth`` behind. The meters spend their time in numpy, SciPy and FFT
    code that releases the GIL, so on two cores decoding and the meters overlap. The
    blocks must not be changed by anyone once produced. An error of a consumer or of
    ``blocks`` is raised once every thread has stopped.
    """
    queues: list[queue.Queue[np.ndarray | None]] = [queue.Queue(maxsize=depth) for _ in consumers]
    errors: list[BaseException] = []

    def run(consume: Callable[[np.ndarray], None], inbox: queue.Queue[np.ndarray | None]) -> None:
        while (block := inbox.get()) is not None:
            if not errors:
                try:
                    consume(block)
                except BaseException as exc:  # raised in the caller's thread
                    errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(consume, inbox), name="meter", daemon=True)
        for consume, inbox in zip(consumers, queues)
    ]
    for thread in threads:
        thread.start()
    try:
        for block in blocks:
            if errors:
                break
            for inbox in queues:
                inbox.put(block)
    finally:
        for inbox in queues:
            inbox.put(None)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def measure(path: str | os.PathLike[str], *, block_frames: int = 65536) -> LoudnessReport:
    """Measure loudness and peaks of the audio in ``path``, streaming, at its own rate.

    Raises the errors of :func:`pod_audio.io.iter_blocks` for unreadable files.
    """
    info = probe(path, decode_check=False)
    loudness = LoudnessMeter(sample_rate=info.sample_rate, channels=info.channels)
    peaks = TruePeakMeter(sample_rate=info.sample_rate, channels=info.channels)
    blocks = iter_blocks(
        path,
        sample_rate=info.sample_rate,
        channels=info.channels,
        block_frames=block_frames,
        clip=False,
    )
    feed_concurrently(blocks, [loudness.add, peaks.add])
    return LoudnessReport(
        integrated_lufs=loudness.integrated_lufs(),
        true_peak_dbtp=peaks.true_peak_dbtp(),
        sample_peak_dbfs=peaks.sample_peak_dbfs(),
        duration_s=loudness.duration_s,
    )
