"""The one Definitions root: each package's own ``defs``, merged."""

import dagster as dg

import pod_assets
import pod_resources
import pod_sensors
from pod_pipeline.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    return dg.Definitions.merge(
        pod_assets.defs,
        pod_sensors.build_defs(max_runs_per_tick=settings.max_runs_per_tick),
        pod_resources.build_defs(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
