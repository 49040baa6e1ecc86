"""Sensors and schedules: uploads in, run outcomes back into the catalog."""

import dagster as dg

from pod_sensors.purge import DEFAULT_PURGE_CRON, build_purge_schedule, build_purge_sensor
from pod_sensors.run_status import episode_run_canceled_sensor, episode_run_failure_sensor
from pod_sensors.uploads import (
    DEFAULT_MAX_RUNS_PER_TICK,
    DEFAULT_SENSOR_INTERVAL_S,
    build_upload_sensor,
)


def build_defs(
    *,
    max_runs_per_tick: int = DEFAULT_MAX_RUNS_PER_TICK,
    sensor_interval_s: int = DEFAULT_SENSOR_INTERVAL_S,
    purge_cron: str = DEFAULT_PURGE_CRON,
) -> dg.Definitions:
    return dg.Definitions(
        sensors=[
            build_upload_sensor(
                max_runs_per_tick=max_runs_per_tick, minimum_interval_seconds=sensor_interval_s
            ),
            episode_run_failure_sensor,
            episode_run_canceled_sensor,
            build_purge_sensor(),
        ],
        schedules=[build_purge_schedule(cron=purge_cron)],
    )


defs = build_defs()
