"""The purge's marks on an episode's raw media: the units of work behind
:meth:`Catalog.mark_raw_purged`, :meth:`Catalog.unmark_raw_purged` and
:meth:`Catalog.purge_candidates`.

Invariants:

- ``raw_purged_at`` is set and cleared only by a compare-and-set on the locked row, so each
  is ordered with :meth:`Catalog.set_status` and :meth:`Catalog.register_upload` on the same
  episode: an episode is never ``processing`` while the purge deletes its raw media.
- A mark holds only for the state the purge planned from: the same finished status, unchanged
  since the same time, the same source generation; otherwise nothing is written.
- A retry of an attempt whose commit went through reports that commit (the mark's time was
  fixed before the first attempt).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pod_resources.catalog.models import FINISHED_STATUSES, EpisodeRow
from pod_resources.catalog.rows import locked_episode, status_values, utcnow


@dataclass(frozen=True)
class PurgeMark:
    """One call of :meth:`Catalog.mark_raw_purged`."""

    episode_id: str
    statuses: tuple[str, ...]
    when: datetime
    status_changed_at: datetime
    source_generation: int | None

    def compare_and_set(self, session: Session, retrying: bool) -> bool:
        row = locked_episode(session, self.episode_id)
        if retrying and row.raw_purged_at == self.when:
            return True  # an earlier attempt of this call committed
        conditions = [
            EpisodeRow.episode_id == self.episode_id,
            EpisodeRow.status.in_(self.statuses),
            EpisodeRow.status_changed_at == self.status_changed_at,
            EpisodeRow.raw_purged_at.is_(None),
        ]
        if self.source_generation is not None:
            conditions.append(EpisodeRow.source_generation == self.source_generation)
        result = session.execute(
            sa.update(EpisodeRow)
            .where(*conditions)
            .values(raw_purged_at=self.when, updated_at=self.when)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


@dataclass(frozen=True)
class PurgeUnmark:
    """One call of :meth:`Catalog.unmark_raw_purged`."""

    episode_id: str
    purged_at: datetime

    def compare_and_clear(self, session: Session, retrying: bool) -> bool:
        row = locked_episode(session, self.episode_id)
        if row.raw_purged_at != self.purged_at:
            # Cleared already: by an earlier attempt of this call, or by a new version.
            return retrying and row.raw_purged_at is None
        row.raw_purged_at = None
        row.updated_at = utcnow()
        return True


def candidates_query(cutoff: datetime, limit: int | None) -> sa.Select[tuple[EpisodeRow]]:
    """Finished episodes unchanged since before ``cutoff`` whose raw media is not marked
    purged, oldest change first."""
    query = (
        sa.select(EpisodeRow)
        .where(
            EpisodeRow.status.in_(status_values(FINISHED_STATUSES)),
            EpisodeRow.status_changed_at < cutoff,
            EpisodeRow.raw_purged_at.is_(None),
        )
        .order_by(EpisodeRow.status_changed_at, EpisodeRow.episode_id)
    )
    return query if limit is None else query.limit(limit)
