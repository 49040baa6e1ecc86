"""``episode_status_sensor``: the catalog's word on each episode, shown in the Dagster UI.

The catalog holds an episode's status, title and timestamps; Dagster's event log knows only
runs. Each tick this sensor reads the episodes whose status changed since the last tick and
reports one ``AssetObservation`` per episode asset and partition (``SensorResult``'s
``asset_events``), with ``episode_status``, ``title``, ``uploaded_at``,
``status_changed_at``, ``error`` … as metadata. The partition's page of every episode asset
then shows the status next to the step's own metadata, also for changes made outside runs
(``pod publish``, the purge, a run that died).

The cursor keeps the newest ``status_changed_at`` seen and the changes of the last
:data:`LOOKBACK_S` seconds already reported: a change committed late with an earlier
timestamp is still found, and none is reported twice.

A run's last step marks its episode ``processed`` (or ``error``) just before the step's
materialization is written. That change is held back while a run of the episode's partition
is still going, so that the observation comes after the run's materializations: the
partition's page shows the latest event first, and the catalog's word is then on top. It is
held back for at most :data:`HOLD_S` (a run whose process died may stay "started" until run
monitoring ends it), well inside the lookback, so it is never lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.tags import PARTITION_TAG
from pod_resources.catalog import Catalog, CatalogResource, EpisodeStatus
from pod_resources.catalog.models import EpisodeRow
from pod_resources.catalog.records import Episode, to_episode

OBSERVED_ASSETS: tuple[str, ...] = ("raw_audio", "transcript", "cleaned_audio", "final_episode")
LOOKBACK_S = 60.0
MAX_CHANGES_PER_TICK = 200
STATUS_SENSOR_INTERVAL_S = 10


@dataclass(frozen=True)
class StatusCursor:
    """Newest change seen, and the ``episode_id@changed_at`` reported within the lookback."""

    newest: datetime | None = None
    recent: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> StatusCursor:
        if not text:
            return cls()
        data = json.loads(text)
        newest = datetime.fromisoformat(data["newest"]) if data["newest"] else None
        return cls(newest=newest, recent=frozenset(data["recent"]))

    def dump(self) -> str:
        newest = self.newest.isoformat() if self.newest else None
        return json.dumps({"newest": newest, "recent": sorted(self.recent)})


def _change_key(episode: Episode) -> str:
    return f"{episode.episode_id}@{_utc(episode.status_changed_at).isoformat()}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def changed_episodes(catalog: Catalog, cursor: StatusCursor, *, limit: int) -> list[Episode]:
    """Episodes whose status changed after ``cursor.newest - LOOKBACK_S`` and that the cursor
    has not reported, oldest change first, at most ``limit``."""
    since = cursor.newest - timedelta(seconds=LOOKBACK_S) if cursor.newest else None

    def read(session: Session, _retrying: bool) -> list[Episode]:
        query = sa.select(EpisodeRow).order_by(EpisodeRow.status_changed_at, EpisodeRow.episode_id)
        if since is not None:
            query = query.where(EpisodeRow.status_changed_at >= since)
        rows = session.scalars(query.limit(limit + len(cursor.recent)))
        return [to_episode(row) for row in rows]

    fresh = [e for e in catalog._run(read, write=False) if _change_key(e) not in cursor.recent]
    return fresh[:limit]


def advance(cursor: StatusCursor, reported: Sequence[Episode]) -> StatusCursor:
    """The cursor after ``reported``: newest change, and the keys still inside the lookback."""
    if not reported:
        return cursor
    newest = max([_utc(e.status_changed_at) for e in reported]
                 + ([cursor.newest] if cursor.newest else []))
    horizon = newest - timedelta(seconds=LOOKBACK_S)
    keys = set(cursor.recent) | {_change_key(e) for e in reported}
    recent = {k for k in keys if datetime.fromisoformat(k.split("@", 1)[1]) >= horizon}
    return StatusCursor(newest=newest, recent=frozenset(recent))


HOLD_S = LOOKBACK_S / 2
"""Longest a run's end is held back while the run is still going."""
_RUN_ENDS = frozenset({EpisodeStatus.PROCESSED, EpisodeStatus.ERROR})
"""Statuses a run's last step sets just before its own events are written."""
_GOING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def partitions_in_running_runs(instance: dg.DagsterInstance) -> set[str]:
    """The episode partitions of the runs going now (bounded by the run queue's limit)."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=_GOING), limit=1000)
    return {tag for r in records if (tag := r.dagster_run.tags.get(PARTITION_TAG))}


def status_metadata(episode: Episode) -> dict[str, dg.MetadataValue]:
    """What the catalog says about ``episode``, as observation metadata."""
    metadata: dict[str, dg.MetadataValue] = {
        "episode_status": dg.MetadataValue.text(str(episode.status)),
        "title": dg.MetadataValue.text(episode.title),
        "source_name": dg.MetadataValue.text(layout.printable(episode.source_name)),
        "version": dg.MetadataValue.int(episode.version),
        "uploaded_at": dg.MetadataValue.timestamp(_utc(episode.created_at)),
        "status_changed_at": dg.MetadataValue.timestamp(_utc(episode.status_changed_at)),
    }
    if episode.last_error:
        metadata["error"] = dg.MetadataValue.text(episode.last_error)
        metadata["error_step"] = dg.MetadataValue.text(episode.error_step or "")
    if episode.raw_purged_at:
        metadata["raw_purged_at"] = dg.MetadataValue.timestamp(_utc(episode.raw_purged_at))
    if episode.superseded_by:
        metadata["superseded_by"] = dg.MetadataValue.text(episode.superseded_by)
    return metadata


@dg.sensor(
    name="episode_status_sensor",
    minimum_interval_seconds=STATUS_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports each change of an episode's catalog status as an observation on "
    "its partition of every episode asset (status, title, timestamps, error).",
)
def episode_status_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SensorResult:
    cursor = StatusCursor.parse(context.cursor)
    changed = changed_episodes(catalog.get_catalog(), cursor, limit=MAX_CHANGES_PER_TICK)
    running = partitions_in_running_runs(context.instance) if changed else set()
    hold_from = datetime.now(UTC) - timedelta(seconds=HOLD_S)
    known = {
        e.episode_id for e in changed
        if context.instance.has_dynamic_partition(episode_partitions.name, e.episode_id)
        and not (
            e.status in _RUN_ENDS and e.episode_id in running and _utc(e.status_changed_at) > hold_from
        )
    }
    events = [
        dg.AssetObservation(asset_key=asset, partition=episode.episode_id, metadata=status_metadata(episode))
        for episode in changed
        if episode.episode_id in known
        for asset in OBSERVED_ASSETS
    ]
    # An episode whose partition is not added yet, or whose run is still writing its
    # events, is read again on the next ticks (while its change is inside the lookback) or
    # reported with its next change.
    reported = [e for e in changed if e.episode_id in known]
    return dg.SensorResult(asset_events=events, cursor=advance(cursor, reported).dump())
