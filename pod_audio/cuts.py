"""Cut lists: which parts of an episode to keep, and where kept times land afterwards.

A :class:`CutList` tiles the source audio ``[0, source_duration_s]`` with spans marked
``keep`` or ``remove``. Rendering (:mod:`pod_audio.render`) plays the kept spans in order and
joins each pair of consecutive kept runs with a crossfade of ``crossfade_ms``: the last
``crossfade_ms`` of the run before overlaps the first ``crossfade_ms`` of the run after.
Each join therefore shortens the output by one crossfade::

    kept_duration_s = sum(kept span lengths) - joins * crossfade_s

where ``joins`` is the number of removed stretches that have kept audio on both sides.

The *cut point* of a join is the centre of its crossfade. :func:`remap_time` maps a source
time in a kept run to ``run output start + (t - run source start)``, which is exactly where
that audio plays in the rendered file; times in the half crossfade beyond a cut point (they
play mixed into the other run's audio) map to the cut point, so the mapping is monotonic.
:func:`build_cut_list` keeps every word at least one crossfade away from a cut, so words
never fall in a crossfade and keep their exact durations.

See ``docs/cleaning.md`` for what is cut and why, and the JSON format.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal, Protocol

from pod_audio.errors import AudioError
from pod_audio.transcript import Transcript, Word

__all__ = [
    "CUT_LIST_FORMAT_VERSION",
    "CutList",
    "InvalidCutListError",
    "KEEP_REASONS",
    "REMOVE_REASONS",
    "Span",
    "build_cut_list",
    "remap_time",
    "remap_transcript",
    "remap_words",
]

CUT_LIST_FORMAT_VERSION = 1

Action = Literal["keep", "remove"]
KEEP_REASONS: frozenset[str] = frozenset({"speech", "pause"})
REMOVE_REASONS: frozenset[str] = frozenset(
    {"filler", "pause", "leading_silence", "trailing_silence"}
)

_JOIN_TOLERANCE_S = 0.05
"""Removable stretches (silences, fillers) closer than this, with no word between them, are
one stretch: silence detection and word timings both have ~10 ms granularity, so a filler
and the silence after it rarely touch exactly."""
_TILE_TOLERANCE_S = 1e-9
"""Pieces shorter than this are float noise and are folded into a neighbour."""
_RUN_LENGTH_TOLERANCE_S = 1e-6
_MIN_GUARD_S = 0.001
"""A cut stays at least a crossfade plus this far from a word: the crossfade, rounded to
whole samples, never reaches into the word, and even with no crossfade and no margin a
word of zero length keeps kept audio around it."""
_MIN_KEPT_S = 0.01
"""Audio with no speech at all still keeps this much, so the output is never empty."""


class InvalidCutListError(AudioError, ValueError):
    """A cut list that does not tile its source, or cannot be rendered as stated."""


class _HasInterval(Protocol):
    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch ``[start_s, end_s]`` of the source audio and what happens to it.

    ``reason`` for ``keep``: ``"speech"`` (audio left as it was, short pauses included) or
    ``"pause"`` (the part of a shortened pause, or of leading/trailing silence, that stays).
    For ``remove``: ``"filler"``, ``"pause"`` (the middle of a long pause),
    ``"leading_silence"`` or ``"trailing_silence"``.
    """

    start_s: float
    end_s: float
    action: Action
    reason: str
    text: str = ""
    """For a removed filler: the filler words it takes ("um", "uh um")."""
    confidence: float | None = None
    """For a removed filler: the lowest detection confidence among its words, for review."""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def kept(self) -> bool:
        return self.action == "keep"


@dataclass(frozen=True, slots=True)
class _Run:
    """A maximal stretch of consecutive kept spans and where it plays in the output."""

    src_start_s: float
    src_end_s: float
    out_start_s: float
    exact_from_s: float  # source times in [exact_from_s, exact_to_s] map exactly
    exact_to_s: float


