"""The catalog's repository: short units of work that return frozen dataclasses.

Rules every method follows:

- One unit of work = one short session and one transaction. Nothing is held open while the
  caller computes; the next write opens a new transaction.
- Rows are converted to frozen dataclasses *inside* the session. ORM instances never leave this
  module, so there is nothing to lazy-load after the session closed (seed bug 3).
- A unit that hits a dropped connection is rolled back and run again from the start, with
  exponential backoff and jitter (seed bug 4). Each unit fixes its timestamps before the first
  attempt, so a retry can tell whether an attempt whose commit acknowledgement got lost did in
  fact commit, and then reports that result instead of writing twice.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from pod_resources.catalog.engine import (
    DEFAULT_APPLICATION_NAME,
    CatalogError,
    get_engine,
    redact_url,
    write_engine,
)
from pod_resources.catalog.models import (
    ALLOWED_TRANSITIONS,
    FINISHED_STATUSES,
    EpisodeRow,
    EpisodeStatus,
    RunClaimRow,
    StatusHistoryRow,
    UploadRow,
)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_ATTEMPTS = 4
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 2.0


class InvalidTransitionError(CatalogError, ValueError):
    """A status change the lifecycle does not allow (see ``ALLOWED_TRANSITIONS``)."""


class EpisodeNotFoundError(CatalogError, LookupError):
    """The episode id is not in the catalog."""


class RawMediaPurgedError(CatalogError, dg.Failure):
    """The episode cannot be processed again: the retention purge deleted its raw media.

    Raised by :meth:`Catalog.set_status` for a move to ``processing``, so a reprocessing
    run fails before it owns the episode and nothing about the episode changes. It is also
    a ``dg.Failure`` that is never retried: a run that hits it fails at once.
    """

    def __init__(self, episode_id: str, purged_at: datetime) -> None:
        message = (
            f"raw audio for {episode_id} was purged at {purged_at.isoformat(timespec='seconds')}"
        )
        dg.Failure.__init__(self, description=message, allow_retries=False)
        self.episode_id = episode_id
        self.purged_at = purged_at
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.episode_id, self.purged_at))


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping: the dict fields of the frozen dataclasses."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return (FrozenMap, (self._data,))


@dataclass(frozen=True)
class Episode:
    episode_id: str
    source_name: str
    source_generation: int
    content_hash: str
    title: str
    status: EpisodeStatus
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    last_error: str | None
    error_step: str | None
    processing_run_id: str | None
    raw_key: str | None
    raw_purged_at: datetime | None
    metrics: Mapping[str, float]
    artifacts: Mapping[str, str]
    version: int = 1
    """1 for the first upload under a name; n for the n-th different bytes under it."""
    version_of: str | None = None
    """Version 1's episode id (the upload name's own id); ``None`` for version 1 itself."""
    superseded_by: str | None = None
    """The version whose publication superseded this one (status ``superseded``)."""

    @property
    def root_id(self) -> str:
        """The episode id shared by every version of this upload name (version 1's)."""
        return self.version_of or self.episode_id


def version_episode_id(root_id: str, version: int) -> str:
    """Episode id of ``version`` of the upload name whose first version is ``root_id``:
    ``root_id`` itself for version 1, ``<root_id>-v<n>`` after it. An upload name's own id
    ends in a hash of ten hex digits, never in ``v<n>``, so the two kinds cannot collide."""
    if version < 1:
        raise ValueError(f"versions start at 1, got {version}")
    return root_id if version == 1 else f"{root_id}-v{version}"


@dataclass(frozen=True)
class Publication:
    """What :meth:`Catalog.publish` did."""

    episode_id: str
    published: bool
    status: EpisodeStatus | None
    """The episode's status after the call (``None``: not in the catalog)."""
    superseded: tuple[str, ...] = ()
    """Other versions of the same upload name that were published and are now superseded."""


@dataclass(frozen=True)
class StatusChange:
    episode_id: str
    from_status: EpisodeStatus | None
    to_status: EpisodeStatus
    at: datetime
    run_id: str | None
    message: str | None


@dataclass(frozen=True)
class UploadRecord:
    """One object generation seen in the landing zone.

    For a duplicate, ``episode_id`` and ``duplicate_of`` both name the episode that already
    has these bytes; no episode is created for it.
    """

    object_name: str
    generation: int
    content_hash: str
    episode_id: str
    duplicate_of: str | None
    seen_at: datetime


class RegistrationKind(StrEnum):
    NEW = "new"
    """A new episode, status ``uploaded``."""
    NEW_VERSION = "new_version"
    """New bytes under the name of an existing episode: a new episode, version n of it,
    status ``uploaded``, processed beside the earlier versions, which stay as they are."""
    RESTORED = "restored"
    """An episode's own bytes again, under its own name, after the purge took its raw media:
    the episode may be processed again (``raw_purged_at`` cleared)."""
    DUPLICATE = "duplicate"
    """Bytes some episode already has (``upload.duplicate_of``). Nothing to process."""
    ALREADY_SEEN = "already_seen"
    """This object generation was registered before. Nothing changed."""


@dataclass(frozen=True)
class Registration:
    kind: RegistrationKind
    episode: Episode
    upload: UploadRecord


def _to_episode(row: EpisodeRow) -> Episode:
    return Episode(
        episode_id=row.episode_id,
        source_name=row.source_name,
        source_generation=row.source_generation,
        content_hash=row.content_hash,
        title=row.title,
        status=EpisodeStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        status_changed_at=row.status_changed_at,
        last_error=row.last_error,
        error_step=row.error_step,
        processing_run_id=row.processing_run_id,
        raw_key=row.raw_key,
        raw_purged_at=row.raw_purged_at,
        metrics=FrozenMap(row.metrics),
        artifacts=FrozenMap(row.artifacts),
        version=row.version,
        version_of=row.version_of,
        superseded_by=row.superseded_by,
    )


def _to_change(row: StatusHistoryRow) -> StatusChange:
    return StatusChange(
        episode_id=row.episode_id,
        from_status=None if row.from_status is None else EpisodeStatus(row.from_status),
        to_status=EpisodeStatus(row.to_status),
        at=row.at,
        run_id=row.run_id,
        message=row.message,
    )


def _to_upload(row: UploadRow) -> UploadRecord:
    return UploadRecord(
        object_name=row.object_name,
        generation=row.generation,
        content_hash=row.content_hash,
        episode_id=row.episode_id,
        duplicate_of=row.duplicate_of,
        seen_at=row.seen_at,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: catalog times must be tz-aware")
    return when.astimezone(UTC)


def _status_set(
    statuses: EpisodeStatus | str | Collection[EpisodeStatus | str],
) -> frozenset[EpisodeStatus]:
    if isinstance(statuses, str):
        return frozenset({EpisodeStatus(statuses)})
    return frozenset(EpisodeStatus(status) for status in statuses)


def _values(statuses: Collection[EpisodeStatus]) -> list[str]:
    """Plain strings for SQL parameters (drivers may adapt enums by member name)."""
    return sorted(status.value for status in statuses)


def _is_transient(exc: BaseException) -> bool:
    """True for errors after which running the whole unit again can succeed."""
    if isinstance(exc, PendingRollbackError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "locked" in message or "busy" in message
    # psycopg: connection failures, serialization failures, deadlocks, admin shutdown.
    return type(orig).__module__.startswith("psycopg")


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
                retryable = _is_transient(exc) or (
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

    @staticmethod
    def _locked_episode(session: Session, episode_id: str) -> EpisodeRow:
        row = session.get(EpisodeRow, episode_id, with_for_update=True)
        if row is None:
            raise EpisodeNotFoundError(f"episode {episode_id!r} is not in the catalog")
        return row

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
        """Record one landed object generation and say what it means, in one transaction.

        ``episode_id`` is the upload name's own id (version 1's). Outcomes:

        - this ``(object_name, generation)`` was registered before: ``ALREADY_SEEN``;
        - some episode already has these bytes: ``DUPLICATE``; the upload is recorded with
          ``duplicate_of`` and the episode is left alone (this includes the same bytes
          uploaded again under the same name, unless the purge took that episode's raw
          media: then it is ``RESTORED``, its generation updated and ``raw_purged_at``
          cleared, so it may be processed again);
        - ``episode_id`` exists, so these are different bytes under the name of an existing
          episode: ``NEW_VERSION``, a new episode ``<episode_id>-v<n>`` (n = the highest
          version of the name + 1) with status ``uploaded``, ``version_of = episode_id``.
          No earlier version is changed: its row, status and objects stay as they are (a
          published one stays published until :meth:`publish` publishes another version);
        - otherwise ``NEW``: the episode is created with status ``uploaded``, version 1.

        Invariant: registering never changes an existing episode's bytes, content hash or
        status; only ``RESTORED`` touches an existing row, and only to bring back its own
        bytes.
        """
        now = _utcnow()

        def register(session: Session, retrying: bool) -> Registration:
            seen = session.get(UploadRow, (object_name, generation))
            if seen is not None:
                episode = session.get(EpisodeRow, seen.episode_id)
                assert episode is not None  # foreign key
                kind = RegistrationKind.ALREADY_SEEN
                if retrying and seen.seen_at == now:
                    # An earlier attempt of this very call committed; report what it did.
                    if seen.duplicate_of is not None:
                        kind = RegistrationKind.DUPLICATE
                    elif episode.created_at != now:
                        kind = RegistrationKind.RESTORED
                    elif episode.version > 1:
                        kind = RegistrationKind.NEW_VERSION
                    else:
                        kind = RegistrationKind.NEW
                return Registration(kind, _to_episode(episode), _to_upload(seen))

            same_bytes = session.scalars(
                sa.select(EpisodeRow).where(EpisodeRow.content_hash == content_hash)
            ).one_or_none()
            if same_bytes is not None:
                # The same bytes again under the same name after the purge took the raw
                # media bring that episode back; otherwise they are a duplicate.
                if same_bytes.source_name == object_name and same_bytes.raw_purged_at is not None:
                    episode = session.get(EpisodeRow, same_bytes.episode_id, with_for_update=True)
                    assert episode is not None
                    episode.source_generation = generation
                    episode.updated_at = now
                    # The purge never deletes this generation: it is raw media again.
                    episode.raw_purged_at = None
                    return self._record_upload(
                        session, RegistrationKind.RESTORED, episode, object_name, generation,
                        content_hash, now,
                    )
                return self._record_upload(
                    session, RegistrationKind.DUPLICATE, same_bytes, object_name, generation,
                    content_hash, now, duplicate_of=same_bytes.episode_id,
                )

            root = session.get(EpisodeRow, episode_id, with_for_update=True)
            if root is not None and root.source_name != object_name:
                raise CatalogError(
                    f"episode id {episode_id!r} belongs to upload {root.source_name!r}, "
                    f"not {object_name!r}"
                )
            if root is None:
                kind, version = RegistrationKind.NEW, 1
            else:
                kind, version = RegistrationKind.NEW_VERSION, self._latest_version(session, episode_id) + 1
            episode = EpisodeRow(
                episode_id=version_episode_id(episode_id, version),
                source_name=object_name,
                source_generation=generation,
                content_hash=content_hash,
                title=title,
                status=EpisodeStatus.UPLOADED.value,
                created_at=now,
                updated_at=now,
                status_changed_at=now,
                metrics={},
                artifacts={},
                version=version,
                version_of=None if version == 1 else episode_id,
            )
            session.add(episode)
            session.flush()
            session.add(
                StatusHistoryRow(
                    episode_id=episode.episode_id,
                    from_status=None,
                    to_status=EpisodeStatus.UPLOADED.value,
                    at=now,
                    message=None if version == 1 else f"version {version} of {episode_id}",
                )
            )
            return self._record_upload(
                session, kind, episode, object_name, generation, content_hash, now
            )

        return self._run(register, write=True, retry_integrity=True)

    @staticmethod
    def _latest_version(session: Session, root_id: str) -> int:
        """Highest version of the upload name whose version 1 is ``root_id`` (row locked)."""
        latest = session.scalar(
            sa.select(sa.func.max(EpisodeRow.version)).where(
                sa.or_(EpisodeRow.episode_id == root_id, EpisodeRow.version_of == root_id)
            )
        )
        return int(latest or 1)

    @staticmethod
    def _record_upload(
        session: Session,
        kind: RegistrationKind,
        episode: EpisodeRow,
        object_name: str,
        generation: int,
        content_hash: str,
        now: datetime,
        *,
        duplicate_of: str | None = None,
    ) -> Registration:
        upload = UploadRow(
            object_name=object_name,
            generation=generation,
            content_hash=content_hash,
            episode_id=episode.episode_id,
            duplicate_of=duplicate_of,
            seen_at=now,
        )
        session.add(upload)
        session.flush()
        return Registration(kind, _to_episode(episode), _to_upload(upload))

    def versions(self, root_id: str) -> list[Episode]:
        """Every version of the upload name whose version 1 is ``root_id``, oldest first."""

        def read(session: Session, _retrying: bool) -> list[Episode]:
            query = (
                sa.select(EpisodeRow)
                .where(sa.or_(EpisodeRow.episode_id == root_id, EpisodeRow.version_of == root_id))
                .order_by(EpisodeRow.version)
            )
            return [_to_episode(row) for row in session.scalars(query)]

        return self._run(read, write=False)

    def episode_with_content(self, content_hash: str) -> Episode | None:
        """The episode whose bytes have this content hash, if any (hashes are unique)."""

        def read(session: Session, _retrying: bool) -> Episode | None:
            row = session.scalars(
                sa.select(EpisodeRow).where(EpisodeRow.content_hash == content_hash)
            ).one_or_none()
            return None if row is None else _to_episode(row)

        return self._run(read, write=False)

    def uploads(self, episode_id: str | None = None) -> list[UploadRecord]:
        """Recorded uploads, oldest first; only those of ``episode_id`` when given."""

        def read(session: Session, _retrying: bool) -> list[UploadRecord]:
            query = sa.select(UploadRow).order_by(
                UploadRow.seen_at, UploadRow.object_name, UploadRow.generation
            )
            if episode_id is not None:
                query = query.where(UploadRow.episode_id == episode_id)
            return [_to_upload(row) for row in session.scalars(query)]

        return self._run(read, write=False)

    # -- episodes ------------------------------------------------------------------------

    def get_episode(self, episode_id: str) -> Episode | None:
        def read(session: Session, _retrying: bool) -> Episode | None:
            row = session.get(EpisodeRow, episode_id)
            return None if row is None else _to_episode(row)

        return self._run(read, write=False)

    def list_episodes(
        self, *, statuses: Collection[EpisodeStatus] | None = None
    ) -> list[Episode]:
        """Episodes, oldest first; only those in ``statuses`` when given."""

        def read(session: Session, _retrying: bool) -> list[Episode]:
            query = sa.select(EpisodeRow).order_by(EpisodeRow.created_at, EpisodeRow.episode_id)
            if statuses is not None:
                query = query.where(EpisodeRow.status.in_(_values(_status_set(statuses))))
            return [_to_episode(row) for row in session.scalars(query)]

        return self._run(read, write=False)

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
        new = EpisodeStatus(new)
        allowed_from = frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if new in targets)
        if expected is None:
            sources = allowed_from
            if not sources:
                raise InvalidTransitionError(f"no status may move to {new}")
        else:
            sources = _status_set(expected)
            forbidden = sorted(sources - allowed_from)
            if forbidden:
                raise InvalidTransitionError(
                    f"episode {episode_id!r}: {', '.join(forbidden)} -> {new} is not allowed"
                )
        when = _utcnow() if at is None else _as_utc(at)
        values: dict[str, Any] = {
            "status": new.value,
            "updated_at": when,
            "status_changed_at": when,
        }
        if new is EpisodeStatus.PROCESSING:
            values.update(processing_run_id=run_id, last_error=None, error_step=None)
        elif new is EpisodeStatus.ERROR:
            values.update(last_error=error, error_step=step)

        def compare_and_set(session: Session, retrying: bool) -> bool:
            current = session.execute(
                sa.select(
                    EpisodeRow.status,
                    EpisodeRow.processing_run_id,
                    EpisodeRow.status_changed_at,
                    EpisodeRow.raw_purged_at,
                )
                .where(EpisodeRow.episode_id == episode_id)
                .with_for_update()
            ).one_or_none()
            if current is None:
                raise EpisodeNotFoundError(f"episode {episode_id!r} is not in the catalog")
            status = EpisodeStatus(current.status)
            if (
                retrying
                and status is new
                and current.status_changed_at == when
                and (new is not EpisodeStatus.PROCESSING or current.processing_run_id == run_id)
            ):
                return True  # an earlier attempt of this call committed
            purge_guard = new is EpisodeStatus.PROCESSING and needs_raw
            if purge_guard and current.raw_purged_at is not None:
                raise RawMediaPurgedError(episode_id, current.raw_purged_at)
            if expected is None and status not in sources:
                raise InvalidTransitionError(
                    f"episode {episode_id!r}: {status} -> {new} is not allowed"
                )
            conditions = [
                EpisodeRow.episode_id == episode_id,
                EpisodeRow.status.in_(_values(sources)),
            ]
            if only_if_run_id is not None:
                conditions.append(EpisodeRow.processing_run_id == only_if_run_id)
            if purge_guard:
                conditions.append(EpisodeRow.raw_purged_at.is_(None))
            result = session.execute(
                sa.update(EpisodeRow)
                .where(*conditions)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return False
            session.add(
                StatusHistoryRow(
                    episode_id=episode_id,
                    from_status=status.value,
                    to_status=new.value,
                    at=when,
                    run_id=run_id if run_id is not None else only_if_run_id,
                    message=error,
                )
            )
            return True

        return self._run(compare_and_set, write=True)

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
        when = _utcnow() if at is None else _as_utc(at)
        published, superseded = EpisodeStatus.PUBLISHED, EpisodeStatus.SUPERSEDED

        def move(session: Session, retrying: bool) -> Publication:
            target = session.get(EpisodeRow, episode_id)
            if target is None:
                return Publication(episode_id, published=False, status=None)
            root_id = target.version_of or target.episode_id
            # Every version's row, locked in one order (by version) by every publisher.
            chain = {
                row.episode_id: row
                for row in session.scalars(
                    sa.select(EpisodeRow)
                    .where(
                        sa.or_(EpisodeRow.episode_id == root_id, EpisodeRow.version_of == root_id)
                    )
                    .order_by(EpisodeRow.version)
                    .with_for_update()
                )
            }
            target = chain[episode_id]
            status = EpisodeStatus(target.status)
            if retrying and status is published and target.status_changed_at == when:
                # An earlier attempt of this call committed; report what it did.
                done = tuple(
                    row.episode_id
                    for row in chain.values()
                    if row.superseded_by == episode_id and row.status_changed_at == when
                )
                return Publication(episode_id, published=True, status=status, superseded=done)
            if status is not EpisodeStatus.PROCESSED:
                return Publication(episode_id, published=False, status=status)
            moved: list[str] = []
            for row in (target, *(r for r in chain.values() if r is not target)):
                old = EpisodeStatus(row.status)
                if row is target:
                    row.status, row.superseded_by = published.value, None
                elif old is published:
                    row.status, row.superseded_by = superseded.value, episode_id
                    moved.append(row.episode_id)
                else:
                    continue
                row.status_changed_at = row.updated_at = when
                session.add(
                    StatusHistoryRow(
                        episode_id=row.episode_id,
                        from_status=old.value,
                        to_status=row.status,
                        at=when,
                        message=None if row is target else f"superseded by {episode_id}",
                    )
                )
            session.flush()
            return Publication(episode_id, published=True, status=published, superseded=tuple(moved))

        return self._run(move, write=True)

    def claim(self, key: str, *, owner: str, replace: str | None = None) -> str:
        """Claim ``key`` for ``owner``; returns who holds it afterwards.

        The first caller to insert ``key`` wins: of any number of concurrent callers, on
        SQLite and Postgres alike, exactly one gets its own ``owner`` back. With ``replace``,
        a claim held by exactly that owner (one known to be dead) moves to ``owner`` by a
        compare-and-set. Claims are never deleted.
        """
        now = _utcnow()

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

        def read(session: Session, _retrying: bool) -> list[StatusChange]:
            query = (
                sa.select(StatusHistoryRow)
                .where(StatusHistoryRow.episode_id == episode_id)
                .order_by(StatusHistoryRow.id)
            )
            return [_to_change(row) for row in session.scalars(query)]

        return self._run(read, write=False)

    def record_metrics(self, episode_id: str, metrics: Mapping[str, float | int]) -> None:
        """Merge ``metrics`` into the episode's metrics (finite numbers only)."""
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"metric {name!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be finite, got {value!r}")
            clean[str(name)] = float(value)
        now = _utcnow()

        def merge(session: Session, _retrying: bool) -> None:
            row = self._locked_episode(session, episode_id)
            row.metrics = {**row.metrics, **clean}
            row.updated_at = now

        self._run(merge, write=True)

    def record_artifacts(self, episode_id: str, artifacts: Mapping[str, str | None]) -> None:
        """Merge ``stage -> URI`` into the episode's artifacts; ``None`` removes a stage."""
        now = _utcnow()

        def merge(session: Session, _retrying: bool) -> None:
            row = self._locked_episode(session, episode_id)
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
        now = _utcnow()

        def write(session: Session, _retrying: bool) -> None:
            row = self._locked_episode(session, episode_id)
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
        statuses = _values(_status_set(expected_statuses))
        when = _as_utc(at)
        since = _as_utc(only_if_status_changed_at)

        def compare_and_set(session: Session, retrying: bool) -> bool:
            row = self._locked_episode(session, episode_id)
            if retrying and row.raw_purged_at == when:
                return True  # an earlier attempt of this call committed
            conditions = [
                EpisodeRow.episode_id == episode_id,
                EpisodeRow.status.in_(statuses),
                EpisodeRow.status_changed_at == since,
                EpisodeRow.raw_purged_at.is_(None),
            ]
            if only_if_source_generation is not None:
                conditions.append(EpisodeRow.source_generation == only_if_source_generation)
            result = session.execute(
                sa.update(EpisodeRow)
                .where(*conditions)
                .values(raw_purged_at=when, updated_at=when)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

        return self._run(compare_and_set, write=True)

    def unmark_raw_purged(self, episode_id: str, *, only_if_purged_at: datetime) -> bool:
        """Undo :meth:`mark_raw_purged` after its deletion failed: clear ``raw_purged_at``
        only while it is still ``only_if_purged_at``. ``False`` (no write) otherwise."""
        when = _as_utc(only_if_purged_at)

        def compare_and_clear(session: Session, retrying: bool) -> bool:
            row = self._locked_episode(session, episode_id)
            if row.raw_purged_at != when:
                # Cleared already: by an earlier attempt of this call, or by a new version.
                return retrying and row.raw_purged_at is None
            row.raw_purged_at = None
            row.updated_at = _utcnow()
            return True

        return self._run(compare_and_clear, write=True)

    def purge_candidates(
        self, *, now: datetime, retention: timedelta, limit: int | None = None
    ) -> list[Episode]:
        """Episodes whose raw media the retention purge may delete, oldest change first.

        One query: status ``processed`` or ``published``, unchanged since before
        ``now - retention``, raw media not marked purged.
        """
        if retention < timedelta(0):
            raise ValueError(f"retention must not be negative, got {retention}")
        cutoff = _as_utc(now) - retention

        def read(session: Session, _retrying: bool) -> list[Episode]:
            query = (
                sa.select(EpisodeRow)
                .where(
                    EpisodeRow.status.in_(_values(FINISHED_STATUSES)),
                    EpisodeRow.status_changed_at < cutoff,
                    EpisodeRow.raw_purged_at.is_(None),
                )
                .order_by(EpisodeRow.status_changed_at, EpisodeRow.episode_id)
            )
            if limit is not None:
                query = query.limit(limit)
            return [_to_episode(row) for row in session.scalars(query)]

        return self._run(read, write=False)
