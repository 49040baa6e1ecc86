"""Status transitions: the units of work behind :meth:`Catalog.set_status` and
:meth:`Catalog.publish`.

Invariants:

- A move is checked against ``ALLOWED_TRANSITIONS`` before any database work; a forbidden
  one raises :class:`InvalidTransitionError` and writes nothing.
- A move is a compare-and-set on the locked row: it writes only while the episode is in the
  expected statuses (and, with ``only_if_run_id``, owned by that run), and writes the change
  and its history row in one transaction.
- A move to ``processing`` that needs the raw media is refused with
  :class:`RawMediaPurgedError` while the raw media is marked purged; the row lock orders it
  with :meth:`Catalog.mark_raw_purged`.
- At most one version of an upload name is ``published``, and never none in between: the
  new one is published and the old one superseded in the same commit.
- A retry of an attempt whose commit went through reports that commit (the times were fixed
  before the first attempt) instead of writing twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from pod_resources.catalog.errors import (
    EpisodeNotFoundError,
    InvalidTransitionError,
    RawMediaPurgedError,
)
from pod_resources.catalog.models import ALLOWED_TRANSITIONS, EpisodeRow, EpisodeStatus
from pod_resources.catalog.records import Publication
from pod_resources.catalog.rows import (
    add_history,
    as_utc,
    of_upload_name,
    status_set,
    status_values,
    utcnow,
)


def allowed_sources(
    episode_id: str,
    expected: EpisodeStatus | Collection[EpisodeStatus] | None,
    new: EpisodeStatus,
) -> frozenset[EpisodeStatus]:
    """The statuses a move to ``new`` may start from: ``expected``, or with ``None`` every
    status the lifecycle allows; raises :class:`InvalidTransitionError` for a forbidden one."""
    allowed_from = frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if new in targets)
    if expected is None:
        if not allowed_from:
            raise InvalidTransitionError(f"no status may move to {new}")
        return allowed_from
    sources = status_set(expected)
    forbidden = sorted(sources - allowed_from)
    if forbidden:
        raise InvalidTransitionError(
            f"episode {episode_id!r}: {', '.join(forbidden)} -> {new} is not allowed"
        )
    return sources


@dataclass(frozen=True)
class StatusMove:
    """One call of :meth:`Catalog.set_status`, checked and its time fixed (``when``)."""

    episode_id: str
    new: EpisodeStatus
    sources: frozenset[EpisodeStatus]
    any_allowed: bool
    """``expected=None``: the current status is checked against the lifecycle, not a list."""
    when: datetime
    run_id: str | None
    only_if_run_id: str | None
    error: str | None
    step: str | None
    needs_raw: bool

    @classmethod
    def plan(
        cls,
        episode_id: str,
        *,
        expected: EpisodeStatus | Collection[EpisodeStatus] | None,
        new: EpisodeStatus,
        at: datetime | None,
        run_id: str | None,
        only_if_run_id: str | None,
        error: str | None,
        step: str | None,
        needs_raw: bool,
    ) -> StatusMove:
        """The move, checked against the lifecycle before anything is read."""
        new = EpisodeStatus(new)
        sources = allowed_sources(episode_id, expected, new)
        when = utcnow() if at is None else as_utc(at)
        return cls(
            episode_id, new, sources, expected is None, when,
            run_id, only_if_run_id, error, step, needs_raw,
        )

    @property
    def purge_guard(self) -> bool:
        return self.new is EpisodeStatus.PROCESSING and self.needs_raw

    def compare_and_set(self, session: Session, retrying: bool) -> bool:
        current = self._locked_current(session)
        status = EpisodeStatus(current.status)
        if retrying and self._committed_before(current, status):
            return True  # an earlier attempt of this call committed
        self._refuse_unless_allowed(current, status)
        result = session.execute(
            sa.update(EpisodeRow)
            .where(*self._conditions())
            .values(**self._changed_columns())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        run_id = self.run_id if self.run_id is not None else self.only_if_run_id
        add_history(
            session,
            self.episode_id,
            status.value,
            self.new.value,
            self.when,
            run_id=run_id,
            message=self.error,
        )
        return True

    def _locked_current(self, session: Session) -> Row[Any]:
        current = session.execute(
            sa.select(
                EpisodeRow.status,
                EpisodeRow.processing_run_id,
                EpisodeRow.status_changed_at,
                EpisodeRow.raw_purged_at,
            )
            .where(EpisodeRow.episode_id == self.episode_id)
            .with_for_update()
        ).one_or_none()
        if current is None:
            raise EpisodeNotFoundError(f"episode {self.episode_id!r} is not in the catalog")
        return current

    def _committed_before(self, current: Row[Any], status: EpisodeStatus) -> bool:
        return (
            status is self.new
            and current.status_changed_at == self.when
            and (
                self.new is not EpisodeStatus.PROCESSING
                or current.processing_run_id == self.run_id
            )
        )

    def _refuse_unless_allowed(self, current: Row[Any], status: EpisodeStatus) -> None:
        if self.purge_guard and current.raw_purged_at is not None:
            raise RawMediaPurgedError(self.episode_id, current.raw_purged_at)
        if self.any_allowed and status not in self.sources:
            raise InvalidTransitionError(
                f"episode {self.episode_id!r}: {status} -> {self.new} is not allowed"
            )

    def _conditions(self) -> list[sa.ColumnElement[bool]]:
        conditions = [
            EpisodeRow.episode_id == self.episode_id,
            EpisodeRow.status.in_(status_values(self.sources)),
        ]
        if self.only_if_run_id is not None:
            conditions.append(EpisodeRow.processing_run_id == self.only_if_run_id)
        if self.purge_guard:
            conditions.append(EpisodeRow.raw_purged_at.is_(None))
        return conditions

    def _changed_columns(self) -> Mapping[str, Any]:
        values: dict[str, Any] = {
            "status": self.new.value,
            "updated_at": self.when,
            "status_changed_at": self.when,
        }
        if self.new is EpisodeStatus.PROCESSING:
            values.update(processing_run_id=self.run_id, last_error=None, error_step=None)
        elif self.new is EpisodeStatus.ERROR:
            values.update(last_error=self.error, error_step=self.step)
        return values


@dataclass(frozen=True)
class Publishing:
    """One call of :meth:`Catalog.publish`, its time fixed (``when``)."""

    episode_id: str
    when: datetime

    def move(self, session: Session, retrying: bool) -> Publication:
        target = session.get(EpisodeRow, self.episode_id)
        if target is None:
            return Publication(self.episode_id, published=False, status=None)
        chain = self._locked_versions(session, target.version_of or target.episode_id)
        target = chain[self.episode_id]
        status = EpisodeStatus(target.status)
        if retrying and status is EpisodeStatus.PUBLISHED and target.status_changed_at == self.when:
            return self._committed_before(chain)
        if status is not EpisodeStatus.PROCESSED:
            return Publication(self.episode_id, published=False, status=status)
        moved = self._publish(session, target, chain)
        session.flush()
        return Publication(
            self.episode_id, published=True, status=EpisodeStatus.PUBLISHED, superseded=moved
        )

    @staticmethod
    def _locked_versions(session: Session, root_id: str) -> dict[str, EpisodeRow]:
        """Every version's row, locked in one order (by version) by every publisher."""
        query = (
            sa.select(EpisodeRow)
            .where(of_upload_name(root_id))
            .order_by(EpisodeRow.version)
            .with_for_update()
        )
        return {row.episode_id: row for row in session.scalars(query)}

    def _committed_before(self, chain: Mapping[str, EpisodeRow]) -> Publication:
        """An earlier attempt of this call committed; report what it did."""
        done = tuple(
            row.episode_id
            for row in chain.values()
            if row.superseded_by == self.episode_id and row.status_changed_at == self.when
        )
        return Publication(
            self.episode_id, published=True, status=EpisodeStatus.PUBLISHED, superseded=done
        )

    def _publish(
        self, session: Session, target: EpisodeRow, chain: Mapping[str, EpisodeRow]
    ) -> tuple[str, ...]:
        """Publish ``target``, supersede the published others; the ids superseded."""
        published, superseded = EpisodeStatus.PUBLISHED, EpisodeStatus.SUPERSEDED
        moved: list[str] = []
        for row in (target, *(r for r in chain.values() if r is not target)):
            old = EpisodeStatus(row.status)
            if row is target:
                row.status, row.superseded_by = published.value, None
            elif old is published:
                row.status, row.superseded_by = superseded.value, self.episode_id
                moved.append(row.episode_id)
            else:
                continue
            row.status_changed_at = row.updated_at = self.when
            message = None if row is target else f"superseded by {self.episode_id}"
            add_history(session, row.episode_id, old.value, row.status, self.when, message=message)
        return tuple(moved)
