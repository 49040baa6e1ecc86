"""What to cut from an episode: :func:`build_cut_list` turns words and silences into a
:class:`~pod_audio.cuts.CutList`.

Invariants of every list built here: a cut never enters a non-filler word, and every cut
keeps at least one crossfade (plus 1 ms) of the gap next to a word, so words never fall in a
crossfade and keep their exact durations (what :func:`pod_audio.cuts.remap_time` relies
on). See ``docs/cleaning.md`` for what is cut and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypedDict

from pod_audio.cuts import Action, CutList, Span
from pod_audio.intervals import HasInterval, Interval, clamp, clip, intersect, subtract, touches, union
from pod_audio.transcript import Word

__all__ = ["CutSettings", "build_cut_list"]

_JOIN_TOLERANCE_S = 0.05
"""Removable stretches (silences, fillers) closer than this, with no word between them, are
one stretch: silence detection and word timings both have ~10 ms granularity, so a filler
and the silence after it rarely touch exactly."""
_TILE_TOLERANCE_S = 1e-9
"""Pieces shorter than this are float noise and are folded into a neighbour."""
_MIN_GUARD_S = 0.001
"""A cut stays at least a crossfade plus this far from a word: the crossfade, rounded to
whole samples, never reaches into the word, and even with no crossfade and no margin a
word of zero length keeps kept audio around it."""
_MIN_KEPT_S = 0.01
"""Audio with no speech at all still keeps this much, so the output is never empty."""

_Piece = tuple[float, float, Action, str]
"""``(start_s, end_s, action, reason)`` inside one gap."""
_Cut = tuple[float, float, str]
"""``(start_s, end_s, reason)``: the stretch of a gap to remove."""


class CutSettings(TypedDict, total=False):
    """The tuning of :func:`build_cut_list` (its keyword arguments and their meaning), for
    the functions that pass it on."""

    max_pause_ms: float
    margin_ms: float
    crossfade_ms: float
    remove_fillers: bool
    min_cut_ms: float


@dataclass(frozen=True, slots=True)
class _Gap:
    """A stretch with no protected speech: silence and/or removable fillers."""

    start_s: float
    end_s: float
    fillers: tuple[Interval, ...]
    left_quiet_s: float  # silence touching the gap's start (before the first filler)
    right_quiet_s: float  # silence touching the gap's end (after the last filler)
    longest_quiet_s: float  # longest stretch without a filler

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class _Limits:
    """The settings in seconds, as the decisions use them."""

    crossfade_s: float
    max_pause_s: float
    margin_s: float
    min_cut_s: float

    @property
    def guard_s(self) -> float:
        """Audio kept between a word and any cut."""
        return self.crossfade_s + _MIN_GUARD_S


def build_cut_list(
    *,
    words: Sequence[Word],
    silences: Sequence[HasInterval],
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
    settings = _checked_settings(max_pause_ms, margin_ms, crossfade_ms, remove_fillers, min_cut_ms)
    duration = _checked_duration(duration_s)
    limits = _Limits(
        crossfade_s=crossfade_ms / 1000.0,
        max_pause_s=max_pause_ms / 1000.0,
        margin_s=margin_ms / 1000.0,
        min_cut_s=max(min_cut_ms / 1000.0, _TILE_TOLERANCE_S),
    )
    protected, fillers = _word_intervals(words, duration, remove_fillers=remove_fillers)
    quiet = subtract(union(c for c in (clip(s, duration) for s in silences) if c is not None), protected)
    pieces: list[_Piece] = []
    for gap in _gaps(protected=protected, fillers=fillers, quiet=quiet, duration_s=duration):
        cut = _gap_cut(gap, limits, protected=protected, duration_s=duration)
        if cut is not None:
            pieces.extend(_gap_pieces(gap, cut, min_cut_s=limits.min_cut_s))
    return CutList(
        spans=_annotate_fillers(
            _tile(pieces, duration), [w for w in words if remove_fillers and w.is_filler]
        ),
        source_duration_s=duration,
        crossfade_ms=float(crossfade_ms),
        settings=settings,
    )


# --------------------------------------------------------------------------- inputs


def _checked_settings(
    max_pause_ms: float, margin_ms: float, crossfade_ms: float, remove_fillers: bool, min_cut_ms: float
) -> dict[str, Any]:
    """The settings as the cut list records them; ValueError for a negative or non-finite one."""
    for name, value in (
        ("max_pause_ms", max_pause_ms),
        ("margin_ms", margin_ms),
        ("crossfade_ms", crossfade_ms),
        ("min_cut_ms", min_cut_ms),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {value}")
    return {
        "max_pause_ms": float(max_pause_ms),
        "margin_ms": float(margin_ms),
        "crossfade_ms": float(crossfade_ms),
        "remove_fillers": bool(remove_fillers),
        "min_cut_ms": float(min_cut_ms),
    }


def _checked_duration(duration_s: float) -> float:
    duration = float(duration_s)
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    return duration


def _word_intervals(
    words: Sequence[Word], duration_s: float, *, remove_fillers: bool
) -> tuple[list[Interval], list[Interval]]:
    """``(protected, fillers)``: the words no cut may enter, and the removable fillers
    outside them; both sorted and disjoint, clipped to the audio."""
    protected_raw, filler_raw = [], []
    for word in words:
        clipped = clip(word, duration_s)
        if clipped is None:
            continue
        if remove_fillers and word.is_filler:
            filler_raw.append(clipped)
        else:
            protected_raw.append(clipped)
    protected = union(protected_raw)
    return protected, subtract(union(filler_raw), protected)


# --------------------------------------------------------------------------- gaps


def _gaps(
    *,
    protected: list[Interval],
    fillers: list[Interval],
    quiet: list[Interval],
    duration_s: float,
) -> list[_Gap]:
    """The gaps between protected words, each with its fillers and quiet stretches."""
    gaps = []
    stretches = _joined_stretches(protected=protected, fillers=fillers, quiet=quiet, duration_s=duration_s)
    for start, end in stretches:
        inner_fillers = intersect(fillers, start, end)
        quiet_runs = subtract([(start, end)], inner_fillers)
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


def _joined_stretches(
    *,
    protected: list[Interval],
    fillers: list[Interval],
    quiet: list[Interval],
    duration_s: float,
) -> list[Interval]:
    """Fillers and quiet stretches merged, neighbours a sliver apart (no word in it) joined,
    and a sliver at the very start or end of the audio given to the stretch next to it."""
    # Pieces that only touch stay apart here: a zero-length word may sit between them.
    merged = union(fillers + quiet, join_touching=False)
    joined: list[Interval] = []
    for start, end in merged:
        if (
            joined
            and start - joined[-1][1] < _JOIN_TOLERANCE_S
            and not touches(protected, joined[-1][1], start)
        ):
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    if (
        joined
        and 0.0 < joined[0][0] < _JOIN_TOLERANCE_S
        and not touches(protected, 0.0, joined[0][0])
    ):
        joined[0] = (0.0, joined[0][1])
    if (
        joined
        and 0.0 < duration_s - joined[-1][1] < _JOIN_TOLERANCE_S
        and not touches(protected, joined[-1][1], duration_s)
    ):
        joined[-1] = (joined[-1][0], duration_s)
    return joined


# --------------------------------------------------------------------------- decisions


def _gap_cut(
    gap: _Gap, limits: _Limits, *, protected: list[Interval], duration_s: float
) -> _Cut | None:
    """What to remove of one gap: trimmed at the start or end of the audio, shortened
    between words, or nothing."""
    # Leading/trailing only with no word (not even a zero-length one) before/after it.
    at_start = gap.start_s <= 0.0 and not touches(protected, 0.0, gap.start_s)
    at_end = gap.end_s >= duration_s and not touches(protected, gap.end_s, duration_s)
    length = gap.length_s
    if at_start and at_end:  # no speech at all: keep a margin's worth
        keep = min(length, max(limits.margin_s, limits.crossfade_s, _MIN_KEPT_S))
        return (gap.start_s + keep, gap.end_s, "trailing_silence")
    if at_start:
        keep = min(length, max(limits.guard_s, min(limits.margin_s, gap.right_quiet_s)))
        return (gap.start_s, gap.end_s - keep, "leading_silence")
    if at_end:
        keep = min(length, max(limits.guard_s, min(limits.margin_s, gap.left_quiet_s)))
        return (gap.start_s + keep, gap.end_s, "trailing_silence")
    return _pause_cut(gap, limits)


def _pause_cut(gap: _Gap, limits: _Limits) -> _Cut | None:
    """The middle of a gap between words that holds a filler or is longer than the longest
    pause; what stays is split over both ends, a margin (or what silence there is) next to
    each word."""
    if not gap.fillers and gap.length_s <= limits.max_pause_s:
        return None
    guard = limits.guard_s
    pause = min(limits.max_pause_s, gap.longest_quiet_s)
    want = pause + limits.crossfade_s  # the join's crossfade takes one cf back out
    lo_l = max(guard, min(limits.margin_s, gap.left_quiet_s))
    hi_l = max(guard, gap.left_quiet_s)
    lo_r = max(guard, min(limits.margin_s, gap.right_quiet_s))
    hi_r = max(guard, gap.right_quiet_s)
    left = clamp(want / 2.0, lo_l, hi_l)
    right = clamp(want - left, lo_r, hi_r)
    left = clamp(want - right, lo_l, hi_l)
    return (gap.start_s + left, gap.end_s - right, "pause")


def _gap_pieces(gap: _Gap, cut: _Cut, *, min_cut_s: float) -> list[_Piece]:
    """The gap as kept and removed pieces; none when the cut is too small to make."""
    cut_start, cut_end, reason = cut
    if cut_end - cut_start < min_cut_s:
        return []
    pieces: list[_Piece] = []
    if cut_start > gap.start_s:
        pieces.append((gap.start_s, cut_start, "keep", "pause"))
    for start, end, is_filler in _split_by_fillers(cut_start, cut_end, gap.fillers):
        pieces.append((start, end, "remove", "filler" if is_filler else reason))
    if cut_end < gap.end_s:
        pieces.append((cut_end, gap.end_s, "keep", "pause"))
    return pieces


def _split_by_fillers(
    start: float, end: float, fillers: Sequence[Interval]
) -> list[tuple[float, float, bool]]:
    """``[start, end]`` cut into contiguous pieces, flagged whether each is a filler."""
    inner = intersect(fillers, start, end)
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


# --------------------------------------------------------------------------- spans


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


def _tile(pieces: list[_Piece], duration: float) -> tuple[Span, ...]:
    """Spans tiling ``[0, duration]``: the given pieces, ``keep/speech`` in between, adjacent
    spans of the same action and reason merged, float-noise slivers folded into a neighbour."""
    raw: list[_Piece] = []
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
