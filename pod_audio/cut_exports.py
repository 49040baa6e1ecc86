"""What a cut list removed, for a person to review and for an editor to open.

Everything here reads one :class:`~pod_audio.cuts.CutList` (and the transcript it was built
from); nothing recomputes the edit:

- :func:`review_removed_spans`: one row per removed span, with the words it takes, the
  least sure of their confidences, the words on either side and where the cut lands in the
  cleaned audio.
- :func:`audacity_labels`: an Audacity label track of the removed spans on the **raw**
  timeline (File → Import → Labels… next to the raw audio).
- :func:`cmx3600_edl`: a CMX 3600 edit decision list of the **cleaned** timeline: one cut
  event per kept run of the raw audio, record times being the times in ``cleaned.flac``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from pod_audio.cuts import CutList, Span
from pod_audio.errors import AudioError
from pod_audio.transcript import Word

__all__ = [
    "EdlError",
    "RemovedSpanReview",
    "audacity_labels",
    "cmx3600_edl",
    "review_removed_spans",
    "timecode",
]

EDL_FRAME_RATES: frozenset[int] = frozenset({24, 25, 30})
"""Non-drop-frame rates the EDL is written at."""
_MAX_EDL_EVENTS = 999
_REASON_LABELS = {
    "filler": "filler",
    "pause": "pause",
    "leading_silence": "leading silence",
    "trailing_silence": "trailing silence",
}


class EdlError(AudioError, ValueError):
    """The cut list cannot be written as a CMX 3600 EDL (too many events, bad frame rate)."""


@dataclass(frozen=True, slots=True)
class RemovedSpanReview:
    """One removed span as a reviewer reads it. Times in seconds."""

    number: int
    """1-based, in source order among the removed spans."""
    start_s: float
    """On the raw timeline."""
    end_s: float
    reason: str
    words: str
    """The words the span takes ("um", "uh um"); empty for silence."""
    confidence: float | None
    """The lowest confidence among those words; ``None`` when it takes none."""
    before: str
    """The word spoken just before the span (empty at the start)."""
    after: str
    """The word spoken just after it (empty at the end)."""
    cleaned_at_s: float
    """Where the cut lands in the cleaned audio (the centre of its crossfade)."""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def label(self) -> str:
        """``filler "uh um" (conf 0.62)``, ``pause 1.24 s``, ``leading silence 0.80 s``."""
        reason = _REASON_LABELS.get(self.reason, self.reason)
        if self.words:
            confidence = "" if self.confidence is None else f" (conf {self.confidence:.2f})"
            return f'{reason} "{self.words}"{confidence}'
        return f"{reason} {self.duration_s:.2f} s"


def _words_around(
    span: Span, ordered: Sequence[Word], starts: Sequence[float]
) -> tuple[list[Word], str, str]:
    """The words ``span`` overlaps, and the texts of the words just before and after it."""
    first_after = bisect.bisect_left(starts, span.end_s - 1e-9)
    i = first_after - 1
    taken: list[Word] = []
    while i >= 0 and ordered[i].end_s > span.start_s + 1e-9:
        taken.append(ordered[i])
        i -= 1
    before = ordered[i].text if i >= 0 else ""
    after = ordered[first_after].text if first_after < len(ordered) else ""
    return taken[::-1], before, after


def _cut_point_s(span: Span, runs: Sequence[tuple[float, float, float]], crossfade_s: float) -> float:
    """Where ``span``'s removal shows in the cleaned audio: the cut point (crossfade centre)
    after the last kept run that ends before it; 0 before the first run."""
    ends = [src_end_s for _, src_end_s, _ in runs]
    i = bisect.bisect_right(ends, span.start_s + 1e-9) - 1
    if i < 0:
        return 0.0
    src_start_s, src_end_s, out_start_s = runs[i]
    end_s = out_start_s + (src_end_s - src_start_s)
    return end_s - crossfade_s / 2 if i < len(runs) - 1 else end_s


def review_removed_spans(cut_list: CutList, words: Sequence[Word]) -> list[RemovedSpanReview]:
    """Every removed span of ``cut_list`` with what it removes, in source order.

    ``words`` are the transcript the cut list was built from (raw timeline). A filler span
    keeps the text and confidence the cut list recorded; any other span gets the words it
    overlaps (normally none: pauses and silences hold no words).
    """
    ordered = sorted(words, key=lambda w: (w.start_s, w.end_s))
    starts = [w.start_s for w in ordered]
    runs = cut_list.kept_runs_s
    reviews: list[RemovedSpanReview] = []
    for span in cut_list.removed_spans:
        taken, before, after = _words_around(span, ordered, starts)
        text = span.text or " ".join(w.text for w in taken)
        confidence = span.confidence
        if confidence is None and taken:
            confidence = round(min(w.confidence for w in taken), 3)
        reviews.append(
            RemovedSpanReview(
                number=len(reviews) + 1,
                start_s=span.start_s,
                end_s=span.end_s,
                reason=span.reason,
                words=text,
                confidence=confidence,
                before=before,
                after=after,
                cleaned_at_s=round(_cut_point_s(span, runs, cut_list.crossfade_s), 6),
            )
        )
    return reviews


def audacity_labels(reviews: Sequence[RemovedSpanReview]) -> str:
    """An Audacity label track: ``start<TAB>end<TAB>label`` per removed span, raw timeline,
    seconds with six decimals. Tabs and line breaks in labels become spaces."""
    lines = []
    for review in reviews:
        label = " ".join(f"{review.number}: {review.label}".split())
        lines.append(f"{review.start_s:.6f}\t{review.end_s:.6f}\t{label}")
    return "".join(line + "\n" for line in lines)


def timecode(frames: int, *, fps: int) -> str:
    """``HH:MM:SS:FF`` of a non-negative frame count at ``fps`` (non-drop frame)."""
    if frames < 0:
        raise EdlError(f"negative timecode: {frames} frames")
    seconds, ff = divmod(frames, fps)
    minutes, ss = divmod(seconds, 60)
    hh, mm = divmod(minutes, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}"


def _edl_events(cut_list: CutList) -> list[tuple[float, float, float]]:
    """``(source_in_s, source_out_s, record_in_s)`` of each kept run between its cut points:
    a run that follows a join starts half a crossfade late, one that precedes a join ends
    half a crossfade early, so the events are straight cuts at the cut points."""
    runs = cut_list.kept_runs_s
    half_s = cut_list.crossfade_s / 2
    events = []
    for i, (src_start_s, src_end_s, out_start_s) in enumerate(runs):
        head_s = half_s if i > 0 else 0.0
        tail_s = half_s if i < len(runs) - 1 else 0.0
        events.append((src_start_s + head_s, src_end_s - tail_s, out_start_s + head_s))
    return events


def cmx3600_edl(
    cut_list: CutList, *, title: str, clip_name: str, channels: int = 2, fps: int = 30
) -> str:
    """The cleaned timeline as a CMX 3600 EDL: one audio cut event per kept run.

    Source times are on the raw file ``clip_name`` (reel ``AX``), record times on the cleaned
    audio; both are whole frames at ``fps`` (non-drop). Record times are rounded on their
    own, so a record cut is never more than half a frame from the cleaned audio's, whatever
    the number of events; each event's source out follows from its record length. The
    crossfades the cleaned audio has at every cut are noted in comments, not as dissolves.

    Raises:
        EdlError: ``fps`` not in :data:`EDL_FRAME_RATES`, or more than 999 events.
    """
    if fps not in EDL_FRAME_RATES:
        raise EdlError(f"EDL frame rate must be one of {sorted(EDL_FRAME_RATES)}, not {fps}")
    events = _edl_events(cut_list)
    if len(events) > _MAX_EDL_EVENTS:
        raise EdlError(f"{len(events)} kept runs: a CMX 3600 EDL holds at most {_MAX_EDL_EVENTS}")
    track = "A" if channels == 1 else "AA"
    safe_title = " ".join(title.split())[:70] or "episode"
    lines = [f"TITLE: {safe_title}", "FCM: NON-DROP FRAME", ""]
    for number, (src_in_s, src_out_s, rec_in_s) in enumerate(events, start=1):
        rec_in = round(rec_in_s * fps)
        rec_out = round((rec_in_s + src_out_s - src_in_s) * fps)
        src_in = round(src_in_s * fps)
        src_out = src_in + (rec_out - rec_in)
        lines.append(
            f"{number:03d}  AX       {track:<5} C        "
            f"{timecode(src_in, fps=fps)} {timecode(src_out, fps=fps)} "
            f"{timecode(rec_in, fps=fps)} {timecode(rec_out, fps=fps)}"
        )
        lines.append(f"* FROM CLIP NAME: {' '.join(clip_name.split())}")
        if number < len(events):
            lines.append(f"* CUT: crossfade {cut_list.crossfade_ms:g} ms centred here")
        lines.append("")
    return "\n".join(lines)

