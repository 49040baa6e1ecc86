"""Headless execution for ``pod run``: the daemon's work, done once, on the configured instance.

Runs go through :func:`dagster.execute_job` on a reconstructable job, so they honour
``POD_EXECUTOR``: with ``multiprocess`` every step starts in a fresh process, which rebuilds
the definitions from the environment (as a daemon-launched run does).

With no daemon there is no run monitoring, so every ``pod run`` first does its job: a run
that ``pod run`` started on this host and whose process is gone (killed, out of memory, the
machine restarted) is marked failed, and its episode ``error`` with a message that says so.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from pod_assets.partitions import episode_partitions
from pod_assets.status import EPISODE_STEPS, mark_run_failed
from pod_pipeline.definitions import build_definitions
from pod_pipeline.settings import Settings, load_settings

RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
EPISODE_JOB = "process_episode_job"
HOST_TAG = "pod/host"
PID_TAG = "pod/pid"
_UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@dataclass
class RunOutcome:
    messages: list[str] = field(default_factory=list)
    launched: int = 0
    failed: int = 0


@dataclass(frozen=True)
class EpisodeRun:
    run_id: str
    episode_id: str
    success: bool
    failure: str | None


def episode_job() -> dg.JobDefinition:
    """The episode job, built from the environment (a reconstructable target)."""
    return build_definitions().resolve_job_def(EPISODE_JOB)


def _already_launched(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def _failure_message(events: Sequence[dg.DagsterEvent]) -> str:
    for event in events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            return f"step {event.step_key} failed: {event.message}"
    return "the run failed"


def _validate_steps(steps: Sequence[str] | None) -> None:
    unknown = sorted(set(steps or ()) - set(EPISODE_STEPS))
    if unknown:
        raise ValueError(f"unknown step {', '.join(unknown)}; the steps are {', '.join(EPISODE_STEPS)}")


def run_episode(
    instance: dg.DagsterInstance,
    episode_id: str,
    *,
    steps: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    log_level: str = "WARNING",
) -> EpisodeRun:
    """One run of the episode job for one partition: every step, or only ``steps``."""
    _validate_steps(steps)
    selection = [dg.AssetKey(step) for step in EPISODE_STEPS if step in set(steps)] if steps else None
    own = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    with dg.execute_job(
        dg.reconstructable(episode_job),
        instance=instance,
        tags={**(tags or {}), **own, PARTITION_TAG: episode_id},
        asset_selection=selection,
        # Every event is in the instance's event log; the terminal gets what matters.
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    ) as result:
        events = result.all_events
        return EpisodeRun(
            run_id=result.run_id,
            episode_id=episode_id,
            success=result.success,
            failure=None if result.success else _failure_message(events),
        )


def _environment_settings(settings: Settings | None) -> Settings:
    """The settings of this process's environment, which every run rebuilds its definitions
    from (in a step process too); other settings would split a run across two setups."""
    current = load_settings()
    if settings is not None and settings != current:
        raise ValueError(
            "runs take their settings from the environment (POD_* variables); "
            "the settings given differ from it"
        )
    return current


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(instance: dg.DagsterInstance, catalog) -> list[str]:
    """Mark failed the unfinished runs ``pod run`` started on this host whose process is gone.

    Their episodes become ``error`` (only where that run still owns them), so a status is
    never stuck at ``processing``. Returns one message per reaped run.
    """
    messages: list[str] = []
    host = socket.gethostname()
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: host})
    )
    for record in records:
        run = record.dagster_run
        pid = run.tags.get(PID_TAG, "")
        if not pid.isdigit():
            continue
        # This process has started no run yet: a run tagged with its pid is a dead
        # process's whose pid came round again (a restarted container starts from 1).
        if int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        message = f"run {run.run_id} died: its process {pid} is gone (killed or crashed)"
        instance.report_run_failed(run, message)
        episode_id = run.tags.get(PARTITION_TAG)
        if episode_id:
            mark_run_failed(catalog, episode_id=episode_id, run_id=run.run_id, message=message)
        messages.append(f"run {run.run_id[:8]} {episode_id or ''}: marked failed, its process is gone")
    return messages


def _record(outcome: RunOutcome, catalog, run: EpisodeRun) -> None:
    outcome.launched += 1
    if run.success:
        outcome.messages.append(f"run {run.run_id[:8]} {run.episode_id}: success")
        return
    outcome.failed += 1
    message = run.failure or "the run failed"
    mark_run_failed(catalog, episode_id=run.episode_id, run_id=run.run_id, message=message)
    outcome.messages.append(f"run {run.run_id[:8]} {run.episode_id}: FAILED: {message}")


def run_once(
    settings: Settings | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "WARNING",
) -> RunOutcome:
    """One upload-sensor tick, then every run it requested.

    Run keys are honoured as the daemon honours them: an upload whose run already exists
    in the instance is not run again. Settings come from the environment; ``settings``, if
    given, must be those.
    """
    defs = build_definitions(_environment_settings(settings))
    instance = instance or dg.DagsterInstance.get()
    sensor = defs.resolve_sensor_def("upload_sensor")
    catalog = defs.resources["catalog"].get_catalog()
    outcome = RunOutcome(messages=reap_dead_runs(instance, catalog))

    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(episode_partitions.name, list(request.partition_keys))

    for request in result.run_requests or []:
        if _already_launched(instance, request.run_key):
            continue
        run = run_episode(
            instance,
            request.partition_key,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
            log_level=log_level,
        )
        _record(outcome, catalog, run)
    if not outcome.launched:
        outcome.messages.append("no new uploads")
    return outcome


def rerun_episodes(
    settings: Settings | None,
    episode_ids: Sequence[str],
    *,
    steps: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "WARNING",
) -> RunOutcome:
    """Run known episodes again (all steps or ``steps``), as a re-execution from the UI would."""
    defs = build_definitions(_environment_settings(settings))
    instance = instance or dg.DagsterInstance.get()
    catalog = defs.resources["catalog"].get_catalog()
    _validate_steps(steps)
    known = set(instance.get_dynamic_partitions(episode_partitions.name))
    outcome = RunOutcome(messages=reap_dead_runs(instance, catalog))
    for episode_id in episode_ids:
        if episode_id not in known:
            outcome.failed += 1
            outcome.messages.append(f"{episode_id}: no such episode")
            continue
        run = run_episode(
            instance, episode_id, steps=steps, tags={"pod/trigger": "cli"}, log_level=log_level
        )
        _record(outcome, catalog, run)
    return outcome
