"""Sensors and schedules: uploads in, run outcomes back into the catalog."""

import dagster as dg

from pod_sensors.run_status import episode_run_canceled_sensor, episode_run_failure_sensor
from pod_sensors.uploads import DEFAULT_MAX_RUNS_PER_TICK, build_upload_sensor


def build_defs(*, max_runs_per_tick: int = DEFAULT_MAX_RUNS_PER_TICK) -> dg.Definitions:
    return dg.Definitions(
        sensors=[
            build_upload_sensor(max_runs_per_tick=max_runs_per_tick),
            episode_run_failure_sensor,
            episode_run_canceled_sensor,
        ]
    )


defs = build_defs()
