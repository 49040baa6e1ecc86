"""The catalog's repository: short units of work that return frozen dataclasses.

Rules every method follows:

- One unit of work = one short session and one transaction. Nothing is held open while the
  caller computes; the next write opens a new transaction.
- Rows are converted to frozen dataclasses (:mod:`pod_resources.catalog.records`) *inside*
  the session. ORM instances never leave the catalog's units of work, so there is nothing to
  lazy-load after the session closed (seed bug 3).
- A unit that hits a dropped connection is rolled back and run again from the start, with
  exponential backoff and jitter (seed bug 4). Each unit fixes its timestamps before the first
  attempt, so a retry can tell whether an attempt whose commit acknowledgement got lost did in
  fact commit, and then reports that result instead of writing twice.

:class:`Catalog` is the one entry point; the longer units live by idea beside it:
registration (:mod:`~pod_resources.catalog.registration`), status transitions and
publication (:mod:`~pod_resources.catalog.transitions`), the purge's marks
(:mod:`~pod_resources.catalog.raw_media`), shared row writes (:mod:`~pod_resources.catalog.rows`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pod_resources.catalog.engine import (
    DEFAULT_APPLICATION_NAME,
    get_engine,
    is_transient,
    redact_url,
    write_engine,
)
from pod_resources.catalog.models import (
    FINISHED_STATUSES,
    EpisodeRow,
    EpisodeStatus,
    RunClaimRow,
    StatusHistoryRow,
    UploadRow,
)
from pod_resources.catalog.records import (
    Episode,
    Publication,
    Registration,
    StatusChange,
    UploadRecord,
    to_change,
    to_episode,
    to_upload,
)
from pod_resources.catalog.raw_media import PurgeMark, PurgeUnmark, candidates_query
from pod_resources.catalog.registration import UploadRegistration
from pod_resources.catalog.rows import (
    as_utc,
    locked_episode,
    of_upload_name,
    status_set,
    status_values,
    utcnow,
)
from pod_resources.catalog.transitions import Publishing, StatusMove

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_ATTEMPTS = 4
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 2.0


class Catalog:
    """The episode catalog in a SQLite or Postgres database.

    Cheap to construct and safe to share between threads; the engine (one per URL per
    process) is created, and the schema migrated, on first use.
    """

    def __init__(
        self,
        url: str,
        *,
        application_name: str = DEFAULT_APPLICATION_NAME,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._url = url
        self._application_name = application_name
        self._attempts = attempts
        self._engines: tuple[Engine, Engine] | None = None

    def __repr__(self) -> str:
        return f"Catalog({self.redacted_url!r}, application_name={self._application_name!r})"

    @property
    def redacted_url(self) -> str:
        return redact_url(self._url)

    @property
    def application_name(self) -> str:
        return self._application_name

    @property
    def engine(self) -> Engine:
        """This process's engine for the catalog (created and migrated on first use)."""
        return self._engine_pair()[0]

    def _engine_pair(self) -> tuple[Engine, Engine]:
        engine = get_engine(self._url, application_name=self._application_name)
        pair = self._engines
        if pair is None or pair[0] is not engine:
            pair = (engine, write_engine(engine))
            self._engines = pair
        return pair

    # -- unit-of-work runner -------------------------------------------------------------

    def _run(
        self,
        work: Callable[[Session, bool], _T],
        *,
        write: bool,
        retry_integrity: bool = False,
    ) -> _T:
        """Run ``work(session, retrying)`` in one transaction, retrying it whole when the
        connection drops (and, with ``retry_integrity``, when a concurrent insert won)."""
        read_bind, write_bind = self._engine_pair()
        bind = write_bind if write else read_bind
        for attempt in range(1, self._attempts + 1):
            try:
                with Session(bind) as session, session.begin():
                    return work(session, attempt > 1)
            except Exception as exc:
                retryable = is_transient(exc) or (
                    retry_integrity and isinstance(exc, IntegrityError)
                )
                if not retryable or attempt == self._attempts:
                    raise
                delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.5)
                _log.warning(
                    "catalog %s: %s in %s (attempt %d/%d), retrying in %.2fs",
                    self.redacted_url,
                    type(exc).__name__,
                    getattr(work, "__qualname__", "unit of work"),
                    attempt,
                    self._attempts,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _all(self, query: sa.Select[tuple[Any]], convert: Callable[[Any], _T]) -> list[_T]:
        """Every row ``query`` selects, converted inside one read transaction."""

        def read(session: Session, _retrying: bool) -> list[_T]:
            return [convert(row) for row in session.scalars(query)]

        return self._run(read, write=False)

    # -- uploads -------------------------------------------------------------------------

    def register_upload(
        self,
        *,
        object_name: str,
        generation: int,
        content_hash: str,
        episode_id: str,
        title: str,
    ) -> Registration:
        """Record one landed object generation and say what it means, in one transaction
        (the outcomes and their invariants: :mod:`pod_resources.catalog.registration`).

        ``episode_id`` is the upload name's own id (version 1's); a new version of it gets
        ``<episode_id>-v<n>``.
        """
        registration = UploadRegistration(
            object_name, generation, content_hash, episode_id, title, now=utcnow()
        )
        return self._run(registration.register, write=True, retry_integrity=True)

    def versions(self, root_id: str) -> list[Episode]:
        """Every version of the upload name whose version 1 is ``root_id``, oldest first."""
        query = sa.select(EpisodeRow).where(of_upload_name(root_id)).order_by(EpisodeRow.version)
        return self._all(query, to_episode)

    def episode_with_content(self, content_hash: str) -> Episode | None:
        """The episode whose bytes have this content hash, if any (hashes are unique)."""

        def read(session: Session, _retrying: bool) -> Episode | None:
            row = session.scalars(
                sa.select(EpisodeRow).where(EpisodeRow.content_hash == content_hash)
            ).one_or_none()
            return None if row is None else to_episode(row)

        return self._run(read, write=False)

    def uploads(self, episode_id: str | None = None) -> list[UploadRecord]:
        """Recorded uploads, oldest first; only those of ``episode_id`` when given."""
        query = sa.select(UploadRow).order_by(
            UploadRow.seen_at, UploadRow.object_name, UploadRow.generation
        )
        if episode_id is not None:
            query = query.where(UploadRow.episode_id == episode_id)
        return self._all(query, to_upload)

    # -- episodes ------------------------------------------------------------------------

    def get_episode(self, episode_id: str) -> Episode | None:
        def read(session: Session, _retrying: bool) -> Episode | None:
            row = session.get(EpisodeRow, episode_id)
            return None if row is None else to_episode(row)

        return self._run(read, write=False)

    def list_episodes(
        self, *, statuses: Collection[EpisodeStatus] | None = None
    ) -> list[Episode]:
        """Episodes, oldest first; only those in ``statuses`` when given."""
        query = sa.select(EpisodeRow).order_by(EpisodeRow.created_at, EpisodeRow.episode_id)
        if statuses is not None:
            query = query.where(EpisodeRow.status.in_(status_values(status_set(statuses))))
        return self._all(query, to_episode)

    def set_status(
        self,
        episode_id: str,
        *,
        expected: EpisodeStatus | Collection[EpisodeStatus] | None,
        new: EpisodeStatus,
        run_id: str | None = None,
        error: str | None = None,
        step: str | None = None,
        only_if_run_id: str | None = None,
        at: datetime | None = None,
        needs_raw: bool = True,
    ) -> bool:
        """Compare-and-set the status; ``False`` (and no write) when the episode is no longer
        in ``expected`` or, with ``only_if_run_id``, is owned by another run.

        ``expected=None`` accepts any status the move is allowed from. A move the lifecycle
        forbids raises :class:`InvalidTransitionError`. ``processing`` records ``run_id`` as
        the owning run and clears the last error; ``error`` records ``error`` and ``step``.
        The change and a history row are written in one transaction; the row names
        ``run_id`` or, without one, the owning run ``only_if_run_id``.

        A move to ``processing`` raises :class:`RawMediaPurgedError` (and writes nothing)
        while the episode's raw media is marked purged: the row lock this takes orders it
        with :meth:`mark_raw_purged`, so an episode is never processing while the purge
        deletes its raw media (see docs/purge.md). ``needs_raw=False`` is for a run that
        reads no raw media (only steps after ``cleaned_audio``): it may start after the purge,
        and the purge has nothing of its left to delete.
        """
        move = StatusMove.plan(
            episode_id,
            expected=expected,
            new=new,
            at=at,
            run_id=run_id,
            only_if_run_id=only_if_run_id,
            error=error,
            step=step,
            needs_raw=needs_raw,
        )
        return self._run(move.compare_and_set, write=True)

    def publish(self, episode_id: str, *, at: datetime | None = None) -> Publication:
        """Publish a ``processed`` episode and supersede the other published versions of its
        upload name, in one transaction.

        Invariant: at most one version of an upload name is ``published`` at any time, and
        never none in between: the new one is published and the old one moves to
        ``superseded`` (``superseded_by`` = this episode) in the same commit. Nothing else
        about the old version changes (its objects, metrics and raw media stay; the purge
        treats ``superseded`` as finished, its retention counting from this change).
        Refused (``published=False``, no write) unless the episode is ``processed``.
        """
        publishing = Publishing(episode_id, when=utcnow() if at is None else as_utc(at))
        return self._run(publishing.move, write=True)

    def claim(self, key: str, *, owner: str, replace: str | None = None) -> str:
        """Claim ``key`` for ``owner``; returns who holds it afterwards.

        The first caller to insert ``key`` wins: of any number of concurrent callers, on
        SQLite and Postgres alike, exactly one gets its own ``owner`` back. With ``replace``,
        a claim held by exactly that owner (one known to be dead) moves to ``owner`` by a
        compare-and-set. Claims are never deleted.
        """
        now = utcnow()

        def claim(session: Session, _retrying: bool) -> str:
            row = session.get(RunClaimRow, key, with_for_update=True)
            if row is None:
                session.add(RunClaimRow(claim_key=key, owner=owner, claimed_at=now))
                session.flush()
                return owner
            if replace is not None and row.owner == replace:
                row.owner = owner
                row.claimed_at = now
            return row.owner

        return self._run(claim, write=True, retry_integrity=True)

    def history(self, episode_id: str) -> list[StatusChange]:
        """Status changes of the episode, oldest first (the first is ``None -> uploaded``)."""
        query = (
            sa.select(StatusHistoryRow)
            .where(StatusHistoryRow.episode_id == episode_id)
            .order_by(StatusHistoryRow.id)
        )
        return self._all(query, to_change)

    def record_metrics(self, episode_id: str, metrics: Mapping[str, float | int]) -> None:
        """Merge ``metrics`` into the episode's metrics (finite numbers only)."""
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"metric {name!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be finite, got {value!r}")
            clean[str(name)] = float(value)
        now = utcnow()

        def merge(session: Session, _retrying: bool) -> None:
            row = locked_episode(session, episode_id)
            row.metrics = {**row.metrics, **clean}
            row.updated_at = now

        self._run(merge, write=True)

    def record_artifacts(self, episode_id: str, artifacts: Mapping[str, str | None]) -> None:
        """Merge ``stage -> URI`` into the episode's artifacts; ``None`` removes a stage."""
        now = utcnow()

        def merge(session: Session, _retrying: bool) -> None:
            row = locked_episode(session, episode_id)
            merged = dict(row.artifacts)
            for stage, uri in artifacts.items():
                if uri is None:
                    merged.pop(stage, None)
                else:
                    merged[stage] = str(uri)
            row.artifacts = merged
            row.updated_at = now

        self._run(merge, write=True)

    def set_raw_key(self, episode_id: str, raw_key: str) -> None:
        """Record where the episode's raw media now lives; clears ``raw_purged_at``."""
        now = utcnow()

        def write(session: Session, _retrying: bool) -> None:
            row = locked_episode(session, episode_id)
            row.raw_key = raw_key
            row.raw_purged_at = None
            row.updated_at = now

        self._run(write, write=True)

    def mark_raw_purged(
        self,
        episode_id: str,
        *,
        expected_statuses: Collection[EpisodeStatus],
        at: datetime,
        only_if_status_changed_at: datetime,
        only_if_source_generation: int | None = None,
    ) -> bool:
        """Compare-and-set ``raw_purged_at``: only while the episode is still in
        ``expected_statuses``, its status has not changed since ``only_if_status_changed_at``,
        (when given) no new version replaced ``only_if_source_generation``, and its raw media
        is not already marked purged. ``False`` (no write) otherwise.

        The row is locked first, so the check and the write are ordered with
        :meth:`set_status` and :meth:`register_upload` on the same episode.
        """
        mark = PurgeMark(
            episode_id,
            statuses=tuple(status_values(status_set(expected_statuses))),
            when=as_utc(at),
            status_changed_at=as_utc(only_if_status_changed_at),
            source_generation=only_if_source_generation,
        )
        return self._run(mark.compare_and_set, write=True)

    def unmark_raw_purged(self, episode_id: str, *, only_if_purged_at: datetime) -> bool:
        """Undo :meth:`mark_raw_purged` after its deletion failed: clear ``raw_purged_at``
        only while it is still ``only_if_purged_at``. ``False`` (no write) otherwise."""
        unmark = PurgeUnmark(episode_id, purged_at=as_utc(only_if_purged_at))
        return self._run(unmark.compare_and_clear, write=True)

    def purge_candidates(
        self, *, now: datetime, retention: timedelta, limit: int | None = None
    ) -> list[Episode]:
        """Episodes whose raw media the retention purge may delete, oldest change first.

        One query: a finished status (``FINISHED_STATUSES``), unchanged since before
        ``now - retention``, raw media not marked purged.
        """
        if retention < timedelta(0):
            raise ValueError(f"retention must not be negative, got {retention}")
        return self._all(candidates_query(as_utc(now) - retention, limit), to_episode)
