"""Catalog reads whose cost follows the work, not the history: counts, pages and bounded
samples computed in SQL, for the upload sensor, the purge and ``pod status``.

Every function runs short read transactions through :meth:`Catalog._run` (retried whole on
a dropped connection) and returns frozen dataclasses, never ORM rows. None of them loads
more rows than its ``limit`` (or ``batch``) says.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pod_resources.catalog.models import (
    FINISHED_STATUSES,
    EpisodeRow,
    EpisodeStatus,
    UploadRow,
)
from pod_resources.catalog.records import Episode, to_episode
from pod_resources.catalog.repository import Catalog

NAMES_PER_QUERY = 500
"""Upload names per ``IN (…)`` when checking which listed generations are registered."""
_RANGE_ROWS = 4 * NAMES_PER_QUERY


@dataclass(frozen=True)
class EpisodeFilter:
    """Which episodes ``pod status`` shows. Empty fields filter nothing."""

    statuses: frozenset[EpisodeStatus] = frozenset()
    since: datetime | None = None
    """Only episodes updated at or after this time."""
    episode_ids: frozenset[str] = frozenset()


def _where(query: sa.Select, selected: EpisodeFilter) -> sa.Select:
    if selected.statuses:
        query = query.where(EpisodeRow.status.in_(sorted(s.value for s in selected.statuses)))
    if selected.since is not None:
        query = query.where(EpisodeRow.updated_at >= selected.since)
    if selected.episode_ids:
        query = query.where(EpisodeRow.episode_id.in_(sorted(selected.episode_ids)))
    return query


def count_episodes(catalog: Catalog, selected: EpisodeFilter = EpisodeFilter()) -> int:
    def read(session: Session, _retrying: bool) -> int:
        query = _where(sa.select(sa.func.count()).select_from(EpisodeRow), selected)
        return int(session.scalar(query) or 0)

    return catalog._run(read, write=False)


def iter_episodes(
    catalog: Catalog,
    selected: EpisodeFilter = EpisodeFilter(),
    *,
    limit: int | None,
    batch: int = 500,
) -> Iterator[Episode]:
    """Episodes oldest first (``created_at``, ``episode_id``), at most ``limit``.

    Keyset pages of ``batch`` rows, each read in its own short transaction: memory stays
    at one page whatever the catalog holds, and no transaction stays open while the caller
    writes its output.
    """
    after: tuple[datetime, str] | None = None
    left = limit
    while left is None or left > 0:
        size = batch if left is None else min(batch, left)

        def read(session: Session, _retrying: bool, after=after, size=size) -> list[Episode]:
            query = _where(sa.select(EpisodeRow), selected)
            if after is not None:
                query = query.where(
                    sa.tuple_(EpisodeRow.created_at, EpisodeRow.episode_id) > sa.tuple_(*after)
                )
            query = query.order_by(EpisodeRow.created_at, EpisodeRow.episode_id).limit(size)
            return [to_episode(row) for row in session.scalars(query)]

        page = catalog._run(read, write=False)
        yield from page
        if len(page) < size:
            return
        after = (page[-1].created_at, page[-1].episode_id)
        if left is not None:
            left -= len(page)


# -- uploads -----------------------------------------------------------------------------


def registered_generations(catalog: Catalog, names: Sequence[str]) -> set[tuple[str, int]]:
    """Which ``(object_name, generation)`` of these upload names the catalog has recorded.

    A listing page comes in key order, so one range scan of the primary key between its
    first and last name answers for the whole page; only names the range did not return
    (new ones, or names the database's collation sorts elsewhere) are asked for by name, as
    are all of a page whose range holds more than ``_RANGE_ROWS`` recorded uploads (names
    that left the landing zone long ago).
    """
    seen: set[tuple[str, int]] = set()
    for start in range(0, len(names), NAMES_PER_QUERY):
        chunk = list(names[start : start + NAMES_PER_QUERY])
        low, high = min(chunk), max(chunk)

        def in_range(session: Session, _retrying: bool) -> list[tuple[str, int]]:
            query = sa.select(UploadRow.object_name, UploadRow.generation).where(
                UploadRow.object_name.between(low, high)
            )
            rows = session.execute(query.limit(_RANGE_ROWS + 1)).all()
            return [(name, int(generation)) for name, generation in rows]

        wanted = set(chunk)
        found = catalog._run(in_range, write=False)
        if len(found) > _RANGE_ROWS:
            found = []  # a range dense with uploads that left the landing zone: ask by name
        found = [pair for pair in found if pair[0] in wanted]
        seen.update(found)
        missing = sorted(wanted - {name for name, _ in found})

        def by_name(session: Session, _retrying: bool) -> list[tuple[str, int]]:
            query = sa.select(UploadRow.object_name, UploadRow.generation).where(
                UploadRow.object_name.in_(missing)
            )
            return [(name, int(generation)) for name, generation in session.execute(query)]

        if missing:
            seen.update(catalog._run(by_name, write=False))
    return seen


def recorded_contents(catalog: Catalog, names: Sequence[str]) -> set[tuple[str, str]]:
    """Which ``(object_name, content_hash)`` of these upload names the catalog has recorded
    (under any generation): what ``pod import`` has already brought in."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(names), NAMES_PER_QUERY):
        chunk = list(names[start : start + NAMES_PER_QUERY])

        def read(session: Session, _retrying: bool, chunk=chunk) -> list[tuple[str, str]]:
            query = sa.select(UploadRow.object_name, UploadRow.content_hash).where(
                UploadRow.object_name.in_(chunk)
            )
            return [(name, digest) for name, digest in session.execute(query)]

        found.update(catalog._run(read, write=False))
    return found


def upload_generations(
    catalog: Catalog, episode_ids: Sequence[str]
) -> dict[str, dict[str, set[int]]]:
    """The recorded upload generations of these episodes: ``{episode: {name: {gen…}}}``
    (one query per :data:`NAMES_PER_QUERY` episodes, not one per episode)."""
    found: dict[str, dict[str, set[int]]] = {episode_id: {} for episode_id in episode_ids}
    for start in range(0, len(episode_ids), NAMES_PER_QUERY):
        chunk = list(episode_ids[start : start + NAMES_PER_QUERY])

        def read(session: Session, _retrying: bool, chunk=chunk) -> list[tuple[str, str, int]]:
            query = sa.select(
                UploadRow.episode_id, UploadRow.object_name, UploadRow.generation
            ).where(UploadRow.episode_id.in_(chunk))
            return [(e, n, int(g)) for e, n, g in session.execute(query)]

        for episode_id, name, generation in catalog._run(read, write=False):
            found[episode_id].setdefault(name, set()).add(generation)
    return found


@dataclass(frozen=True)
class PendingRun:
    """A registered upload that still needs its run: the episode's current bytes, registered
    after the episode's last status change (so no run has started on them)."""

    seen_at: datetime
    object_name: str
    generation: int
    episode_id: str
    version_of: str | None

    @property
    def position(self) -> tuple[str, str, int]:
        """Where it sorts among pending runs (the upload sensor's cursor holds one)."""
        return (self.seen_at.isoformat(), self.object_name, self.generation)


def pending_runs(
    catalog: Catalog, *, after: tuple[datetime, str, int] | None, limit: int
) -> list[PendingRun]:
    """Uploads whose run has not started, in registration order, after ``after``.

    Pending: not a duplicate, the episode's current generation of its own name, the raw
    media not purged, and no status change since the upload was registered (a run that
    starts moves the episode to ``processing``).
    """

    def read(session: Session, _retrying: bool) -> list[PendingRun]:
        query = (
            sa.select(
                UploadRow.seen_at,
                UploadRow.object_name,
                UploadRow.generation,
                EpisodeRow.episode_id,
                EpisodeRow.version_of,
            )
            .join(EpisodeRow, EpisodeRow.episode_id == UploadRow.episode_id)
            .where(
                UploadRow.duplicate_of.is_(None),
                UploadRow.generation == EpisodeRow.source_generation,
                UploadRow.object_name == EpisodeRow.source_name,
                UploadRow.seen_at >= EpisodeRow.status_changed_at,
                EpisodeRow.raw_purged_at.is_(None),
            )
        )
        if after is not None:
            query = query.where(
                sa.tuple_(UploadRow.seen_at, UploadRow.object_name, UploadRow.generation)
                > sa.tuple_(sa.literal(after[0], UploadRow.seen_at.type), after[1], after[2])
            )
        query = query.order_by(
            UploadRow.seen_at, UploadRow.object_name, UploadRow.generation
        ).limit(limit)
        return [PendingRun(*row) for row in session.execute(query)]

    return catalog._run(read, write=False)


# -- purge -------------------------------------------------------------------------------


def _cutoff(now: datetime, retention: timedelta) -> datetime:
    if retention < timedelta(0):
        raise ValueError(f"retention must not be negative, got {retention}")
    return now - retention


def _eligible(query: sa.Select, cutoff: datetime) -> sa.Select:
    return query.where(
        EpisodeRow.status.in_(sorted(s.value for s in FINISHED_STATUSES)),
        EpisodeRow.status_changed_at < cutoff,
        EpisodeRow.raw_purged_at.is_(None),
    )


@dataclass(frozen=True)
class PurgeBacklog:
    """The episodes the purge may take now: how many, and their oldest and newest change."""

    count: int
    oldest_change: datetime | None
    newest_change: datetime | None


def purge_backlog(catalog: Catalog, *, now: datetime, retention: timedelta) -> PurgeBacklog:
    cutoff = _cutoff(now, retention)

    def read(session: Session, _retrying: bool) -> PurgeBacklog:
        query = _eligible(
            sa.select(
                sa.func.count(),
                sa.func.min(EpisodeRow.status_changed_at),
                sa.func.max(EpisodeRow.status_changed_at),
            ).select_from(EpisodeRow),
            cutoff,
        )
        count, oldest, newest = session.execute(query).one()
        return PurgeBacklog(int(count or 0), oldest, newest)

    return catalog._run(read, write=False)


def eligible_after(
    catalog: Catalog, *, now: datetime, retention: timedelta, last: Episode | None, limit: int
) -> list[Episode]:
    """Eligible episodes after ``last`` in retention order (a sample of those a
    ``max_deletions`` cap leaves for the next purge); a seek in ``ix_episodes_purge_order``,
    not an offset."""
    cutoff = _cutoff(now, retention)

    def read(session: Session, _retrying: bool) -> list[Episode]:
        query = _eligible(sa.select(EpisodeRow), cutoff)
        if last is not None:
            query = query.where(
                sa.tuple_(EpisodeRow.status_changed_at, EpisodeRow.episode_id)
                > sa.tuple_(
                    sa.literal(last.status_changed_at, EpisodeRow.status_changed_at.type),
                    last.episode_id,
                )
            )
        query = query.order_by(EpisodeRow.status_changed_at, EpisodeRow.episode_id)
        return [to_episode(r) for r in session.scalars(query.limit(limit))]

    return catalog._run(read, write=False)


def not_eligible_summary(
    catalog: Catalog, *, now: datetime, retention: timedelta, sample: int
) -> tuple[dict[str, int], list[Episode]]:
    """Episodes with raw media the purge keeps: counts by reason, and a bounded sample.

    Reasons are ``status=<status>`` for unfinished episodes and ``within retention`` for
    finished ones changed after the cutoff. Two index seeks (by status, and by time since the
    cutoff), never a pass over the finished history.
    """
    cutoff = _cutoff(now, retention)
    finished = sorted(s.value for s in FINISHED_STATUSES)
    unfinished = sorted(s.value for s in EpisodeStatus if s.value not in finished)
    waiting = sa.and_(EpisodeRow.raw_purged_at.is_(None), EpisodeRow.status.in_(unfinished))
    recent = sa.and_(
        EpisodeRow.raw_purged_at.is_(None),
        EpisodeRow.status_changed_at >= cutoff,
        EpisodeRow.status.in_(finished),
    )

    def read(session: Session, _retrying: bool) -> tuple[dict[str, int], list[Episode]]:
        counts: dict[str, int] = {}
        by_status = sa.select(EpisodeRow.status, sa.func.count()).where(waiting)
        for status, count in session.execute(by_status.group_by(EpisodeRow.status)):
            counts[f"status={status}"] = int(count)
        within = int(session.scalar(sa.select(sa.func.count()).where(recent)) or 0)
        if within:
            counts["within retention"] = within
        kept: list[Episode] = []
        for condition in (waiting, recent):
            query = sa.select(EpisodeRow).where(condition).order_by(
                EpisodeRow.status_changed_at, EpisodeRow.episode_id
            )
            kept += [to_episode(r) for r in session.scalars(query.limit(sample))]
        return counts, kept

    return catalog._run(read, write=False)


def unfinished_purges(catalog: Catalog, *, limit: int | None) -> list[Episode]:
    """Episodes a purge marked but did not finish: marked purged, still listing raw media."""

    def read(session: Session, _retrying: bool) -> list[Episode]:
        query = (
            sa.select(EpisodeRow)
            .where(
                EpisodeRow.raw_purged_at.is_not(None),
                EpisodeRow.artifacts["raw_audio"].as_string().is_not(None),
            )
            .order_by(EpisodeRow.raw_purged_at, EpisodeRow.episode_id)
        )
        if limit is not None:
            query = query.limit(limit)
        return [to_episode(r) for r in session.scalars(query)]

    return catalog._run(read, write=False)


def statuses_of(values: Collection[str]) -> frozenset[EpisodeStatus]:
    """``EpisodeStatus`` values from their names; a clear error naming the valid ones."""
    try:
        return frozenset(EpisodeStatus(value) for value in values)
    except ValueError as exc:
        valid = ", ".join(s.value for s in EpisodeStatus)
        raise ValueError(f"{exc}; valid statuses: {valid}") from None
