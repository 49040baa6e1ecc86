"""``purge_schedule`` and ``purge_sensor``: both launch ``purge_job``.

* The schedule runs daily (cron configurable, default 03:00 UTC) and skips the day when no
  episode is eligible and no purge was left unfinished. Its run key is the scheduled time,
  so a tick evaluated twice never launches the same purge twice.
* The sensor requests a purge when episodes became eligible since its cursor (the latest
  ``status_changed_at`` among the eligible episodes it has handled), and again, once the
  latest purge run has ended, while eligible episodes remain: a backlog larger than
  ``max_deletions`` drains run after run instead of waiting for the next newly eligible
  episode. The backlog's run key is its oldest change and its size, so a purge that could
  delete nothing (every deletion failed) is not requested again until something changes;
  the daily schedule retries it.

Both read counts in SQL (never the eligible rows) and pass the time they evaluated at as
the run's ``now``, so the run purges what the tick saw eligible (and nothing newer), with the
configured retention and ``max_deletions`` (``POD_PURGE_RETENTION_HOURS``,
``POD_PURGE_MAX_DELETIONS``; defaults in :mod:`pod_assets.defaults`). The job, its config and
the purge itself are in :mod:`pod_assets.purge`.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from pod_assets import defaults
from pod_assets.purge.job import purge_job, purge_run_config
from pod_assets.purge.plan import parse_time
from pod_assets.tags import TRIGGER_TAG
from pod_resources.catalog import Catalog, CatalogResource, queries

PURGE_SENSOR_INTERVAL_S = 300
_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def schedule_run_key(scheduled_at: datetime) -> str:
    return f"purge-schedule@{scheduled_at.astimezone(UTC).isoformat()}"


def sensor_run_key(latest_eligible_change: datetime) -> str:
    return f"purge-eligible@{latest_eligible_change.astimezone(UTC).isoformat()}"


def backlog_run_key(backlog: queries.PurgeBacklog) -> str:
    oldest = backlog.oldest_change.astimezone(UTC).isoformat()  # type: ignore[union-attr]
    return f"purge-backlog@{oldest}#{backlog.count}"


def _backlog(catalog: Catalog, now: datetime, retention_hours: float) -> queries.PurgeBacklog:
    return queries.purge_backlog(catalog, now=now, retention=timedelta(hours=retention_hours))


def _purge_request(
    key: str, now: datetime, *, retention_hours: float, max_deletions: int, tags: dict[str, str]
) -> dg.RunRequest:
    """A purge of what was eligible at ``now``, with the configured retention and cap."""
    config = purge_run_config(now=now, retention_hours=retention_hours, max_deletions=max_deletions)
    return dg.RunRequest(run_key=key, run_config=config, tags=tags)


def _last_purge_finished(instance: dg.DagsterInstance, job_name: str) -> bool | None:
    """Whether the latest run of the purge job has ended (``None``: it never ran)."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name), limit=1)
    if not records:
        return None
    return records[0].dagster_run.status not in _IN_PROGRESS


def _sensor_purge(
    backlog: queries.PurgeBacklog,
    handled: datetime | None,
    last_purge_finished: Callable[[], bool | None],
) -> tuple[str, str] | None:
    """The run key and trigger of the purge the sensor requests, or ``None`` to wait: episodes
    became eligible since ``handled``, or a purge ran and eligible ones remain (the next batch
    of a backlog larger than ``max_deletions``)."""
    newest = backlog.newest_change
    assert newest is not None  # count > 0
    if handled is None or newest > handled:
        return sensor_run_key(newest), "sensor"
    if last_purge_finished():
        return backlog_run_key(backlog), "sensor-backlog"
    return None


def build_purge_schedule(
    *,
    cron: str = defaults.PURGE_CRON,
    retention_hours: float = defaults.PURGE_RETENTION_HOURS,
    max_deletions: int = defaults.PURGE_MAX_DELETIONS,
    job: dg.JobDefinition = purge_job,
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="purge_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily retention purge of raw media ({cron}, UTC).",
    )
    def purge_schedule(
        context: dg.ScheduleEvaluationContext, catalog: CatalogResource
    ) -> dg.RunRequest | dg.SkipReason:
        """Purges raw media past the retention, once per scheduled time."""
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        now = scheduled.astimezone(UTC)
        own = catalog.get_catalog()
        backlog = _backlog(own, now, retention_hours)
        cut_short = queries.unfinished_purges(own, limit=1)
        if not backlog.count and not cut_short:
            return dg.SkipReason(f"no episode is past the {retention_hours} h retention")
        tags = {
            TRIGGER_TAG: "schedule",
            "pod/eligible": str(backlog.count),
            "pod/unfinished": str(len(cut_short)),
        }
        return _purge_request(
            schedule_run_key(now), now,
            retention_hours=retention_hours, max_deletions=max_deletions, tags=tags,
        )

    return purge_schedule


def build_purge_sensor(
    *,
    retention_hours: float = defaults.PURGE_RETENTION_HOURS,
    max_deletions: int = defaults.PURGE_MAX_DELETIONS,
    minimum_interval_seconds: int = PURGE_SENSOR_INTERVAL_S,
    job: dg.JobDefinition = purge_job,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="purge_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Purges raw media as soon as episodes pass the retention, "
        "and again while a backlog remains.",
    )
    def purge_sensor(
        context: dg.SensorEvaluationContext, catalog: CatalogResource
    ) -> dg.SensorResult:
        """Requests a purge when episodes became eligible, or while eligible ones remain."""
        now = datetime.now(UTC)
        backlog = _backlog(catalog.get_catalog(), now, retention_hours)
        if not backlog.count:
            return dg.SensorResult(
                skip_reason="no episode is eligible for the purge", cursor=context.cursor
            )
        handled = parse_time(context.cursor) if context.cursor else None
        newest = backlog.newest_change
        assert newest is not None  # count > 0
        wanted = _sensor_purge(
            backlog, handled, lambda: _last_purge_finished(context.instance, job.name)
        )
        if wanted is None:
            return dg.SensorResult(
                skip_reason="no episode became eligible; the requested purge has not ended",
                cursor=context.cursor,
            )
        key, trigger = wanted
        tags = {TRIGGER_TAG: trigger, "pod/eligible": str(backlog.count)}
        request = _purge_request(
            key, now, retention_hours=retention_hours, max_deletions=max_deletions, tags=tags
        )
        return dg.SensorResult(
            run_requests=[request],
            cursor=max(newest, handled or newest).astimezone(UTC).isoformat(),
        )

    return purge_sensor
