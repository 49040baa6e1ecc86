"""Putting an episode back into the catalog, for ``pod catalog rebuild``.

:func:`restore_episode` inserts one episode as it was described (by its manifest and the
store), in one transaction: its row, one history entry ``None -> <status>`` that says it
was rebuilt, and the upload record of its own source generation (so the upload sensor sees
that upload as already registered, not as a duplicate of the restored episode).

Invariants: it never changes an episode that is in the catalog already (it returns
``False``), so running a rebuild twice, or on a catalog that lost only some episodes, adds
only what is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pod_resources.catalog.engine import CatalogError, write_engine
from pod_resources.catalog.models import EpisodeRow, UploadRow
from pod_resources.catalog.records import Episode
from pod_resources.catalog.repository import Catalog
from pod_resources.catalog.rows import add_episode, add_upload


class RestoreConflictError(CatalogError):
    """The episode cannot be restored: it clashes with another one (same bytes)."""


def _row_values(episode: Episode) -> dict[str, Any]:
    """Column values of ``episode``: every dataclass field that is a column of ``episodes``."""
    columns = set(EpisodeRow.__table__.columns.keys())
    values: dict[str, Any] = {}
    for field in dataclasses.fields(episode):
        if field.name not in columns:
            continue
        value = getattr(episode, field.name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Mapping):
            value = dict(value)
        values[field.name] = value
    return values


def restore_episode(catalog: Catalog, episode: Episode, *, note: str) -> bool:
    """Insert ``episode`` unless its id is in the catalog; ``True`` when inserted.

    ``note`` is the message of its one history entry. Raises :class:`RestoreConflictError`
    when another episode has the same content hash (nothing is written).
    """
    with Session(write_engine(catalog.engine)) as session:
        try:
            with session.begin():
                if session.get(EpisodeRow, episode.episode_id) is not None:
                    return False
                row = EpisodeRow(**_row_values(episode))
                add_episode(session, row, message=note)
                _restore_upload(session, row)
        except IntegrityError:
            raise RestoreConflictError(
                f"episode {episode.episode_id} not restored: another episode in the catalog "
                f"has the same bytes (content hash {episode.content_hash})"
            ) from None
    return True


def _restore_upload(session: Session, episode: EpisodeRow) -> None:
    """The upload record of the episode's own source generation, seen when it was created,
    unless that upload, or another one of its bytes, is recorded already."""
    key = (episode.source_name, episode.source_generation)
    if session.get(UploadRow, key) is not None:
        return
    taken = session.execute(
        sa.select(UploadRow.object_name)
        .where(UploadRow.content_hash == episode.content_hash)
        .limit(1)
    ).first()
    if taken is not None:
        return
    add_upload(
        session, episode, episode.source_name, episode.source_generation, seen_at=episode.created_at
    )
