"""``episode_follow_up_sensor``: subtitles and chapters follow a re-cleaned or re-mastered
episode.

``final_episode`` rewrites ``episode.mp3`` (without chapter frames: the ``chapters`` step adds
them), from a cleaned timeline that may have moved. A successful run that materialised
``final_episode`` for an episode but not ``subtitles`` and ``chapters`` (a launchpad run or a
backfill of ``cleaned_audio`` and ``final_episode``) gets one run of the two for the same
partition (run key ``follow-up:<run id>``). ``pod run --episode … --step final_episode`` adds
the two steps itself (:func:`pod_assets.status.with_follow_ups`).
"""

import dagster as dg

from pod_assets.jobs import process_episode_job
from pod_assets.status import FOLLOW_UP_STEPS, with_follow_ups
from pod_assets.tags import PARTITION_TAG, TRIGGER_TAG



def missing_follow_ups(run: dg.DagsterRun) -> tuple[str, ...]:
    """The follow-up steps a successful episode run left out, in pipeline order."""
    if run.job_name != process_episode_job.name or PARTITION_TAG not in run.tags:
        return ()
    if run.asset_selection is None:
        return ()  # the whole job: every step ran
    selected = [key.to_user_string() for key in run.asset_selection]
    needed = with_follow_ups(selected)
    return tuple(step for step in needed if step in FOLLOW_UP_STEPS and step not in selected)


@dg.run_status_sensor(
    name="episode_follow_up_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=process_episode_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def episode_follow_up_sensor(context: dg.RunStatusSensorContext):
    """Runs ``subtitles`` and ``chapters`` for an episode whose final audio a run rewrote
    without them."""
    run = context.dagster_run
    steps = missing_follow_ups(run)
    if not steps:
        return dg.SkipReason(f"run {run.run_id[:8]} leaves no subtitles or chapters behind")
    return dg.RunRequest(
        run_key=f"follow-up:{run.run_id}",
        partition_key=run.tags[PARTITION_TAG],
        asset_selection=[dg.AssetKey(step) for step in steps],
        tags={TRIGGER_TAG: "episode_follow_up_sensor"},
    )
