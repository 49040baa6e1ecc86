"""In-process execution for ``pod run``: the daemon's work, done once, headless."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from pod_assets.partitions import episode_partitions
from pod_assets.status import mark_run_failed
from pod_pipeline.definitions import build_definitions
from pod_pipeline.settings import Settings

RUN_KEY_TAG = "dagster/run_key"


@dataclass
class RunOutcome:
    messages: list[str] = field(default_factory=list)
    launched: int = 0
    failed: int = 0


def _already_launched(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            return f"step {event.step_key} failed: {event.message}"
    return "the run failed"


def run_once(
    settings: Settings, *, instance: dg.DagsterInstance | None = None, log_level: str = "WARNING"
) -> RunOutcome:
    """One upload-sensor tick, then every run it requested, in this process.

    Run keys are honoured as the daemon honours them: an upload whose run already exists
    in the instance is not run again.
    """
    defs = build_definitions(settings)
    instance = instance or dg.DagsterInstance.get()
    sensor = defs.resolve_sensor_def("upload_sensor")
    job = defs.resolve_job_def("process_episode_job")
    catalog = defs.resources["catalog"].get_catalog()
    outcome = RunOutcome()

    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(episode_partitions.name, list(request.partition_keys))

    for request in result.run_requests or []:
        if _already_launched(instance, request.run_key):
            continue
        tags = {**request.tags, RUN_KEY_TAG: request.run_key}
        run = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=tags,
            raise_on_error=False,
            # Every event is in the instance's event log; the terminal gets what matters.
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        outcome.launched += 1
        if run.success:
            outcome.messages.append(f"run {run.run_id[:8]} {request.partition_key}: success")
            continue
        outcome.failed += 1
        message = _failure_message(run)
        mark_run_failed(catalog, episode_id=request.partition_key, run_id=run.run_id, message=message)
        outcome.messages.append(f"run {run.run_id[:8]} {request.partition_key}: FAILED: {message}")
    if not outcome.launched:
        outcome.messages.append("no new uploads")
    return outcome
