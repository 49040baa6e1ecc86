"""Sensors and schedules: uploads in, run outcomes back into the catalog."""

import dagster as dg

from pod_assets.purge.job import build_purge_job
from pod_sensors.catalog_status import episode_status_sensor
from pod_sensors.chapters import chapter_marks_sensor
from pod_sensors.feed import show_refresh_sensor
from pod_sensors.follow_ups import episode_follow_up_sensor
from pod_sensors.purge import build_purge_schedule, build_purge_sensor
from pod_sensors.run_status import episode_run_canceled_sensor, episode_run_failure_sensor
from pod_sensors.uploads import build_upload_sensor


def build_defs(
    *,
    max_runs_per_tick: int,
    max_registrations_per_tick: int,
    sensor_interval_s: int,
    purge_cron: str,
    purge_retention_hours: float,
    purge_max_deletions: int,
) -> dg.Definitions:
    """The sensors and schedules, and ``purge_job`` with the configured purge defaults (the
    values come from :class:`pod_pipeline.settings.Settings`)."""
    purge = {"retention_hours": purge_retention_hours, "max_deletions": purge_max_deletions}
    purge_job = build_purge_job(**purge)
    return dg.Definitions(
        jobs=[purge_job],
        sensors=[
            build_upload_sensor(
                max_runs_per_tick=max_runs_per_tick,
                max_registrations_per_tick=max_registrations_per_tick,
                minimum_interval_seconds=sensor_interval_s,
            ),
            episode_run_failure_sensor,
            episode_run_canceled_sensor,
            chapter_marks_sensor,
            show_refresh_sensor,
            episode_follow_up_sensor,
            episode_status_sensor,
            build_purge_sensor(**purge, job=purge_job),
        ],
        schedules=[build_purge_schedule(cron=purge_cron, **purge, job=purge_job)],
    )
