"""Retention-aware purge of raw media, without Dagster: :func:`plan_purge` decides,
:func:`execute_purge` deletes. ``purge_job`` and ``pod purge`` both call these.

Only episodes whose status is ``processed``, ``published`` or ``superseded``, unchanged for
longer than the retention, lose their raw media (``episodes/<ep>/raw.*`` and copies of those
bytes left in ``uploads/``). Every version of an upload name is an episode of its own with its
own ``episodes/<ep>/`` prefix and its own retention: purging one never touches another's
objects, and a superseded version keeps its raw media until its own retention is over (counted
from the change to ``superseded``). Transcripts, cleaned audio, final episodes and Dagster partitions are never
touched. Why no interleaving with a reprocessing run can delete bytes that run needs is
argued in ``docs/purge.md``; in short, per episode:

1. the plan records each object to delete with its generation, before anything is marked;
2. :meth:`Catalog.mark_raw_purged` sets ``raw_purged_at`` in one transaction, only if the
   status, the time of its last change and the upload generation are still those the
   selection saw (an episode that moved to ``processing`` meanwhile is skipped);
3. from then on :meth:`Catalog.set_status` refuses to move it to ``processing``;
4. the objects are deleted, each pinned to its planned generation, raw media last;
5. if a deletion fails, the mark is taken back (compare-and-set) and the episode is tried
   again by the next purge;
6. once its objects are gone, the episode's ``raw_audio`` artifact is cleared. An episode
   marked purged that still lists one is a purge cut short (the process died between the
   mark and the deletes): the next purge lists what is left and deletes it, pinned to the
   generations it sees and only while the mark is the one it read (no run can start on a
   marked episode, and a new upload that restores it clears the mark first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pod_assets import layout
from pod_resources.catalog import FINISHED_STATUSES, Catalog, Episode, EpisodeStatus
from pod_resources.storage import (
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    PreconditionFailedError,
)

DEFAULT_RETENTION_HOURS = 24.0
DEFAULT_MAX_DELETIONS = 1000
RAW_PREFIX = "raw."

REASON_WITHIN_RETENTION = "within retention"
REASON_NEW_VERSION = "new version awaiting processing"
REASON_MAX_DELETIONS = "max_deletions reached"


class PurgeError(ValueError):
    """Bad purge arguments (a naive time, a negative retention)."""


@dataclass(frozen=True)
class PurgeObject:
    """One object the purge deletes, pinned to the generation the plan saw."""

    key: str
    generation: int
    size: int


@dataclass(frozen=True)
class PlannedEpisode:
    """An eligible episode and what deleting its raw media takes."""

    episode_id: str
    status: EpisodeStatus
    status_changed_at: datetime
    source_generation: int
    objects: tuple[PurgeObject, ...]
    """Copies left in ``uploads/`` first, ``episodes/<ep>/raw.*`` last."""
    purged_at: datetime | None = None
    """For a purge cut short: the mark it left, which must still hold when deleting."""

    @classmethod
    def of(cls, episode: Episode, objects: tuple[PurgeObject, ...]) -> PlannedEpisode:
        return cls(
            episode_id=episode.episode_id,
            status=episode.status,
            status_changed_at=episode.status_changed_at,
            source_generation=episode.source_generation,
            objects=objects,
            purged_at=episode.raw_purged_at,
        )

    @property
    def bytes(self) -> int:
        return sum(obj.size for obj in self.objects)


@dataclass(frozen=True)
class KeptEpisode:
    episode_id: str
    reason: str
    """``status=processing``, ``within retention``, ``new version awaiting processing``…"""


@dataclass(frozen=True)
class DeletedEpisode:
    episode_id: str
    status: EpisodeStatus
    objects: tuple[str, ...]
    """Keys deleted (in a dry run: that would be deleted)."""
    bytes: int
    purged_at: datetime


@dataclass(frozen=True)
class SkippedEpisode:
    """Eligible when selected, changed before its raw media went: nothing of it deleted."""

    episode_id: str
    reason: str


@dataclass(frozen=True)
class FailedEpisode:
    """Its raw media could not be deleted; it stays unpurged and the next purge retries."""

    episode_id: str
    error: str
    key: str | None = None


@dataclass(frozen=True)
class PurgePlan:
    now: datetime
    retention: timedelta
    eligible: tuple[PlannedEpisode, ...]
    kept: tuple[KeptEpisode, ...]
    failed: tuple[FailedEpisode, ...] = ()
    """Episodes whose objects could not be listed: retried next time."""
    unfinished: tuple[PlannedEpisode, ...] = ()
    """Episodes marked purged by a purge that did not finish: what is left of them."""

    @property
    def cutoff(self) -> datetime:
        return self.now - self.retention


@dataclass(frozen=True)
class PurgeReport:
    now: datetime
    retention: timedelta
    dry_run: bool
    eligible: int
    """Episodes selected as eligible (before ``max_deletions``)."""
    deleted: tuple[DeletedEpisode, ...] = ()
    kept: tuple[KeptEpisode, ...] = ()
    skipped_by_race: tuple[SkippedEpisode, ...] = ()
    failed: tuple[FailedEpisode, ...] = ()

    @property
    def bytes_freed(self) -> int:
        return 0 if self.dry_run else sum(entry.bytes for entry in self.deleted)

    @property
    def objects_deleted(self) -> int:
        return 0 if self.dry_run else sum(len(entry.objects) for entry in self.deleted)

    def to_json(self) -> dict[str, Any]:
        """The shape ``pod purge --json`` prints. Episodes skipped by a race are also
        listed under ``kept`` (their reason says what changed)."""
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "retention_hours": self.retention.total_seconds() / 3600,
            "eligible": self.eligible,
            "bytes_freed": self.bytes_freed,
            "deleted": [
                {
                    "episode_id": entry.episode_id,
                    "status": str(entry.status),
                    "objects": list(entry.objects),
                    "bytes": entry.bytes,
                }
                for entry in self.deleted
            ],
            "kept": [
                {"episode_id": entry.episode_id, "reason": entry.reason}
                for entry in (*self.kept, *self.skipped_by_race)
            ],
            "skipped_by_race": [entry.episode_id for entry in self.skipped_by_race],
            "failed": [
                {"episode_id": entry.episode_id, "key": entry.key, "error": entry.error}
                for entry in self.failed
            ],
        }


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise PurgeError(f"naive datetime {when!r}: purge times must be tz-aware")
    return when.astimezone(UTC)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise PurgeError(f"not an ISO 8601 time: {text!r}") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def retention_from_hours(hours: float) -> timedelta:
    if hours < 0:
        raise PurgeError(f"retention_hours must not be negative, got {hours}")
    return timedelta(hours=hours)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _kept_reason(episode: Episode, cutoff: datetime) -> str:
    if episode.status not in FINISHED_STATUSES:
        return f"status={episode.status}"
    if episode.status_changed_at >= cutoff:
        return REASON_WITHIN_RETENTION
    return "changed during selection"


def _objects_to_delete(
    store: ObjectStore, catalog: Catalog, episode: Episode
) -> tuple[PurgeObject, ...] | None:
    """What purging the episode deletes; ``None`` when a new version awaits processing.

    Raw media: every ``episodes/<ep>/raw.*``. Copies in ``uploads/``: an upload generation
    recorded for the episode that is still the current object and holds the same bytes
    (same MD5) as one of its raw objects; those are leftovers of ``raw_audio`` taking the
    upload, or duplicates of it. Unregistered or different bytes are never deleted.
    An upload of the episode's registered generation with other bytes is a new version
    that has not been processed yet: the episode is not purged at all, since the run about
    to process it would be refused. (New bytes under a name are registered as a new episode,
    ``<ep>-v<n>``, so only a catalog written before versions existed has such an upload; the
    check stays as a guard.)
    """
    raw = [
        info
        for info in store.list(layout.episode_prefix(episode.episode_id))
        if info.key.rsplit("/", 1)[-1].startswith(RAW_PREFIX)
    ]
    raw_md5 = {info.md5_hex for info in raw if info.md5_hex}
    recorded: dict[str, set[int]] = {}
    for upload in catalog.uploads(episode.episode_id):
        recorded.setdefault(upload.object_name, set()).add(upload.generation)
    copies: list[ObjectInfo] = []
    for name, generations in recorded.items():
        try:
            info = store.stat(layout.upload_key(name))
        except InvalidKeyError:
            continue  # a name this store cannot address holds nothing it could delete
        if info is None or info.generation not in generations:
            continue  # gone, or a newer object the catalog has not registered for this episode
        same_bytes = info.md5_hex is not None and info.md5_hex in raw_md5
        if name == episode.source_name and info.generation == episode.source_generation:
            if not same_bytes:
                return None
        if same_bytes:
            copies.append(info)
    return tuple(PurgeObject(i.key, i.generation, i.size) for i in (*copies, *raw))


def plan_purge(
    catalog: Catalog,
    store: ObjectStore,
    *,
    now: datetime,
    retention: timedelta,
    max_deletions: int | None = DEFAULT_MAX_DELETIONS,
) -> PurgePlan:
    """Select the episodes whose raw media may go, and what each purge deletes.

    Reads only. Eligible (one catalog query): ``processed`` or ``published``, status
    unchanged since before ``now - retention``, raw media not yet purged. Every other
    episode that still has raw media is listed as kept, with the reason. At most
    ``max_deletions`` episodes are planned; the rest wait for the next purge.
    """
    now = _utc(now)
    if retention < timedelta(0):
        raise PurgeError(f"retention must not be negative, got {retention}")
    if max_deletions is not None and max_deletions < 0:
        raise PurgeError(f"max_deletions must not be negative, got {max_deletions}")
    cutoff = now - retention
    candidates = catalog.purge_candidates(now=now, retention=retention)
    chosen = {episode.episode_id for episode in candidates}
    episodes = catalog.list_episodes()
    kept = [
        KeptEpisode(episode.episode_id, _kept_reason(episode, cutoff))
        for episode in episodes
        if episode.raw_purged_at is None and episode.episode_id not in chosen
    ]
    eligible: list[PlannedEpisode] = []
    failed: list[FailedEpisode] = []
    for episode in candidates:
        if max_deletions is not None and len(eligible) >= max_deletions:
            kept.append(KeptEpisode(episode.episode_id, REASON_MAX_DELETIONS))
            continue
        try:
            objects = _objects_to_delete(store, catalog, episode)
        except Exception as exc:  # one unreadable episode must not stop the others
            failed.append(FailedEpisode(episode.episode_id, f"listing failed: {_describe(exc)}"))
            continue
        if objects is None:
            kept.append(KeptEpisode(episode.episode_id, REASON_NEW_VERSION))
            continue
        eligible.append(PlannedEpisode.of(episode, objects))
    unfinished = _unfinished_purges(catalog, store, episodes, failed)
    return PurgePlan(
        now=now,
        retention=retention,
        eligible=tuple(eligible),
        kept=tuple(kept),
        failed=tuple(failed),
        unfinished=tuple(unfinished),
    )


def _unfinished_purges(
    catalog: Catalog,
    store: ObjectStore,
    episodes: list[Episode],
    failed: list[FailedEpisode],
) -> list[PlannedEpisode]:
    """Episodes marked purged that still list a ``raw_audio`` artifact, with what is left."""
    unfinished: list[PlannedEpisode] = []
    for episode in episodes:
        if episode.raw_purged_at is None or "raw_audio" not in episode.artifacts:
            continue
        try:
            objects = _objects_to_delete(store, catalog, episode)
        except Exception as exc:
            failed.append(FailedEpisode(episode.episode_id, f"listing failed: {_describe(exc)}"))
            continue
        if objects is None:
            continue  # a new version is waiting: its run restores the episode
        unfinished.append(PlannedEpisode.of(episode, objects))
    return unfinished


@dataclass
class _Deletion:
    deleted: list[PurgeObject] = field(default_factory=list)
    raced: str | None = None
    failed: FailedEpisode | None = None


def _delete_objects(store: ObjectStore, planned: PlannedEpisode) -> _Deletion:
    """Delete the planned objects in order; stop at the first that cannot be deleted."""
    outcome = _Deletion()
    for obj in planned.objects:
        try:
            store.delete(obj.key, if_generation_match=obj.generation)
        except ObjectNotFoundError:
            continue  # gone already (a peer, or an earlier attempt): nothing freed
        except PreconditionFailedError:
            outcome.raced = f"{obj.key} was rewritten during the purge"
            return outcome
        except Exception as exc:  # one failed deletion must not stop the other episodes
            if _is_gone(store, obj):
                outcome.deleted.append(obj)  # the delete took effect; only its answer was lost
                continue
            outcome.failed = FailedEpisode(planned.episode_id, _describe(exc), obj.key)
            return outcome
        outcome.deleted.append(obj)
    return outcome


def _is_gone(store: ObjectStore, obj: PurgeObject) -> bool:
    try:
        info = store.stat(obj.key)
    except Exception:
        return False  # unknown: assume it is still there
    return info is None


def _skip_reason(catalog: Catalog, planned: PlannedEpisode) -> str:
    current = catalog.get_episode(planned.episode_id)
    if current is None:
        return "removed from the catalog"
    if current.raw_purged_at is not None:
        return "already purged by another run"
    if current.source_generation != planned.source_generation:
        return REASON_NEW_VERSION
    return f"status={current.status} (changed during purge)"


def execute_purge(
    catalog: Catalog,
    store: ObjectStore,
    plan: PurgePlan,
    *,
    dry_run: bool = False,
    on_deleted: Callable[[DeletedEpisode], None] | None = None,
) -> PurgeReport:
    """Carry out ``plan`` episode by episode (see the module docstring for the order).

    A dry run writes nothing and reports what would be deleted. ``on_deleted`` is called
    after each episode whose raw media is gone (the Dagster job logs an observation).
    """
    if dry_run:
        would = tuple(
            DeletedEpisode(
                p.episode_id, p.status, tuple(o.key for o in p.objects), p.bytes, plan.now
            )
            for p in (*plan.unfinished, *plan.eligible)
            if p.objects
        )
        return PurgeReport(
            now=plan.now,
            retention=plan.retention,
            dry_run=True,
            eligible=len(plan.eligible) + _deferred(plan),
            deleted=would,
            kept=plan.kept,
            failed=plan.failed,
        )
    deleted: list[DeletedEpisode] = []
    skipped: list[SkippedEpisode] = []
    failed: list[FailedEpisode] = list(plan.failed)
    for planned in plan.unfinished:
        entry = _finish_purge(catalog, store, planned, skipped, failed)
        if entry is not None:
            deleted.append(entry)
            if on_deleted is not None:
                on_deleted(entry)
    for planned in plan.eligible:
        try:
            marked = catalog.mark_raw_purged(
                planned.episode_id,
                expected_statuses=FINISHED_STATUSES,
                at=plan.now,
                only_if_status_changed_at=planned.status_changed_at,
                only_if_source_generation=planned.source_generation,
            )
            if not marked:
                skipped.append(SkippedEpisode(planned.episode_id, _skip_reason(catalog, planned)))
                continue
        except Exception as exc:
            failed.append(FailedEpisode(planned.episode_id, f"catalog: {_describe(exc)}"))
            continue
        outcome = _delete_objects(store, planned)
        if outcome.raced is not None or outcome.failed is not None:
            try:
                catalog.unmark_raw_purged(planned.episode_id, only_if_purged_at=plan.now)
            except Exception as exc:
                failed.append(
                    FailedEpisode(
                        planned.episode_id,
                        f"could not clear raw_purged_at after a failed deletion: {_describe(exc)}",
                    )
                )
            if outcome.failed is not None:
                failed.append(outcome.failed)
            else:
                skipped.append(SkippedEpisode(planned.episode_id, str(outcome.raced)))
            continue
        entry = DeletedEpisode(
            episode_id=planned.episode_id,
            status=planned.status,
            objects=tuple(obj.key for obj in outcome.deleted),
            bytes=sum(obj.size for obj in outcome.deleted),
            purged_at=plan.now,
        )
        _clear_raw_artifact(catalog, planned.episode_id, failed)
        deleted.append(entry)
        if on_deleted is not None:
            on_deleted(entry)
    return PurgeReport(
        now=plan.now,
        retention=plan.retention,
        dry_run=False,
        eligible=len(plan.eligible) + _deferred(plan),
        deleted=tuple(deleted),
        kept=plan.kept,
        skipped_by_race=tuple(skipped),
        failed=tuple(failed),
    )


def _clear_raw_artifact(catalog: Catalog, episode_id: str, failed: list[FailedEpisode]) -> None:
    """The purge of the episode is complete: it no longer lists raw media."""
    try:
        catalog.record_artifacts(episode_id, {"raw_audio": None})
    except Exception as exc:  # the next purge finds nothing left and clears it then
        failed.append(FailedEpisode(episode_id, f"catalog: {_describe(exc)}"))


def _finish_purge(
    catalog: Catalog,
    store: ObjectStore,
    planned: PlannedEpisode,
    skipped: list[SkippedEpisode],
    failed: list[FailedEpisode],
) -> DeletedEpisode | None:
    """Delete what a purge cut short left of ``planned``, while its mark still holds.

    The objects were listed before the mark is checked again here, and every delete is
    pinned to its listed generation: a new upload that restores the episode after this
    check writes new generations, which no delete below can touch.
    """
    try:
        current = catalog.get_episode(planned.episode_id)
    except Exception as exc:
        failed.append(FailedEpisode(planned.episode_id, f"catalog: {_describe(exc)}"))
        return None
    if (
        current is None
        or current.raw_purged_at != planned.purged_at
        or current.source_generation != planned.source_generation
    ):
        skipped.append(SkippedEpisode(planned.episode_id, "restored by a new upload"))
        return None
    if not planned.objects:  # the deletes were done; only the artifact was left
        _clear_raw_artifact(catalog, planned.episode_id, failed)
        return None
    outcome = _delete_objects(store, planned)
    if outcome.failed is not None:
        failed.append(outcome.failed)
        return None
    if outcome.raced is not None:
        skipped.append(SkippedEpisode(planned.episode_id, outcome.raced))
        return None
    _clear_raw_artifact(catalog, planned.episode_id, failed)
    return DeletedEpisode(
        episode_id=planned.episode_id,
        status=current.status,
        objects=tuple(obj.key for obj in outcome.deleted),
        bytes=sum(obj.size for obj in outcome.deleted),
        purged_at=current.raw_purged_at,  # type: ignore[arg-type]
    )


def _deferred(plan: PurgePlan) -> int:
    """Eligible episodes the plan left out (``max_deletions``, listing failures)."""
    return sum(1 for k in plan.kept if k.reason == REASON_MAX_DELETIONS) + sum(
        1 for f in plan.failed
    )


def purge(
    catalog: Catalog,
    store: ObjectStore,
    *,
    now: datetime,
    retention: timedelta,
    dry_run: bool = False,
    max_deletions: int | None = DEFAULT_MAX_DELETIONS,
    on_deleted: Callable[[DeletedEpisode], None] | None = None,
) -> PurgeReport:
    """:func:`plan_purge`, then :func:`execute_purge`."""
    plan = plan_purge(catalog, store, now=now, retention=retention, max_deletions=max_deletions)
    return execute_purge(catalog, store, plan, dry_run=dry_run, on_deleted=on_deleted)
