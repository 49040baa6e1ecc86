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
:func:`pod_audio.cut_builder.build_cut_list` decides the spans; it keeps every word at least
one crossfade away from a cut, so words never fall in a crossfade and keep their exact
durations. Every exporter (rendering, subtitles, chapters, the EDL, labels and the edit
picture) reads this one timeline.

See ``docs/cleaning.md`` for what is cut and why, and the JSON format.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pod_audio.errors import AudioError
from pod_audio.intervals import clamp, clip
from pod_audio.transcript import Transcript, Word

__all__ = [
    "CUT_LIST_FORMAT_VERSION",
    "CutList",
    "InvalidCutListError",
    "KEEP_REASONS",
    "REMOVE_REASONS",
    "Span",
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

_RUN_LENGTH_TOLERANCE_S = 1e-6


class InvalidCutListError(AudioError, ValueError):
    """A cut list that does not tile its source, or cannot be rendered as stated."""


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


def _span_dict(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "start_s": span.start_s, "end_s": span.end_s, "action": span.action, "reason": span.reason,
    }
    if span.reason == "filler":
        out["text"] = span.text
        out["confidence"] = span.confidence
    return out



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
    t = clamp(t_s, run.exact_from_s, run.exact_to_s)
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
        clipped = clip(word, cut_list.source_duration_s)
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
