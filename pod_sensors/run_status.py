"""Run-status sensors: an episode whose run died without its steps saying so becomes
``error`` (a killed run worker, a cancelled run), so its status is never stuck at
``processing``.

Only while the dead run still owns the episode (:func:`pod_assets.status.mark_run_failed`
compares the owning run): a newer run's status is never overwritten. A run terminated from
the UI usually says so itself, from the step it stopped (``episode_step`` turns the interrupt
into a failure that is not retried); these sensors then find the episode no longer
``processing`` and leave it alone.
"""


import dagster as dg

from pod_assets.jobs import process_episode_job
from pod_assets.status import mark_run_failed
from pod_assets.tags import PARTITION_TAG
from pod_resources.catalog import CatalogResource



def _mark(context: dg.RunStatusSensorContext, catalog: CatalogResource, message: str) -> None:
    run = context.dagster_run
    episode_id = run.tags.get(PARTITION_TAG)
    if not episode_id:
        return
    if mark_run_failed(catalog.get_catalog(), episode_id=episode_id, run_id=run.run_id, message=message):
        context.log.info(f"episode {episode_id} marked error: {message}")


@dg.run_failure_sensor(
    name="episode_run_failure_sensor",
    monitored_jobs=[process_episode_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def episode_run_failure_sensor(context: dg.RunFailureSensorContext, catalog: CatalogResource) -> None:
    """Marks the episode of a failed run ``error`` when no step already did."""
    event = context.failure_event
    message = (event.message if event else None) or "the run failed"
    _mark(context, catalog, f"run {context.dagster_run.run_id} failed: {message}")


@dg.run_status_sensor(
    name="episode_run_canceled_sensor",
    run_status=dg.DagsterRunStatus.CANCELED,
    monitored_jobs=[process_episode_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def episode_run_canceled_sensor(context: dg.RunStatusSensorContext, catalog: CatalogResource) -> None:
    """Marks the episode of a cancelled run ``error``, so it can be retried."""
    _mark(context, catalog, f"run {context.dagster_run.run_id} was cancelled")
