"""The one Definitions root: each package's own ``defs``, merged."""

import dagster as dg

import pod_assets
import pod_resources
import pod_sensors
from pod_pipeline.settings import Settings, load_settings

_EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    return dg.Definitions.merge(
        pod_assets.defs,
        pod_sensors.build_defs(
            max_runs_per_tick=settings.max_runs_per_tick,
            max_registrations_per_tick=settings.max_registrations_per_tick,
            sensor_interval_s=settings.sensor_interval_s,
            purge_cron=settings.purge_cron,
            purge_retention_hours=settings.purge_retention_hours,
            purge_max_deletions=settings.purge_max_deletions,
        ),
        pod_resources.build_defs(settings),
        # An episode's steps form a chain: nothing inside one run can go in parallel, so by
        # default a process per step would only add start-up time. Runs are the unit of
        # parallelism (run queue, pools; one pod per run on Kubernetes); pools hold
        # in-process too. POD_EXECUTOR=multiprocess gives each step a fresh process.
        dg.Definitions(executor=_EXECUTORS[settings.executor]),
    )



@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
