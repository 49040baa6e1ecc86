"""``show_refresh_sensor``: the feed and the show statistics follow the episodes.

When a run that touched episodes succeeds (an episode run from the upload sensor, the UI, a
backfill; ``publish_job``; ``unpublish_job``), it requests one ``show_job`` run (run key
``show:<run id>``). Runs ``pod`` launched itself are skipped: the command refreshes the show
in the same invocation. A reprocessed published episode thus comes back in the feed with its
new files, and the statistics table counts every finished episode.
"""

import dagster as dg

from pod_assets.publish.feed import has_artwork, show_job
from pod_assets.tags import PARTITION_TAG, TRIGGER_TAG
from pod_resources.show import ShowResource

_CLI_TRIGGER = ("cli",)
_SHOW_JOBS = frozenset({"show_job"})


def wants_refresh(run: dg.DagsterRun) -> bool:
    """Whether a successful run changed what the feed or the statistics show."""
    if run.job_name in _SHOW_JOBS or run.tags.get(TRIGGER_TAG) in _CLI_TRIGGER:
        return False
    return run.job_name in {"publish_job", "unpublish_job"} or PARTITION_TAG in run.tags


@dg.run_status_sensor(
    name="show_refresh_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=show_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def show_refresh_sensor(context: dg.RunStatusSensorContext, show: ShowResource):
    """Refreshes the feed and the show statistics after a run that changed episodes (the
    statistics only while the show has no artwork, so no feed)."""
    run = context.dagster_run
    if not wants_refresh(run):
        return dg.SkipReason(f"run {run.run_id[:8]} ({run.job_name}) changes nothing the show lists")
    return dg.RunRequest(
        run_key=f"show:{run.run_id}",
        tags={TRIGGER_TAG: "show_refresh_sensor"},
        asset_selection=None if has_artwork(show) else [dg.AssetKey("show_statistics")],
    )
