"""What ``pod run`` does about runs that died or were stopped: find them, and resume them.

Invariants:

* a run is reaped (marked failed, its episode ``error`` where it still owns it) only when it
  was started by ``pod run`` on this host and the process that ran it is gone;
* a run that died or was stopped is tagged ``pod/resume=pending``; one ``pod run`` (the one
  that claims ``resume:<run id>`` in the catalog) decides about it, once: resumed when no
  other run took its episode since, and at most :data:`MAX_AUTO_RESUMES` times in a row;
* a resume runs the steps that did not succeed: the others' outputs are in the store, where
  the later steps read them from.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg

from pod_assets.status import EPISODE_STEPS, mark_run_failed
from pod_assets.tags import HOST_TAG, PARTITION_TAG, PID_TAG, RESUME_TAG, RESUMES_TAG
from pod_resources.catalog import Catalog, EpisodeStatus

MAX_AUTO_RESUMES = 3
UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(instance: dg.DagsterInstance, catalog: Catalog) -> list[str]:
    """Mark failed the unfinished runs ``pod run`` started on this host whose process is gone.

    Their episodes become ``error`` (only where that run still owns them), so a status is
    never stuck at ``processing``, and the run is left for :func:`resume_runs`. Returns one
    message per reaped run.
    """
    messages: list[str] = []
    host = socket.gethostname()
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: host})
    )
    for record in records:
        run = record.dagster_run
        pid = run.tags.get(PID_TAG, "")
        if not pid.isdigit():
            continue
        # This process runs no run itself: a run tagged with its pid is a dead process's
        # whose pid came round again (a restarted container starts from 1).
        if int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        message = f"run {run.run_id} died: its process {pid} is gone (killed or crashed)"
        instance.report_run_failed(run, message)
        instance.add_run_tags(run.run_id, {RESUME_TAG: "pending"})
        episode_id = run.tags.get(PARTITION_TAG)
        if episode_id:
            mark_run_failed(catalog, episode_id=episode_id, run_id=run.run_id, message=message)
        messages.append(f"run {run.run_id[:8]} {episode_id or ''}: its process {pid} is gone")
    return messages


def steps_left(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The steps of ``run`` that did not succeed: what a resume runs. A step that succeeded
    has its outputs in the store, which is where the later steps read them from."""
    names = (
        {key.to_user_string() for key in run.asset_selection}
        if run.asset_selection
        else set(EPISODE_STEPS)
    )
    succeeded = {
        record.event_log_entry.dagster_event.step_key
        for record in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS
        ).records
        if record.event_log_entry.dagster_event is not None
    }
    left = [step for step in EPISODE_STEPS if step in names and step not in succeeded]
    return left or [step for step in EPISODE_STEPS if step in names]


def _started_a_step(instance: dg.DagsterInstance, run_id: str) -> bool:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START, limit=1)
    return bool(records.records)


def _still_its(instance: dg.DagsterInstance, catalog: Catalog, run: dg.DagsterRun) -> bool:
    """Whether no other run took the episode since ``run`` died."""
    episode = catalog.get_episode(run.tags.get(PARTITION_TAG, ""))
    if episode is None:
        return False
    if episode.processing_run_id == run.run_id:
        return episode.status in (EpisodeStatus.PROCESSING, EpisodeStatus.ERROR)
    # Stopped before its first step: the episode never became its.
    return episode.status != EpisodeStatus.PROCESSING and not _started_a_step(instance, run.run_id)


@dataclass(frozen=True)
class Resume:
    dead: dg.DagsterRun
    count: int

    @property
    def episode_id(self) -> str:
        return self.dead.tags[PARTITION_TAG]


def pending_resumes(
    instance: dg.DagsterInstance, catalog: Catalog, *, owner: str
) -> tuple[list[Resume], list[str]]:
    """The dead or stopped runs this ``pod run`` resumes, and one message per run it
    decided not to resume (taken over, or resumed too often already)."""
    resumes: list[Resume] = []
    messages: list[str] = []
    records = instance.get_run_records(filters=dg.RunsFilter(tags={RESUME_TAG: "pending"}))
    for record in reversed(records):  # oldest first
        run = record.dagster_run
        episode_id = run.tags.get(PARTITION_TAG, "")
        if catalog.claim(f"resume:{run.run_id}", owner=owner) != owner:
            continue  # another pod run deals with it
        if not _still_its(instance, catalog, run):
            instance.add_run_tags(run.run_id, {RESUME_TAG: "taken-over"})
            continue
        count = int(run.tags.get(RESUMES_TAG, "0")) + 1
        if count > MAX_AUTO_RESUMES:
            instance.add_run_tags(run.run_id, {RESUME_TAG: "given-up"})
            message = (
                f"not resumed again: its runs died or were stopped {count} times in a row "
                f"(last {run.run_id[:8]}); fix the cause, then `pod run --episode {episode_id}`"
            )
            catalog.set_status(
                episode_id,
                expected={EpisodeStatus.PROCESSING, EpisodeStatus.ERROR},
                new=EpisodeStatus.ERROR,
                error=message,
                step="run",
                only_if_run_id=run.run_id,
            )
            messages.append(f"{episode_id}: {message}")
            continue
        instance.add_run_tags(run.run_id, {RESUME_TAG: "resumed"})
        resumes.append(Resume(dead=run, count=count))
    return resumes, messages
