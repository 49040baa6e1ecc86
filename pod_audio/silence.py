"""Silence detection relative to the episode's own noise floor.

A fixed threshold (say -40 dBFS) fails both ways: in a loud, noisy room recording the
background sits above it and nothing is "silent"; in a quiet studio recording soft speech
falls below it. This detector measures the level of every short frame, estimates the noise
floor as a low percentile of those levels, and calls a frame silent when it is within a
margin of that floor. It streams: only one float per frame is kept (100 per second of audio
at the default 10 ms frames), so an episode of hours needs a few megabytes.

Levels are RMS in dBFS over all channels of a frame (a full-scale square wave is 0 dBFS, a
full-scale sine -3 dBFS). Digital silence has a level of ``-inf`` dBFS.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from pod_audio import io as audio_io

__all__ = [
    "Interval",
    "SilenceReport",
    "detect_silences",
    "detect_silences_in_file",
    "frame_levels_dbfs",
]

MIN_THRESHOLD_DBFS = -70.0
"""Lowest silence threshold: below it, even a floor of dither or digital silence counts as
silence only where the signal is really that quiet."""
MAX_THRESHOLD_DBFS = -20.0
"""Highest silence threshold: a recording whose noise floor is this loud has no usable
silence; nothing louder than -20 dBFS is ever called silent."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A time range ``[start_s, end_s]`` in seconds from the start of the audio."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (self.end_s >= self.start_s):
            raise ValueError(f"interval ends before it starts: {self.start_s} .. {self.end_s}")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class SilenceReport:
    """What :func:`detect_silences` found.

    Attributes:
        silences: silent ranges, sorted, disjoint, each at least ``min_silence_ms`` long.
        noise_floor_dbfs: the estimated noise floor (a low percentile of the frame levels);
            ``-inf`` when at least that share of the audio is digital silence.
        threshold_dbfs: frames below this level are silent (noise floor plus margin,
            clamped to [:data:`MIN_THRESHOLD_DBFS`, :data:`MAX_THRESHOLD_DBFS`]).
        duration_s: duration of the analysed audio in seconds.
    """

    silences: list[Interval]
    noise_floor_dbfs: float
    threshold_dbfs: float
    duration_s: float

    @property
    def silent_s(self) -> float:
        """Total seconds of silence."""
        return sum(s.duration_s for s in self.silences)


def _frame_len(sample_rate: int, frame_ms: float) -> int:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not frame_ms > 0:
        raise ValueError(f"frame_ms must be positive, got {frame_ms}")
    return max(1, int(round(sample_rate * frame_ms / 1000.0)))


def _frame_mean_square(blocks: Iterable[np.ndarray], frame_len: int) -> tuple[np.ndarray, int]:
    """Mean square of every frame of ``frame_len`` samples over all channels.

    Returns ``(power, total_frames)``: a float64 array with one value per frame (the last
    frame may be shorter), and the number of sample frames read. Blocks may have any length;
    a frame that straddles two blocks is assembled from both without copying the blocks.
    """
    parts: list[np.ndarray] = []
    channels: int | None = None
    total = 0
    carry_sum = 0.0  # sum of squares of a frame begun in an earlier block
    carry_len = 0  # its sample frames so far
    for raw in blocks:
        block = np.asarray(raw)
        if block.ndim == 1:
            block = block[:, np.newaxis]
        if block.ndim != 2:
            raise ValueError(f"blocks must have shape (frames, channels), got {block.shape}")
        if channels is None:
            channels = block.shape[1]
        elif block.shape[1] != channels:
            raise ValueError(f"channel count changed from {channels} to {block.shape[1]}")
        if not np.issubdtype(block.dtype, np.floating):
            raise ValueError(f"blocks must hold float samples, got {block.dtype}")
        n = block.shape[0]
        total += n
        start = 0
        if carry_len:
            head = block[: frame_len - carry_len]
            carry_sum += float(np.vdot(head, head))
            carry_len += head.shape[0]
            start = head.shape[0]
            if carry_len < frame_len:
                continue
            parts.append(np.array([carry_sum / (frame_len * channels)]))
            carry_sum, carry_len = 0.0, 0
        whole = (n - start) // frame_len
        if whole:
            body = np.ascontiguousarray(block[start : start + whole * frame_len])
            body = body.reshape(whole, frame_len * channels)
            sums = np.einsum("ij,ij->i", body, body)
            parts.append(sums.astype(np.float64) / (frame_len * channels))
        rest = block[start + whole * frame_len :]
        if rest.shape[0]:
            carry_sum = float(np.vdot(rest, rest))
            carry_len = rest.shape[0]
    if carry_len and channels:
        parts.append(np.array([carry_sum / (carry_len * channels)]))
    power = np.concatenate(parts) if parts else np.zeros(0)
    return power, total


def _to_dbfs(power: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)


