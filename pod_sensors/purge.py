"""``purge_schedule`` and ``purge_sensor``: both launch ``purge_job``.

* The schedule runs daily (cron configurable, default 03:00 UTC) and skips the day when no
  episode is eligible. Its run key is the scheduled time, so a tick evaluated twice never
  launches the same purge twice.
* The sensor requests a purge whenever episodes became eligible since its cursor, the
  latest ``status_changed_at`` among the eligible episodes it has handled. Its run key is
  that time, so two ticks that see the same eligible set request the same run. An
  episode whose purge failed is older than the cursor: the next purge (daily at the
  latest) retries it without the sensor re-firing on every tick.

Both pass the time they evaluated at as the run's ``now``, so the run purges what the
tick saw eligible (and nothing newer).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from pod_assets.purge import DEFAULT_RETENTION_HOURS, parse_time
from pod_assets.purge_job import purge_job, purge_run_config
from pod_resources.catalog import CatalogResource, Episode

DEFAULT_PURGE_CRON = "0 3 * * *"
PURGE_SENSOR_INTERVAL_S = 300


def _eligible(catalog: CatalogResource, *, now: datetime, retention_hours: float) -> list[Episode]:
    return catalog.get_catalog().purge_candidates(
        now=now, retention=timedelta(hours=retention_hours)
    )


def _cut_short(catalog: CatalogResource) -> list[Episode]:
    """Episodes a purge marked but did not finish (see :mod:`pod_assets.purge`)."""
    return [
        episode
        for episode in catalog.get_catalog().list_episodes()
        if episode.raw_purged_at is not None and "raw_audio" in episode.artifacts
    ]


def schedule_run_key(scheduled_at: datetime) -> str:
    return f"purge-schedule@{scheduled_at.astimezone(UTC).isoformat()}"


def sensor_run_key(latest_eligible_change: datetime) -> str:
    return f"purge-eligible@{latest_eligible_change.astimezone(UTC).isoformat()}"


def build_purge_schedule(
    *, cron: str = DEFAULT_PURGE_CRON, retention_hours: float = DEFAULT_RETENTION_HOURS
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="purge_schedule",
        job=purge_job,
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
        eligible = _eligible(catalog, now=now, retention_hours=retention_hours)
        cut_short = _cut_short(catalog)
        if not eligible and not cut_short:
            return dg.SkipReason(f"no episode is past the {retention_hours} h retention")
        return dg.RunRequest(
            run_key=schedule_run_key(now),
            run_config=purge_run_config(now=now, retention_hours=retention_hours),
            tags={
                "pod/trigger": "schedule",
                "pod/eligible": str(len(eligible)),
                "pod/unfinished": str(len(cut_short)),
            },
        )

    return purge_schedule


def build_purge_sensor(
    *,
    retention_hours: float = DEFAULT_RETENTION_HOURS,
    minimum_interval_seconds: int = PURGE_SENSOR_INTERVAL_S,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="purge_sensor",
        job=purge_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Purges raw media as soon as episodes pass the retention.",
    )
    def purge_sensor(
        context: dg.SensorEvaluationContext, catalog: CatalogResource
    ) -> dg.SensorResult:
        """Requests a purge when episodes became eligible since the cursor."""
        now = datetime.now(UTC)
        handled = parse_time(context.cursor) if context.cursor else None
        fresh = [
            episode
            for episode in _eligible(catalog, now=now, retention_hours=retention_hours)
            if handled is None or episode.status_changed_at > handled
        ]
        if not fresh:
            return dg.SensorResult(
                skip_reason="no episode became eligible for the purge", cursor=context.cursor
            )
        latest = max(episode.status_changed_at for episode in fresh)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=sensor_run_key(latest),
                    run_config=purge_run_config(now=now, retention_hours=retention_hours),
                    tags={"pod/trigger": "sensor", "pod/eligible": str(len(fresh))},
                )
            ],
            cursor=latest.astimezone(UTC).isoformat(),
        )

    return purge_sensor


purge_schedule = build_purge_schedule()
purge_sensor = build_purge_sensor()
