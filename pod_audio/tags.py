"""ID3v2.4 tags of a finished episode MP3 (via mutagen).

Frames written: ``TIT2`` (title), ``TALB`` and ``TPE1`` (the show, as album and artist, as
podcast apps expect), ``TDRC`` (release date), ``TLEN`` (duration in milliseconds) and, if
given, ``COMM`` (comment, language ``eng``). Any tag already in the file is replaced.

Chapters (:func:`write_chapters`) are ID3v2 chapter frames: one ``CHAP`` per chapter
(``chp0``, ``chp1``, …; start and end in milliseconds, the title in a ``TIT2`` sub-frame) and
one top-level, ordered ``CTOC`` (``toc``) listing them in order, as podcast players read them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime

from mutagen.id3 import CHAP, COMM, CTOC, ID3, TALB, TDRC, TIT2, TLEN, TPE1, CTOCFlags, ID3NoHeaderError

__all__ = ["EpisodeTags", "Id3Chapter", "read_chapters", "read_id3", "write_chapters", "write_id3"]


@dataclass(frozen=True)
class EpisodeTags:
    """Tags of one episode.

    Attributes:
        title: episode title.
        show: podcast (show) name.
        date: release date, ISO 8601 (``"2026-11-29"``, or a date-time).
        duration_s: duration in seconds (stored in ``TLEN`` as whole milliseconds).
        comment: free text (show notes, a link), or ``None``.
    """

    title: str
    show: str
    date: str
    duration_s: float
    comment: str | None = None

    def __post_init__(self) -> None:
        _check_iso_date(self.date)
        if self.duration_s < 0:
            raise ValueError(f"duration_s must not be negative, got {self.duration_s}")


def _check_iso_date(text: str) -> None:
    try:
        if len(text) == 10:
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"date must be ISO 8601 (YYYY-MM-DD), got {text!r}") from None


def write_id3(path: str | os.PathLike[str], tags: EpisodeTags) -> None:
    """Write ``tags`` to the MP3 at ``path`` as ID3v2.4, replacing any existing tag."""
    id3 = ID3()
    id3.add(TIT2(encoding=3, text=[tags.title]))
    id3.add(TALB(encoding=3, text=[tags.show]))
    id3.add(TPE1(encoding=3, text=[tags.show]))
    id3.add(TDRC(encoding=3, text=[tags.date]))
    id3.add(TLEN(encoding=3, text=[str(int(round(tags.duration_s * 1000)))]))
    if tags.comment is not None:
        id3.add(COMM(encoding=3, lang="eng", desc="", text=[tags.comment]))
    id3.save(os.fspath(path), v2_version=4)


def read_id3(path: str | os.PathLike[str]) -> EpisodeTags:
    """Read the tags :func:`write_id3` writes.

    Raises:
        LookupError: the file has no ID3 tag, or it lacks title, show or date.
    """
    try:
        id3 = ID3(os.fspath(path))
    except ID3NoHeaderError:
        raise LookupError(f"{os.fspath(path)} has no ID3 tag") from None

    def text(frame_id: str) -> str | None:
        frame = id3.get(frame_id)
        return str(frame.text[0]) if frame is not None and frame.text else None

    title = text("TIT2")
    show = text("TALB") or text("TPE1")
    released = text("TDRC")
    if title is None or show is None or released is None:
        fields = (("title", title), ("show", show), ("date", released))
        missing = [name for name, value in fields if value is None]
        raise LookupError(f"the ID3 tag lacks {', '.join(missing)}")
    length_ms = text("TLEN")
    comments = id3.getall("COMM")
    return EpisodeTags(
        title=title,
        show=show,
        date=released,
        duration_s=int(length_ms) / 1000.0 if length_ms and length_ms.isdigit() else 0.0,
        comment=str(comments[0].text[0]) if comments and comments[0].text else None,
    )


@dataclass(frozen=True)
class Id3Chapter:
    start_ms: int
    end_ms: int
    title: str


def write_chapters(
    path: str | os.PathLike[str], chapters: list[tuple[float, str]], *, duration_s: float
) -> None:
    """Replace the ``CHAP``/``CTOC`` frames of the MP3 at ``path`` (keeping its other
    frames) with ``chapters``: ``(start_s, title)`` in ascending order; each ends where the
    next starts, the last at ``duration_s``. An empty list removes the chapters."""
    id3 = ID3(os.fspath(path))
    id3.delall("CHAP")
    id3.delall("CTOC")
    if chapters:
        ids = [f"chp{i}" for i in range(len(chapters))]
        ends = [start for start, _ in chapters[1:]] + [duration_s]
        for element_id, (start_s, title), end_s in zip(ids, chapters, ends, strict=True):
            id3.add(CHAP(element_id=element_id, start_time=int(round(start_s * 1000)),
                         end_time=int(round(end_s * 1000)),
                         sub_frames=[TIT2(encoding=3, text=[title])]))
        id3.add(CTOC(element_id="toc", flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
                     child_element_ids=ids, sub_frames=[TIT2(encoding=3, text=["Chapters"])]))
    id3.save(os.fspath(path), v2_version=4)


def read_chapters(path: str | os.PathLike[str]) -> list[Id3Chapter]:
    """The chapters of the MP3 at ``path`` in the order its top-level ``CTOC`` lists them
    (by start time when it has none); empty without chapter frames."""
    try:
        id3 = ID3(os.fspath(path))
    except ID3NoHeaderError:
        return []
    chaps = {frame.element_id: frame for frame in id3.getall("CHAP")}
    tocs = [t for t in id3.getall("CTOC") if t.flags & CTOCFlags.TOP_LEVEL]
    order = list(tocs[0].child_element_ids) if tocs else sorted(chaps, key=lambda k: chaps[k].start_time)

    def title(frame: CHAP) -> str:
        tit2 = frame.sub_frames.get("TIT2")
        return str(tit2.text[0]) if tit2 is not None and tit2.text else ""

    return [Id3Chapter(chaps[k].start_time, chaps[k].end_time, title(chaps[k])) for k in order if k in chaps]
