"""ID3v2.4 tags of a finished episode MP3 (via mutagen).

Frames written: ``TIT2`` (title), ``TALB`` and ``TPE1`` (the show, as album and artist, as
podcast apps expect), ``TDRC`` (release date), ``TLEN`` (duration in milliseconds) and, if
given, ``COMM`` (comment, language ``eng``). Any tag already in the file is replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime

from mutagen.id3 import COMM, ID3, TALB, TDRC, TIT2, TLEN, TPE1, ID3NoHeaderError

__all__ = ["EpisodeTags", "read_id3", "write_id3"]


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