@dataclass(frozen=True)
class CutList:
    """Keep/remove spans tiling ``[0, source_duration_s]``: sorted, contiguous, none empty.

    Attributes:
        spans: the spans in source order.
        source_duration_s: duration of the source audio in seconds.
        crossfade_ms: length of the crossfade at every join between kept runs.
        settings: the parameters the list was built with (informational).

    Raises:
        InvalidCutListError: the spans do not tile the source exactly, a reason is unknown,
            or a kept run is too short for the crossfades at its ends.
    """

    spans: tuple[Span, ...]
    source_duration_s: float
    crossfade_ms: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spans", tuple(self.spans))
        _validate(self)

    # ----------------------------------------------------------------- views

    @property
    def crossfade_s(self) -> float:
        return self.crossfade_ms / 1000.0

    @property
    def kept_spans(self) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.action == "keep")

    @property
    def removed_spans(self) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.action == "remove")

    @property
    def joins(self) -> int:
        """Number of crossfaded joins: kept runs minus one (zero if nothing is kept)."""
        return max(0, len(self._runs) - 1)

    @property
    def kept_duration_s(self) -> float:
        """Duration of the rendered audio: kept spans minus one crossfade per join."""
        runs = self._runs
        if not runs:
            return 0.0
        last = runs[-1]
        return last.out_start_s + (last.src_end_s - last.src_start_s)

    @property
    def removed_s(self) -> float:
        """Seconds of source audio removed (crossfade overlaps not counted)."""
        return sum(s.duration_s for s in self.removed_spans)

    def removed_s_by_reason(self) -> dict[str, float]:
        """Seconds removed per removal reason (only reasons that occur)."""
        totals: dict[str, float] = {}
        for span in self.removed_spans:
            totals[span.reason] = totals.get(span.reason, 0.0) + span.duration_s
        return totals

    @cached_property
    def _runs(self) -> tuple[_Run, ...]:
        return _kept_runs(self.spans, self.crossfade_s)

    @cached_property
    def _run_starts(self) -> list[float]:
        return [run.src_start_s for run in self._runs]

    @cached_property
    def _span_starts(self) -> list[float]:
        return [span.start_s for span in self.spans]

    @property
    def kept_runs_s(self) -> tuple[tuple[float, float, float], ...]:
        """``(source_start_s, source_end_s, output_start_s)`` of every kept run, in order.

        Consecutive runs overlap by one crossfade in the output.
        """
        return tuple((r.src_start_s, r.src_end_s, r.out_start_s) for r in self._runs)

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CUT_LIST_FORMAT_VERSION,
            "source_duration_s": self.source_duration_s,
            "kept_duration_s": self.kept_duration_s,
            "crossfade_ms": self.crossfade_ms,
            "settings": dict(self.settings),
            "removed_s_by_reason": self.removed_s_by_reason(),
            "spans": [_span_dict(s) for s in self.spans],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CutList:
        """Inverse of :meth:`to_dict`; derived fields (``kept_duration_s``,
        ``removed_s_by_reason``) are recomputed, not read.

        Raises:
            InvalidCutListError: unknown version, missing fields, or invalid spans.
        """
        try:
            version = int(data.get("version", CUT_LIST_FORMAT_VERSION))
            if version != CUT_LIST_FORMAT_VERSION:
                raise InvalidCutListError(f"unsupported cut list version {version}")
            spans = tuple(
                Span(
                    start_s=float(s["start_s"]),
                    end_s=float(s["end_s"]),
                    action=s["action"],
                    reason=str(s["reason"]),
                    text=str(s.get("text", "")),
                    confidence=None if s.get("confidence") is None else float(s["confidence"]),
                )
                for s in data["spans"]
            )
            return cls(
                spans=spans,
                source_duration_s=float(data["source_duration_s"]),
                crossfade_ms=float(data["crossfade_ms"]),
                settings=dict(data.get("settings", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidCutListError):
                raise
            raise InvalidCutListError(f"malformed cut list: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> CutList:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidCutListError(f"cut list is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidCutListError("cut list JSON must be an object")
        return cls.from_dict(data)


def _validate(cut_list: CutList) -> None:
    duration = cut_list.source_duration_s
    if not (math.isfinite(duration) and duration > 0):
        raise InvalidCutListError(f"source_duration_s must be positive, got {duration}")
    if not (math.isfinite(cut_list.crossfade_ms) and cut_list.crossfade_ms >= 0):
        raise InvalidCutListError(f"crossfade_ms must not be negative, got {cut_list.crossfade_ms}")
    spans = cut_list.spans
    if not spans:
        raise InvalidCutListError("a cut list needs at least one span")
    expected_start = 0.0
    for span in spans:
        if span.action == "keep":
            if span.reason not in KEEP_REASONS:
                raise InvalidCutListError(f"unknown keep reason {span.reason!r}")
        elif span.action == "remove":
            if span.reason not in REMOVE_REASONS:
                raise InvalidCutListError(f"unknown remove reason {span.reason!r}")
        else:
            raise InvalidCutListError(f"unknown action {span.action!r}")
        if span.start_s != expected_start:
            raise InvalidCutListError(
                f"spans must tile the source: a span starts at {span.start_s}, "
                f"expected {expected_start}"
            )
        if not span.end_s > span.start_s:
            raise InvalidCutListError(f"empty or reversed span {span.start_s} .. {span.end_s}")
        expected_start = span.end_s
    if expected_start != duration:
        raise InvalidCutListError(
            f"spans end at {expected_start}, the source at {duration}"
        )
    cf = cut_list.crossfade_s
    runs = _merge_kept(spans)
    for i, (start, end) in enumerate(runs):
        fades = (i > 0) + (i < len(runs) - 1)
        if end - start < fades * cf - _RUN_LENGTH_TOLERANCE_S:
            raise InvalidCutListError(
                f"kept audio {start:.3f} .. {end:.3f} s is shorter than its "
                f"{fades} crossfade(s) of {cut_list.crossfade_ms} ms"
            )


def _merge_kept(spans: Sequence[Span]) -> list[tuple[float, float]]:
    runs: list[tuple[float, float]] = []
    for span in spans:
        if span.action != "keep":
            continue
        if runs and runs[-1][1] == span.start_s:
            runs[-1] = (runs[-1][0], span.end_s)
        else:
            runs.append((span.start_s, span.end_s))
    return runs


def _kept_runs(spans: Sequence[Span], crossfade_s: float) -> tuple[_Run, ...]:
    merged = _merge_kept(spans)
    runs: list[_Run] = []
    out = 0.0
    half = crossfade_s / 2.0
    for i, (start, end) in enumerate(merged):
        if i > 0:
            out -= crossfade_s
        runs.append(
            _Run(
                src_start_s=start,
                src_end_s=end,
                out_start_s=out,
                exact_from_s=start + half if i > 0 else start,
                exact_to_s=end - half if i < len(merged) - 1 else end,
            )
        )
        out += end - start
    return tuple(runs)


# --------------------------------------------------------------------------- interval sets


def _union(
    intervals: Iterable[tuple[float, float]], *, join_touching: bool = True
) -> list[tuple[float, float]]:
    """Sorted union; overlapping (and, with ``join_touching``, touching) intervals merge.
    Points are kept."""
    result: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if result and (start < result[-1][1] or (join_touching and start == result[-1][1])):
            if end > result[-1][1]:
                result[-1] = (result[-1][0], end)
        else:
            result.append((start, end))
    return result


def _subtract(
    base: Sequence[tuple[float, float]], cut: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """``base`` minus ``cut`` (both sorted and disjoint); pieces of zero length dropped.

    A zero-length interval in ``cut`` splits ``base`` at that point.
    """
    result: list[tuple[float, float]] = []
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


def _intersect(
    intervals: Sequence[tuple[float, float]], lo: float, hi: float
) -> list[tuple[float, float]]:
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


def _touches(intervals: Sequence[tuple[float, float]], lo: float, hi: float) -> bool:
    """Whether any of the sorted, disjoint ``intervals`` meets the closed range ``[lo, hi]``."""
    # Of the intervals starting at or before ``hi``, the last one reaches furthest.
    i = bisect.bisect_right(intervals, (hi, math.inf))
    return i > 0 and intervals[i - 1][1] >= lo


def _clip(item: _HasInterval, duration_s: float) -> tuple[float, float] | None:
    start, end = float(item.start_s), float(item.end_s)
    if math.isnan(start) or math.isnan(end):
        raise ValueError(f"interval with NaN time: {item!r}")
    if end < start:
        start, end = end, start
    start, end = max(0.0, start), min(duration_s, end)
    if end < start:
        return None
    return start, end


# --------------------------------------------------------------------------- building


@dataclass(frozen=True, slots=True)
class _Gap:
    """A stretch with no protected speech: silence and/or removable fillers."""

    start_s: float
    end_s: float
    fillers: tuple[tuple[float, float], ...]
    left_quiet_s: float  # silence touching the gap's start (before the first filler)
    right_quiet_s: float  # silence touching the gap's end (after the last filler)
    longest_quiet_s: float  # longest stretch without a filler

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def _gaps(
    *,
    protected: list[tuple[float, float]],
    fillers: list[tuple[float, float]],
    quiet: list[tuple[float, float]],
    duration_s: float,
) -> list[_Gap]:
    # Pieces that only touch stay apart here: a zero-length word may sit between them.
    merged = _union(fillers + quiet, join_touching=False)
    # Join neighbours separated by a sliver no word lies in.
    joined: list[tuple[float, float]] = []
    for start, end in merged:
        if (
            joined
            and start - joined[-1][1] < _JOIN_TOLERANCE_S
            and not _touches(protected, joined[-1][1], start)
        ):
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    # A sliver at the very start or end of the audio belongs to the gap next to it.
    if (
        joined
        and 0.0 < joined[0][0] < _JOIN_TOLERANCE_S
        and not _touches(protected, 0.0, joined[0][0])
    ):
        joined[0] = (0.0, joined[0][1])
    if (
        joined
        and 0.0 < duration_s - joined[-1][1] < _JOIN_TOLERANCE_S
        and not _touches(protected, joined[-1][1], duration_s)
    ):
        joined[-1] = (joined[-1][0], duration_s)

    gaps = []
    for start, end in joined:
        inner_fillers = _intersect(fillers, start, end)
        quiet_runs = _subtract([(start, end)], inner_fillers)
        left = quiet_runs[0][1] - start if quiet_runs and quiet_runs[0][0] == start else 0.0
        right = end - quiet_runs[-1][0] if quiet_runs and quiet_runs[-1][1] == end else 0.0
        longest = max((e - s for s, e in quiet_runs), default=0.0)
        gaps.append(
            _Gap(
                start_s=start,
                end_s=end,
                fillers=tuple(inner_fillers),
                left_quiet_s=left,
                right_quiet_s=right,
                longest_quiet_s=longest,
            )
        )
    return gaps


def _clamp(value: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, value))


def build_cut_list(
    *,
    words: Sequence[Word],
    silences: Sequence[_HasInterval],
    duration_s: float,
    max_pause_ms: float = 700.0,
    margin_ms: float = 120.0,
    crossfade_ms: float = 20.0,
    remove_fillers: bool = True,
    min_cut_ms: float = 50.0,
) -> CutList:
    """Decide what to cut from an episode.

    A *gap* is a stretch free of (non-filler) words: a silence, a removable filler, or
    several of them joined (with the silence around a filler). What happens to a gap:

    - Before the first word (leading) or after the last (trailing): trimmed so that
      ``margin_ms`` of it stays next to the speech.
    - Between words, with a filler to remove or longer than ``max_pause_ms``: its middle is
      removed. What stays is a pause as long as the longest filler-free stretch of the
      gap, at most ``max_pause_ms`` (as heard after the crossfade), split over both ends and
      at least ``margin_ms`` (where the gap has that much silence) next to each word. A
      filler between two pauses thus leaves one pause, not both.
    - Anything else (short pauses, fillers when ``remove_fillers`` is false) stays.

    A cut never enters a non-filler word: silences overlapping words are clipped to the
    word boundaries, and every cut keeps at least one crossfade (plus 1 ms) of the gap next
    to a word, so the crossfade never touches a word. Cuts that would remove less than
    ``min_cut_ms`` are not made.

    Args:
        words: the transcript's words (times in seconds, any order, may overlap).
        silences: silent stretches (anything with ``start_s``/``end_s``), e.g. from
            :func:`pod_audio.silence.detect_silences`.
        duration_s: duration of the source audio in seconds (> 0).
        max_pause_ms: longest pause left in the output, in milliseconds.
        margin_ms: silence kept next to speech at every cut, in milliseconds.
        crossfade_ms: crossfade at every join, in milliseconds.
        remove_fillers: cut out words marked ``is_filler``.
        min_cut_ms: smallest removal worth a cut, in milliseconds.

    Returns:
        The :class:`CutList`.

    Raises:
        ValueError: a negative or non-finite setting, a non-positive duration, NaN times.
    """
    for name, value in (
        ("max_pause_ms", max_pause_ms),
        ("margin_ms", margin_ms),
        ("crossfade_ms", crossfade_ms),
        ("min_cut_ms", min_cut_ms),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {value}")
    duration = float(duration_s)
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration_s must be positive, got {duration_s}")

    cf = crossfade_ms / 1000.0
    max_pause = max_pause_ms / 1000.0
    margin = margin_ms / 1000.0
    min_cut = max(min_cut_ms / 1000.0, _TILE_TOLERANCE_S)
    settings = {
        "max_pause_ms": float(max_pause_ms),
        "margin_ms": float(margin_ms),
        "crossfade_ms": float(crossfade_ms),
        "remove_fillers": bool(remove_fillers),
        "min_cut_ms": float(min_cut_ms),
    }

    protected_raw, filler_raw = [], []
    for word in words:
        clipped = _clip(word, duration)
        if clipped is None:
            continue
        if remove_fillers and word.is_filler:
            filler_raw.append(clipped)
        else:
            protected_raw.append(clipped)
    protected = _union(protected_raw)
    fillers = _subtract(_union(filler_raw), protected)
    quiet = _subtract(
        _union(c for c in (_clip(s, duration) for s in silences) if c is not None), protected
    )

    guard = cf + _MIN_GUARD_S  # audio kept between a word and any cut
    # Each cut gap yields pieces (start, end, action, base_reason) inside it.
    pieces: list[tuple[float, float, Action, str]] = []
    for gap in _gaps(protected=protected, fillers=fillers, quiet=quiet, duration_s=duration):
        # Leading/trailing only with no word (not even a zero-length one) before/after it.
        at_start = gap.start_s <= 0.0 and not _touches(protected, 0.0, gap.start_s)
        at_end = gap.end_s >= duration and not _touches(protected, gap.end_s, duration)
        length = gap.length_s
        if at_start and at_end:  # no speech at all: keep a margin's worth
            keep = min(length, max(margin, cf, _MIN_KEPT_S))
            cut = (gap.start_s + keep, gap.end_s, "trailing_silence")
        elif at_start:
            keep = min(length, max(guard, min(margin, gap.right_quiet_s)))
            cut = (gap.start_s, gap.end_s - keep, "leading_silence")
        elif at_end:
            keep = min(length, max(guard, min(margin, gap.left_quiet_s)))
            cut = (gap.start_s + keep, gap.end_s, "trailing_silence")
        else:
            if not gap.fillers and length <= max_pause:
                continue
            pause = min(max_pause, gap.longest_quiet_s)
            want = pause + cf  # the join's crossfade takes one cf back out
            lo_l = max(guard, min(margin, gap.left_quiet_s))
            hi_l = max(guard, gap.left_quiet_s)
            lo_r = max(guard, min(margin, gap.right_quiet_s))
            hi_r = max(guard, gap.right_quiet_s)
            left = _clamp(want / 2.0, lo_l, hi_l)
            right = _clamp(want - left, lo_r, hi_r)
            left = _clamp(want - right, lo_l, hi_l)
            cut = (gap.start_s + left, gap.end_s - right, "pause")
        cut_start, cut_end, reason = cut
        if cut_end - cut_start < min_cut:
            continue
        if cut_start > gap.start_s:
            pieces.append((gap.start_s, cut_start, "keep", "pause"))
        for start, end, is_filler in _split_by_fillers(cut_start, cut_end, gap.fillers):
            pieces.append((start, end, "remove", "filler" if is_filler else reason))
        if cut_end < gap.end_s:
            pieces.append((cut_end, gap.end_s, "keep", "pause"))

    return CutList(
        spans=_annotate_fillers(
            _tile(pieces, duration), [w for w in words if remove_fillers and w.is_filler]
        ),
        source_duration_s=duration,
        crossfade_ms=float(crossfade_ms),
        settings=settings,
    )


def _split_by_fillers(
    start: float, end: float, fillers: Sequence[tuple[float, float]]
) -> list[tuple[float, float, bool]]:
    """``[start, end]`` cut into contiguous pieces, flagged whether each is a filler."""
    inner = _intersect(fillers, start, end)
    pieces: list[tuple[float, float, bool]] = []
    pos = start
    for f_start, f_end in inner:
        if f_start > pos:
            pieces.append((pos, f_start, False))
        pieces.append((f_start, f_end, True))
        pos = f_end
    if end > pos:
        pieces.append((pos, end, False))
    return pieces


def _span_dict(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "start_s": span.start_s, "end_s": span.end_s, "action": span.action, "reason": span.reason,
    }
    if span.reason == "filler":
        out["text"] = span.text
        out["confidence"] = span.confidence
    return out


def _annotate_fillers(spans: Sequence[Span], filler_words: Sequence[Any]) -> tuple[Span, ...]:
    """Removed filler spans with the words they take and the least sure detection."""
    out: list[Span] = []
    for span in spans:
        if span.action == "remove" and span.reason == "filler":
            taken = [
                w for w in filler_words
                if min(span.end_s, w.end_s) > max(span.start_s, w.start_s)
            ]
            confidences = [float(w.confidence) for w in taken]
            span = replace(
                span,
                text=" ".join(w.text for w in taken),
                confidence=round(min(confidences), 3) if confidences else None,
            )
        out.append(span)
    return tuple(out)


def _tile(pieces: list[tuple[float, float, Action, str]], duration: float) -> tuple[Span, ...]:
    """Spans tiling ``[0, duration]``: the given pieces, ``keep/speech`` in between, adjacent
    spans of the same action and reason merged, float-noise slivers folded into a neighbour."""
    raw: list[tuple[float, float, Action, str]] = []
    pos = 0.0
    for start, end, action, reason in sorted(pieces):
        if start > pos:
            raw.append((pos, start, "keep", "speech"))
        raw.append((max(start, pos), end, action, reason))
        pos = max(pos, end)
    if duration > pos:
        raw.append((pos, duration, "keep", "speech"))

    spans: list[list[Any]] = []
    for start, end, action, reason in raw:
        if spans and spans[-1][2] == action and spans[-1][3] == reason:
            spans[-1][1] = end
        elif end - start <= _TILE_TOLERANCE_S:
            if spans:
                spans[-1][1] = end
            # else: the next span starts at 0.0 and takes it
        else:
            spans.append([spans[-1][1] if spans else 0.0, end, action, reason])
    return tuple(Span(s, e, a, r) for s, e, a, r in spans)


# --------------------------------------------------------------------------- remapping


def remap_time(t_s: float, cut_list: CutList) -> float | None:
    """Where source time ``t_s`` plays in the rendered audio, in seconds.

    ``None`` if ``t_s`` lies in a removed span (strictly inside it, or at a boundary with no
    kept span) or outside ``[0, source_duration_s]``. Span boundaries belong to the kept
    side. Non-decreasing in ``t_s``; the result lies in ``[0, cut_list.kept_duration_s]``.
    """
    if not (0.0 <= t_s <= cut_list.source_duration_s):
        return None
    runs = cut_list._runs
    i = bisect.bisect_right(cut_list._run_starts, t_s) - 1
    if i < 0 or t_s > runs[i].src_end_s:
        return None
    run = runs[i]
    t = _clamp(t_s, run.exact_from_s, run.exact_to_s)
    return run.out_start_s + (t - run.src_start_s)


def _overlaps_removed(start_s: float, end_s: float, cut_list: CutList) -> bool:
    spans = cut_list.spans
    i = max(0, bisect.bisect_right(cut_list._span_starts, start_s) - 1)
    while i < len(spans) and spans[i].start_s <= end_s:
        span = spans[i]
        if span.action == "remove":
            if min(end_s, span.end_s) > max(start_s, span.start_s):
                return True
            if start_s == end_s and span.start_s < start_s < span.end_s:
                return True
        i += 1
    return False


def remap_words(words: Iterable[Word], cut_list: CutList) -> list[Word]:
    """The words as they sit in the rendered audio, in source order.

    A word that overlaps a removed span (a cut filler) is dropped; every other word is
    shifted by its kept run's offset, so its duration is unchanged. Times are clipped to the
    source first, so a word ending a little past the end (recogniser rounding) is kept.
    """
    result = []
    for word in words:
        clipped = _clip(word, cut_list.source_duration_s)
        if clipped is None:
            continue
        start, end = clipped
        if _overlaps_removed(start, end, cut_list):
            continue
        new_start, new_end = remap_time(start, cut_list), remap_time(end, cut_list)
        if new_start is None or new_end is None:
            continue
        result.append(
            Word(
                text=word.text,
                start_s=new_start,
                end_s=new_end,
                confidence=word.confidence,
                is_filler=word.is_filler,
            )
        )
    return result


def remap_transcript(transcript: Transcript, cut_list: CutList) -> Transcript:
    """``transcript`` with :func:`remap_words` applied and the duration of the rendered
    audio (``cut_list.kept_duration_s``)."""
    return Transcript(
        words=tuple(remap_words(transcript.words, cut_list)),
        duration_s=cut_list.kept_duration_s,
        engine=transcript.engine,
        engine_version=transcript.engine_version,
        extra=dict(transcript.extra),
    )
