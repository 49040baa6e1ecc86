"""Carrying out a purge plan, episode by episode, in the order ``docs/purge.md`` argues safe
(steps 2 to 6 in :mod:`pod_assets.purge`): mark, delete pinned to the planned generations,
take the mark back if a deletion fails, clear the ``raw_audio`` artifact once the objects are
gone. Each episode's purge returns what it came to; nothing is passed in to be filled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta

from pod_assets import defaults
from pod_assets.purge.plan import (
    REASON_NEW_VERSION,
    PlannedEpisode,
    PurgeObject,
    PurgePlan,
    plan_purge,
)
from pod_assets.purge.report import (
    DeletedEpisode,
    FailedEpisode,
    KeptEpisode,
    PurgeEntry,
    PurgeReport,
    describe,
)
from pod_resources.catalog import FINISHED_STATUSES, Catalog, EpisodeStatus
from pod_resources.storage import ObjectNotFoundError, ObjectStore, PreconditionFailedError


def _deleted(
    planned: PlannedEpisode, status: EpisodeStatus, objects: Sequence[PurgeObject], at: datetime
) -> DeletedEpisode:
    return DeletedEpisode(
        episode_id=planned.episode_id,
        status=status,
        objects=tuple(obj.key for obj in objects),
        bytes=sum(obj.size for obj in objects),
        purged_at=at,
    )


def _delete_objects(
    store: ObjectStore, planned: PlannedEpisode
) -> tuple[list[PurgeObject], KeptEpisode | FailedEpisode | None]:
    """Delete the planned objects in order; stop at the first that cannot be deleted. The
    objects gone, and what stopped it: a race (the object was rewritten) or a failure."""
    deleted: list[PurgeObject] = []
    for obj in planned.objects:
        try:
            store.delete(obj.key, if_generation_match=obj.generation)
        except ObjectNotFoundError:
            continue  # gone already (a peer, or an earlier attempt): nothing freed
        except PreconditionFailedError:
            raced = f"{obj.key} was rewritten during the purge"
            return deleted, KeptEpisode(planned.episode_id, raced)
        except Exception as exc:  # one failed deletion must not stop the other episodes
            if not _is_gone(store, obj):
                return deleted, FailedEpisode(planned.episode_id, describe(exc), obj.key)
            # the delete took effect; only its answer was lost
        deleted.append(obj)
    return deleted, None


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


def _clear_raw_artifact(catalog: Catalog, episode_id: str) -> list[FailedEpisode]:
    """The purge of the episode is complete: it no longer lists raw media."""
    try:
        catalog.record_artifacts(episode_id, {"raw_audio": None})
    except Exception as exc:  # the next purge finds nothing left and clears it then
        return [FailedEpisode(episode_id, f"catalog: {describe(exc)}")]
    return []


def _unmark(catalog: Catalog, planned: PlannedEpisode, marked_at: datetime) -> list[FailedEpisode]:
    """Take back the mark after a failed deletion (compare-and-set on the mark set)."""
    try:
        catalog.unmark_raw_purged(planned.episode_id, only_if_purged_at=marked_at)
    except Exception as exc:
        error = f"could not clear raw_purged_at after a failed deletion: {describe(exc)}"
        return [FailedEpisode(planned.episode_id, error)]
    return []


def _purge_eligible(
    catalog: Catalog, store: ObjectStore, planned: PlannedEpisode, now: datetime
) -> list[PurgeEntry]:
    """Mark the episode purged if it is still as selected, then delete its raw media."""
    try:
        marked = catalog.mark_raw_purged(
            planned.episode_id,
            expected_statuses=FINISHED_STATUSES,
            at=now,
            only_if_status_changed_at=planned.status_changed_at,
            only_if_source_generation=planned.source_generation,
        )
        if not marked:
            return [KeptEpisode(planned.episode_id, _skip_reason(catalog, planned))]
    except Exception as exc:
        return [FailedEpisode(planned.episode_id, f"catalog: {describe(exc)}")]
    deleted, stopped = _delete_objects(store, planned)
    if stopped is not None:
        return [*_unmark(catalog, planned, now), stopped]
    cleared = _clear_raw_artifact(catalog, planned.episode_id)
    return [_deleted(planned, planned.status, deleted, now), *cleared]


def _finish_purge(
    catalog: Catalog, store: ObjectStore, planned: PlannedEpisode
) -> list[PurgeEntry]:
    """Delete what a purge cut short left of ``planned``, while its mark still holds.

    The objects were listed before the mark is checked again here, and every delete is
    pinned to its listed generation: a new upload that restores the episode after this
    check writes new generations, which no delete below can touch.
    """
    try:
        current = catalog.get_episode(planned.episode_id)
    except Exception as exc:
        return [FailedEpisode(planned.episode_id, f"catalog: {describe(exc)}")]
    if (
        current is None
        or current.raw_purged_at != planned.purged_at
        or current.source_generation != planned.source_generation
    ):
        return [KeptEpisode(planned.episode_id, "restored by a new upload")]
    if not planned.objects:  # the deletes were done; only the artifact was left
        return [*_clear_raw_artifact(catalog, planned.episode_id)]
    deleted, stopped = _delete_objects(store, planned)
    if stopped is not None:
        return [stopped]
    cleared = _clear_raw_artifact(catalog, planned.episode_id)
    purged_at: datetime = current.raw_purged_at  # type: ignore[assignment]  # the mark, held
    return [_deleted(planned, current.status, deleted, purged_at), *cleared]


def _purge_each(
    catalog: Catalog, store: ObjectStore, plan: PurgePlan
) -> Iterator[list[PurgeEntry]]:
    """Purges cut short first, then the eligible episodes: what each came to."""
    for planned in plan.unfinished:
        yield _finish_purge(catalog, store, planned)
    for planned in plan.eligible:
        yield _purge_eligible(catalog, store, planned, plan.now)


def _would_delete(plan: PurgePlan) -> list[PurgeEntry]:
    return [
        _deleted(p, p.status, p.objects, plan.now)
        for p in (*plan.unfinished, *plan.eligible)
        if p.objects
    ]


def execute_purge(
    catalog: Catalog,
    store: ObjectStore,
    plan: PurgePlan,
    *,
    dry_run: bool = False,
    on_deleted: Callable[[DeletedEpisode], None] | None = None,
) -> PurgeReport:
    """Carry out ``plan`` episode by episode (see :mod:`pod_assets.purge` for the order).

    A dry run writes nothing and reports what would be deleted. ``on_deleted`` is called
    after each episode whose raw media is gone (the Dagster job logs an observation).
    """
    entries: list[PurgeEntry] = [*plan.failed]
    if dry_run:
        entries += _would_delete(plan)
    else:
        for outcome in _purge_each(catalog, store, plan):
            entries += outcome
            for entry in outcome:
                if isinstance(entry, DeletedEpisode) and on_deleted is not None:
                    on_deleted(entry)
    deleted, skipped, failed = PurgeReport.parts(entries)
    return PurgeReport(
        now=plan.now,
        retention=plan.retention,
        dry_run=dry_run,
        eligible=plan.eligible_count,
        deleted=deleted,
        kept=plan.kept,
        skipped_by_race=skipped,
        failed=failed,
        kept_counts=plan.kept_counts,
    )


def purge(
    catalog: Catalog,
    store: ObjectStore,
    *,
    now: datetime,
    retention: timedelta,
    dry_run: bool = False,
    max_deletions: int | None = defaults.PURGE_MAX_DELETIONS,
    on_deleted: Callable[[DeletedEpisode], None] | None = None,
) -> PurgeReport:
    """:func:`plan_purge`, then :func:`execute_purge`."""
    plan = plan_purge(catalog, store, now=now, retention=retention, max_deletions=max_deletions)
    return execute_purge(catalog, store, plan, dry_run=dry_run, on_deleted=on_deleted)
