"""Sets of time intervals ``(start_s, end_s)`` in seconds, as the cut list needs them.

Invariants: every function taking "sorted, disjoint" intervals returns sorted, disjoint
intervals too; a point (an interval of zero length) is a real member of a set where the
docstring says so, because a word of zero length still forbids a cut through it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Protocol

Interval = tuple[float, float]


class HasInterval(Protocol):
    """Anything with ``start_s``/``end_s`` in seconds: a word, a silence, a span."""

    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...


def union(intervals: Iterable[Interval], *, join_touching: bool = True) -> list[Interval]:
    """Sorted union; overlapping (and, with ``join_touching``, touching) intervals merge.
    Points are kept."""
    result: list[Interval] = []
    for start, end in sorted(intervals):
        if result and (start < result[-1][1] or (join_touching and start == result[-1][1])):
            if end > result[-1][1]:
                result[-1] = (result[-1][0], end)
        else:
            result.append((start, end))
    return result


def subtract(base: Sequence[Interval], cut: Sequence[Interval]) -> list[Interval]:
    """``base`` minus ``cut`` (both sorted and disjoint); pieces of zero length dropped.

    A zero-length interval in ``cut`` splits ``base`` at that point.
    """
    result: list[Interval] = []
    j = 0
    for start, end in base:
        while j < len(cut) and cut[j][1] < start:
            j += 1
        pos = start
        k = j
        while k < len(cut) and cut[k][0] <= end:
            c_start, c_end = cut[k]
            if c_start > pos:
                result.append((pos, c_start))
            pos = max(pos, c_end)
            k += 1
        if end > pos:
            result.append((pos, end))
    return [(s, e) for s, e in result if e > s]


def intersect(intervals: Sequence[Interval], lo: float, hi: float) -> list[Interval]:
    """Pieces of the sorted, disjoint ``intervals`` inside ``[lo, hi]``, of positive length."""
    i = bisect.bisect_left(intervals, (lo, -math.inf))
    if i > 0 and intervals[i - 1][1] > lo:
        i -= 1
    out = []
    while i < len(intervals) and intervals[i][0] < hi:
        s, e = max(intervals[i][0], lo), min(intervals[i][1], hi)
        if e > s:
            out.append((s, e))
        i += 1
    return out


def touches(intervals: Sequence[Interval], lo: float, hi: float) -> bool:
    """Whether any of the sorted, disjoint ``intervals`` meets the closed range ``[lo, hi]``."""
    # Of the intervals starting at or before ``hi``, the last one reaches furthest.
    i = bisect.bisect_right(intervals, (hi, math.inf))
    return i > 0 and intervals[i - 1][1] >= lo


def clip(item: HasInterval, duration_s: float) -> Interval | None:
    """``item``'s interval inside ``[0, duration_s]`` (ends swapped when reversed); ``None``
    when nothing of it is inside.

    Raises:
        ValueError: a NaN time.
    """
    start, end = float(item.start_s), float(item.end_s)
    if math.isnan(start) or math.isnan(end):
        raise ValueError(f"interval with NaN time: {item!r}")
    if end < start:
        start, end = end, start
    start, end = max(0.0, start), min(duration_s, end)
    if end < start:
        return None
    return start, end


def clamp(value: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, value))
