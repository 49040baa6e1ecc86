"""Where a long recording is split into chunks for the recogniser: at pauses, near a
target length, never longer than one and a half targets.

Works on one RMS level per 10 ms frame (:func:`pod_audio.align.frame_levels_db`): four
bytes per 10 ms, never the audio itself.
"""

from __future__ import annotations

import numpy as np

from pod_audio.dsp import runs

__all__ = ["plan_chunks"]

_FRAMES_PER_S = 100
"""Frames are 10 ms."""
_SPLIT_SMOOTH_S = 0.2
"""A split point must be quiet over this whole window around it."""
_SPLIT_QUIET_MIN_DB = 6.0
_SPLIT_QUIET_MAX_DB = 15.0
"""Quiet means below the noise floor plus 30 % of the floor-to-speech range, within these limits."""


def plan_chunks(
    frame_db: np.ndarray, *, chunk_target_s: float = 30.0
) -> list[tuple[int, int]]:
    """Split a recording into chunks at pauses.

    Args:
        frame_db: RMS level in dBFS of each 10 ms frame (shape ``(frames,)``).
        chunk_target_s: wanted chunk length in seconds.

    Returns:
        ``(start_frame, end_frame)`` pairs covering ``[0, frames)`` without gaps. Each split
        lies in a pause (a stretch quiet for at least 0.2 s) between half and one and a half
        targets after the previous split, preferring long pauses near the target. Audio with
        no pause at all in that span (music, a breathless talker) is split at its quietest
        0.2 s. No chunk is longer than one and a half targets: the decoder's memory grows
        with the length of the chunk it decodes.
    """
    n_frames = len(frame_db)
    target = max(1, round(chunk_target_s * _FRAMES_PER_S))
    if n_frames <= 1.5 * target:
        return [(0, n_frames)] if n_frames else []
    smooth = _max_filter(frame_db, max(1, round(_SPLIT_SMOOTH_S * _FRAMES_PER_S)))
    quiet = smooth < _quiet_threshold_db(frame_db)
    chunks: list[tuple[int, int]] = []
    start = 0
    while n_frames - start > 1.5 * target:
        split = _find_split(smooth, quiet, start=start, target=target, n_frames=n_frames)
        chunks.append((start, split))
        start = split
    chunks.append((start, n_frames))
    return chunks


def _quiet_threshold_db(frame_db: np.ndarray) -> float:
    floor_db = float(np.percentile(frame_db, 10))
    speech_db = float(np.percentile(frame_db, 95))
    margin_db = min(_SPLIT_QUIET_MAX_DB, max(_SPLIT_QUIET_MIN_DB, 0.3 * (speech_db - floor_db)))
    return floor_db + margin_db


def _find_split(
    smooth: np.ndarray, quiet: np.ndarray, *, start: int, target: int, n_frames: int
) -> int:
    ideal = start + target
    lo = start + target // 2
    # Never leave a tail shorter than half a target.
    hi = max(lo + 1, min(start + int(1.5 * target), n_frames - target // 2))
    best: tuple[float, int] | None = None
    for run_start, run_end in zip(*(edge.tolist() for edge in runs(quiet[lo:hi]))):
        centre = lo + (run_start + run_end) // 2
        # Prefer long pauses, then closeness to the target.
        length_score = min(run_end - run_start, _FRAMES_PER_S) / _FRAMES_PER_S
        score = length_score - 0.5 * abs(centre - ideal) / target
        if best is None or score > best[0]:
            best = (score, centre)
    if best is not None:
        return best[1]
    return lo + int(np.argmin(smooth[lo:hi]))


def _max_filter(values: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import maximum_filter1d

    return maximum_filter1d(values, size=width, mode="nearest")
