"""What the catalog's units of work share: their times and status parameters, and the row
writes that more than one unit makes.

Invariants:

- Catalog times are tz-aware UTC; a naive time is refused (:func:`as_utc`). A unit fixes its
  times once, before its first attempt, so a retry can recognise its own earlier commit.
- Every status change writes one history row (:func:`add_history`); a new episode row is
  written with its first one, ``None -> <status>`` at its ``status_changed_at``
  (:func:`add_episode`), whether it is registered or restored.
- An upload record names the episode that has its bytes (:func:`add_upload`): the content
  hash is that episode's, since hashes are unique.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pod_resources.catalog.errors import EpisodeNotFoundError
from pod_resources.catalog.models import EpisodeRow, EpisodeStatus, StatusHistoryRow, UploadRow


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: catalog times must be tz-aware")
    return when.astimezone(UTC)


def status_set(
    statuses: EpisodeStatus | str | Collection[EpisodeStatus | str],
) -> frozenset[EpisodeStatus]:
    if isinstance(statuses, str):
        return frozenset({EpisodeStatus(statuses)})
    return frozenset(EpisodeStatus(status) for status in statuses)


def status_values(statuses: Collection[EpisodeStatus]) -> list[str]:
    """Plain strings for SQL parameters (drivers may adapt enums by member name)."""
    return sorted(status.value for status in statuses)


def of_upload_name(root_id: str) -> sa.ColumnElement[bool]:
    """Every version of the upload name whose version 1 is ``root_id``."""
    return sa.or_(EpisodeRow.episode_id == root_id, EpisodeRow.version_of == root_id)


def locked_episode(session: Session, episode_id: str) -> EpisodeRow:
    row = session.get(EpisodeRow, episode_id, with_for_update=True)
    if row is None:
        raise EpisodeNotFoundError(f"episode {episode_id!r} is not in the catalog")
    return row


def add_history(
    session: Session,
    episode_id: str,
    from_status: str | None,
    to_status: str,
    at: datetime,
    *,
    run_id: str | None = None,
    message: str | None = None,
) -> None:
    session.add(
        StatusHistoryRow(
            episode_id=episode_id,
            from_status=from_status,
            to_status=to_status,
            at=at,
            run_id=run_id,
            message=message,
        )
    )


def add_episode(session: Session, row: EpisodeRow, *, message: str | None) -> None:
    """Insert ``row`` and its first history entry, ``None -> <status>``, saying ``message``."""
    session.add(row)
    session.flush()
    add_history(session, row.episode_id, None, row.status, row.status_changed_at, message=message)


def add_upload(
    session: Session,
    episode: EpisodeRow,
    object_name: str,
    generation: int,
    *,
    seen_at: datetime,
    duplicate: bool = False,
) -> UploadRow:
    """Record that ``(object_name, generation)`` holds ``episode``'s bytes: its own upload, or
    with ``duplicate`` a copy of them that is not processed again."""
    upload = UploadRow(
        object_name=object_name,
        generation=generation,
        content_hash=episode.content_hash,
        episode_id=episode.episode_id,
        duplicate_of=episode.episode_id if duplicate else None,
        seen_at=seen_at,
    )
    session.add(upload)
    session.flush()
    return upload
