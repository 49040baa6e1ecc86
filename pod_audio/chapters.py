"""Chapter marks: read on the raw recording's timeline, carried through the cut list onto the
final episode's, written as Podcasting 2.0 ``chapters.json``.

Marks come in two formats (UTF-8):

- an Audacity label file: one label per line, ``start<TAB>end<TAB>title``, times in seconds
  (``end`` is read and ignored; a point label has ``end == start``). Lines starting with
  ``\\`` (Audacity's spectral-selection lines) and blank lines are skipped;
- a Podcasting 2.0 chapters JSON: ``{"version": "1.2.0", "chapters": [{"startTime": s,
  "title": "…"}, …]}``.

Carrying (:func:`carry_through_cuts`), invariants of its result:

- a start in kept audio lands where that audio plays (:func:`pod_audio.cuts.remap_time`);
  a start inside a removed span moves to the span's end (where the kept audio resumes); a
  start after the last kept audio is dropped;
- every start is then shifted by the intro offset; the first chapter starts at 0 (it covers
  the intro); starts are whole milliseconds, strictly ascending; of two chapters that land
  on the same millisecond the later mark wins (the earlier would be empty).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pod_audio.cuts import CutList, remap_time
from pod_audio.errors import AudioInputError

__all__ = [
    "CHAPTERS_VERSION",
    "Chapter",
    "ChapterMarksError",
    "carry_through_cuts",
    "parse_marks",
    "to_chapters_json",
]

CHAPTERS_VERSION = "1.2.0"
MAX_TITLE_CHARS = 500
MAX_CHAPTERS = 1000


class ChapterMarksError(AudioInputError, ValueError):
    """A marks file that cannot be read; the message names the line (or the chapter)."""


@dataclass(frozen=True)
class Chapter:
    start_s: float
    title: str


def _title(raw: str, where: str) -> str:
    title = " ".join(raw.split())
    if not title:
        raise ChapterMarksError(f"{where}: the title is empty")
    if len(title) > MAX_TITLE_CHARS:
        raise ChapterMarksError(f"{where}: the title is {len(title)} characters; at most {MAX_TITLE_CHARS}")
    return title


def _start(raw: object, where: str, source_duration_s: float | None) -> float:
    try:
        start = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ChapterMarksError(f"{where}: start {str(raw)[:40]!r} is not a number of seconds") from None
    if not math.isfinite(start) or start < 0:
        raise ChapterMarksError(f"{where}: start {start} s is negative or not finite")
    if source_duration_s is not None and start > source_duration_s:
        raise ChapterMarksError(
            f"{where}: start {start:.3f} s is past the end of the recording ({source_duration_s:.3f} s)"
        )
    return start


def _audacity(text: str, source_duration_s: float | None) -> list[Chapter]:
    chapters = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        fields = line.split("\t")
        where = f"line {number}"
        if len(fields) < 3:
            raise ChapterMarksError(f"{where}: expected start<TAB>end<TAB>title, got {line[:60]!r}")
        start = _start(fields[0].strip(), where, source_duration_s)
        _start(fields[1].strip(), where, None)
        chapters.append(Chapter(start, _title("\t".join(fields[2:]), where)))
    return chapters


def _podcast_json(text: str, source_duration_s: float | None) -> list[Chapter]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChapterMarksError(f"line {exc.lineno}: not JSON: {exc.msg}") from None
    items = data.get("chapters") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ChapterMarksError('line 1: expected {"version": "1.2.0", "chapters": [...]}')
    chapters = []
    for number, item in enumerate(items, start=1):
        where = f"chapter {number}{_line_of(text, number)}"
        if not isinstance(item, dict) or "startTime" not in item or not isinstance(item.get("title"), str):
            raise ChapterMarksError(f"{where}: expected an object with startTime and title")
        chapters.append(Chapter(_start(item["startTime"], where, source_duration_s), _title(item["title"], where)))
    return chapters


def _line_of(text: str, number: int) -> str:
    """`` (line N)``: the line where the ``number``-th ``"startTime"`` of the JSON is."""
    pos = -1
    for _ in range(number):
        pos = text.find('"startTime"', pos + 1)
        if pos < 0:
            return ""
    return f" (line {text.count(chr(10), 0, pos) + 1})"


def parse_marks(data: bytes, *, fmt: str, source_duration_s: float | None = None) -> list[Chapter]:
    """The chapters in a marks file, sorted by start (raw timeline).

    ``fmt`` is ``"txt"`` (Audacity labels) or ``"json"`` (Podcasting 2.0). With
    ``source_duration_s``, a start past the end of the recording is an error.

    Raises:
        ChapterMarksError: not UTF-8, a malformed line, a start that is not a number,
            negative or past the end, an empty title or one over 500 characters, more than
            1000 chapters; the message names the line.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ChapterMarksError(f"line {line}: not UTF-8 text") from None
    if fmt == "txt":
        chapters = _audacity(text, source_duration_s)
    elif fmt == "json":
        chapters = _podcast_json(text, source_duration_s)
    else:
        raise ChapterMarksError(f"unknown marks format {fmt!r}; use .txt (Audacity labels) or .json")
    if len(chapters) > MAX_CHAPTERS:
        raise ChapterMarksError(f"{len(chapters)} chapters; at most {MAX_CHAPTERS}")
    return sorted(chapters, key=lambda c: c.start_s)


def _carried_s(start_s: float, cut_list: CutList) -> float | None:
    runs = cut_list.kept_runs_s
    i = bisect.bisect_left([end for _, end, _ in runs], start_s)
    if i == len(runs):
        return None  # after the last kept audio
    src_start, _, _ = runs[i]
    return remap_time(max(start_s, src_start), cut_list)


def carry_through_cuts(
    chapters: Sequence[Chapter], cut_list: CutList, *, offset_s: float
) -> list[Chapter]:
    """``chapters`` (raw timeline) on the final timeline; see the module docstring."""
    landed: dict[int, str] = {}
    for chapter in sorted(chapters, key=lambda c: c.start_s):
        out_s = _carried_s(chapter.start_s, cut_list)
        if out_s is not None:
            landed[round((out_s + offset_s) * 1000)] = chapter.title
    if not landed:
        return []
    starts = sorted(landed)
    result = [Chapter(0.0 if i == 0 else ms / 1000, landed[ms]) for i, ms in enumerate(starts)]
    return result


def to_chapters_json(chapters: Sequence[Chapter]) -> str:
    """Podcasting 2.0 chapters (``application/json+chapters``)."""
    items = [{"startTime": c.start_s, "title": c.title} for c in chapters]
    return json.dumps({"version": CHAPTERS_VERSION, "chapters": items}, ensure_ascii=False, indent=1)
