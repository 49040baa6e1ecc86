"""The purge plan: which episodes lose their raw media and what each purge deletes, decided
in SQL and by listing the store; it reads only.

Only episodes whose status is ``processed``, ``published`` or ``superseded``, unchanged for
longer than the retention, lose their raw media (``episodes/<ep>/raw.*`` and copies of those
bytes left in ``uploads/``). Every version of an upload name is an episode of its own with its
own ``episodes/<ep>/`` prefix and its own retention: purging one never touches another's
objects, and a superseded version keeps its raw media until its own retention is over (counted
from the change to ``superseded``). The plan records each object to delete with its
generation, before anything is marked (step 1 in :mod:`pod_assets.purge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pod_assets import defaults, layout
from pod_assets.purge.report import FailedEpisode, KeptEpisode, describe
from pod_resources.catalog import FINISHED_STATUSES, Catalog, Episode, EpisodeStatus, queries
from pod_resources.storage import InvalidKeyError, ObjectInfo, ObjectStore

KEPT_SAMPLE = 20
"""Kept episodes listed by name per kind; the rest are only counted (``kept_counts``)."""
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
class PurgePlan:
    now: datetime
    retention: timedelta
    eligible: tuple[PlannedEpisode, ...]
    kept: tuple[KeptEpisode, ...]
    failed: tuple[FailedEpisode, ...] = ()
    """Episodes whose objects could not be listed: retried next time."""
    unfinished: tuple[PlannedEpisode, ...] = ()
    """Episodes marked purged by a purge that did not finish: what is left of them."""
    eligible_total: int = 0
    """Every eligible episode, planned or left for the next purge by ``max_deletions``."""
    kept_counts: Mapping[str, int] = field(default_factory=dict)
    """Episodes keeping their raw media, by reason (``kept`` lists a sample of them)."""

    @property
    def eligible_count(self) -> int:
        """Eligible episodes, those the plan left out (``max_deletions``, listing failures)
        included; a plan built by hand (no total) counts what it holds."""
        return self.eligible_total or len(self.eligible) + len(self.failed)


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


def _kept_reason(episode: Episode, cutoff: datetime) -> str:
    if episode.status not in FINISHED_STATUSES:
        return f"status={episode.status}"
    if episode.status_changed_at >= cutoff:
        return REASON_WITHIN_RETENTION
    return "changed during selection"


def _objects_to_delete(
    store: ObjectStore, episode: Episode, recorded: dict[str, set[int]]
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


def _listed(
    catalog: Catalog, store: ObjectStore, episodes: list[Episode]
) -> tuple[list[tuple[Episode, tuple[PurgeObject, ...] | None]], list[FailedEpisode]]:
    """Each episode with what purging it deletes (``None``: a new version awaits processing),
    and the episodes whose objects could not be listed."""
    listed: list[tuple[Episode, tuple[PurgeObject, ...] | None]] = []
    failed: list[FailedEpisode] = []
    recorded = queries.upload_generations(catalog, [e.episode_id for e in episodes])
    for episode in episodes:
        try:
            objects = _objects_to_delete(store, episode, recorded[episode.episode_id])
        except Exception as exc:  # one unreadable episode must not stop the others
            failed.append(FailedEpisode(episode.episode_id, f"listing failed: {describe(exc)}"))
            continue
        listed.append((episode, objects))
    return listed, failed


def _kept_sample(
    catalog: Catalog,
    *,
    now: datetime,
    retention: timedelta,
    candidates: list[Episode],
    backlog: int,
    kept_sample: int,
) -> tuple[list[KeptEpisode], dict[str, int]]:
    """The episodes keeping their raw media, counted by reason in SQL, a sample of each kind
    listed; those ``max_deletions`` leaves for a later purge among them."""
    counts, sample = queries.not_eligible_summary(
        catalog, now=now, retention=retention, sample=kept_sample
    )
    kept = [KeptEpisode(e.episode_id, _kept_reason(e, now - retention)) for e in sample]
    deferred = backlog - len(candidates)
    if deferred > 0:
        counts[REASON_MAX_DELETIONS] = deferred
        later = queries.eligible_after(
            catalog,
            now=now,
            retention=retention,
            last=candidates[-1] if candidates else None,
            limit=kept_sample,
        )
        kept += [KeptEpisode(e.episode_id, REASON_MAX_DELETIONS) for e in later]
    return kept, counts


def plan_purge(
    catalog: Catalog,
    store: ObjectStore,
    *,
    now: datetime,
    retention: timedelta,
    max_deletions: int | None = defaults.PURGE_MAX_DELETIONS,
    kept_sample: int = KEPT_SAMPLE,
) -> PurgePlan:
    """Select the episodes whose raw media may go, and what each purge deletes.

    Reads only, and only what it acts on: the eligible episodes (``processed``,
    ``published`` or ``superseded``, status unchanged since before ``now - retention``, raw
    media not yet purged) in retention order, at most ``max_deletions`` of them, selected
    in SQL; the episodes it keeps are counted by reason in SQL, with a sample of at most
    ``kept_sample`` of each kind listed. Memory and time follow ``max_deletions``, not the
    size of the catalog.
    """
    now = _utc(now)
    if retention < timedelta(0):
        raise PurgeError(f"retention must not be negative, got {retention}")
    if max_deletions is not None and max_deletions < 0:
        raise PurgeError(f"max_deletions must not be negative, got {max_deletions}")
    backlog = queries.purge_backlog(catalog, now=now, retention=retention)
    candidates = catalog.purge_candidates(now=now, retention=retention, limit=max_deletions)
    kept, counts = _kept_sample(
        catalog, now=now, retention=retention, candidates=candidates,
        backlog=backlog.count, kept_sample=kept_sample,
    )
    listed, failed = _listed(catalog, store, candidates)
    eligible: list[PlannedEpisode] = []
    for episode, objects in listed:
        if objects is None:
            kept.append(KeptEpisode(episode.episode_id, REASON_NEW_VERSION))
            counts[REASON_NEW_VERSION] = counts.get(REASON_NEW_VERSION, 0) + 1
        else:
            eligible.append(PlannedEpisode.of(episode, objects))
    unfinished, unlisted = _unfinished_purges(catalog, store, limit=max_deletions)
    return PurgePlan(
        now=now,
        retention=retention,
        eligible=tuple(eligible),
        kept=tuple(kept),
        failed=(*failed, *unlisted),
        unfinished=tuple(unfinished),
        eligible_total=backlog.count - counts.get(REASON_NEW_VERSION, 0),
        kept_counts=counts,
    )


def _unfinished_purges(
    catalog: Catalog, store: ObjectStore, *, limit: int | None
) -> tuple[list[PlannedEpisode], list[FailedEpisode]]:
    """Episodes marked purged that still list a ``raw_audio`` artifact, with what is left;
    those whose objects could not be listed. One whose new version waits is left out: its
    run restores the episode."""
    listed, failed = _listed(catalog, store, queries.unfinished_purges(catalog, limit=limit))
    unfinished = [PlannedEpisode.of(e, objects) for e, objects in listed if objects is not None]
    return unfinished, failed