def frame_levels_dbfs(
    blocks: Iterable[np.ndarray], *, sample_rate: int, frame_ms: float = 10.0
) -> np.ndarray:
    """RMS level in dBFS of every ``frame_ms`` frame of the audio, shape ``(n_frames,)``.

    Digital silence gives ``-inf``. The last frame may be shorter than ``frame_ms``.
    """
    power, _ = _frame_mean_square(blocks, _frame_len(sample_rate, frame_ms))
    return _to_dbfs(power)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of ``True`` in a 1-D boolean mask."""
    edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _hysteresis(levels_db: np.ndarray, *, low_db: float, high_db: float) -> np.ndarray:
    """Silent/not-silent state per frame with two thresholds.

    A frame below ``low_db`` is silent, one at or above ``high_db`` is not; a frame in
    between keeps the state of the frame before it (not silent at the very start).
    """
    quiet = levels_db < low_db
    decided = quiet | (levels_db >= high_db)
    index = np.where(decided, np.arange(levels_db.shape[0]), -1)
    np.maximum.accumulate(index, out=index)
    return np.where(index >= 0, quiet[np.maximum(index, 0)], False)


def detect_silences(
    blocks: Iterable[np.ndarray],
    *,
    sample_rate: int,
    min_silence_ms: float = 300.0,
    frame_ms: float = 10.0,
    threshold_db_above_floor: float = 12.0,
    floor_percentile: float = 10.0,
    hysteresis_db: float = 3.0,
    min_threshold_dbfs: float = MIN_THRESHOLD_DBFS,
    max_threshold_dbfs: float = MAX_THRESHOLD_DBFS,
) -> SilenceReport:
    """Find the silent ranges of audio given as a stream of blocks.

    Args:
        blocks: float arrays of shape ``(frames, channels)`` (or ``(frames,)`` for mono),
            samples in [-1, 1], consecutive, of any lengths; consumed once.
        sample_rate: Hz.
        min_silence_ms: shortest silence reported, in milliseconds.
        frame_ms: analysis frame in milliseconds; times are multiples of it.
        threshold_db_above_floor: a frame is silent when its level is below the noise floor
            plus this many dB.
        floor_percentile: the noise floor is this percentile (0-100) of the frame levels.
        hysteresis_db: once silent, audio stays silent until a frame rises this many dB
            above the threshold, so levels hovering at the threshold do not flicker.
        min_threshold_dbfs, max_threshold_dbfs: bounds of the threshold in dBFS.

    Returns:
        A :class:`SilenceReport`. Audio that is all digital silence (or all stationary
        noise) is one silence covering everything.

    Raises:
        ValueError: bad arguments or blocks of changing channel count.
    """
    if min_silence_ms < 0:
        raise ValueError(f"min_silence_ms must not be negative, got {min_silence_ms}")
    if not 0.0 <= floor_percentile <= 100.0:
        raise ValueError(f"floor_percentile must be within 0..100, got {floor_percentile}")
    if hysteresis_db < 0:
        raise ValueError(f"hysteresis_db must not be negative, got {hysteresis_db}")
    if min_threshold_dbfs > max_threshold_dbfs:
        raise ValueError("min_threshold_dbfs is above max_threshold_dbfs")
    frame_len = _frame_len(sample_rate, frame_ms)
    power, total_frames = _frame_mean_square(blocks, frame_len)
    duration_s = total_frames / sample_rate
    if power.size == 0:
        return SilenceReport(
            silences=[], noise_floor_dbfs=-math.inf, threshold_dbfs=min_threshold_dbfs,
            duration_s=0.0,
        )

    # Percentile of the power (not of dB) so digital silence (power 0) needs no -inf maths.
    floor_dbfs = float(_to_dbfs(float(np.percentile(power, floor_percentile))))
    threshold_dbfs = min(
        max_threshold_dbfs, max(min_threshold_dbfs, floor_dbfs + threshold_db_above_floor)
    )
    silent = _hysteresis(
        _to_dbfs(power), low_db=threshold_dbfs, high_db=threshold_dbfs + hysteresis_db
    )

    starts, ends = _runs(silent)
    min_frames = math.ceil(min_silence_ms / 1000.0 * sample_rate / frame_len - 1e-9)
    keep = (ends - starts) >= max(1, min_frames)
    # The last frame may be short; a run ending there ends at the end of the audio.
    silences = [
        Interval(start * frame_len / sample_rate, min(end * frame_len, total_frames) / sample_rate)
        for start, end in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)
    ]
    if silences and silences[-1].duration_s * 1000.0 < min_silence_ms - 1e-9:
        silences.pop()  # a run that only reached the minimum through the short last frame
    return SilenceReport(
        silences=silences,
        noise_floor_dbfs=floor_dbfs,
        threshold_dbfs=threshold_dbfs,
        duration_s=duration_s,
    )


def detect_silences_in_file(
    path: str | os.PathLike[str],
    *,
    block_frames: int = 65536,
    min_silence_ms: float = 300.0,
    frame_ms: float = 10.0,
    threshold_db_above_floor: float = 12.0,
    floor_percentile: float = 10.0,
    hysteresis_db: float = 3.0,
    min_threshold_dbfs: float = MIN_THRESHOLD_DBFS,
    max_threshold_dbfs: float = MAX_THRESHOLD_DBFS,
) -> SilenceReport:
    """:func:`detect_silences` on a file, decoded block by block at its own sample rate.

    Raises:
        The input errors of :func:`pod_audio.io.iter_blocks`
        (:class:`~pod_audio.errors.AudioInputError` and subclasses).
    """
    info = audio_io.probe(path, decode_check=False)
    blocks: Iterator[np.ndarray] = audio_io.iter_blocks(
        path, sample_rate=info.sample_rate, block_frames=block_frames
    )
    return detect_silences(
        blocks,
        sample_rate=info.sample_rate,
        min_silence_ms=min_silence_ms,
        frame_ms=frame_ms,
        threshold_db_above_floor=threshold_db_above_floor,
        floor_percentile=floor_percentile,
        hysteresis_db=hysteresis_db,
        min_threshold_dbfs=min_threshold_dbfs,
        max_threshold_dbfs=max_threshold_dbfs,
    )
