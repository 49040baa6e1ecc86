"""Headless execution for ``pod run``: the daemon's work, done once, on the configured instance.

Runs go through :func:`dagster.execute_job` on a reconstructable job, so they honour
``POD_EXECUTOR``: with ``multiprocess`` every step starts in a fresh process, which rebuilds
the definitions from the environment (as a daemon-launched run does). Each run executes in a
forked child that ``pod run`` supervises (:mod:`pod_pipeline.worker`): a signal stops it
within seconds, its processes die with ``pod run``, its scratch is removed.

Invariants of one ``pod run``, in order:

1. scratch left by ``pod run`` processes that are gone is removed (and what still ran in it);
2. a run ``pod run`` started on this host whose process is gone is marked failed, and its
   episode ``error``, where that run still owned it;
3. every run that died or was stopped, and whose episode no other run took since, is
   resumed: a new run for that partition of the steps that did not succeed, at most
   :data:`MAX_AUTO_RESUMES` times in a row; then the episode stays ``error`` saying so
   (steps 2 and 3 are :mod:`pod_pipeline.recovery`);
4. one upload-sensor tick; each run it requests is launched only by the ``pod run`` (or the
   daemon's run) that claims its run key in the catalog first; the others skip it quietly.

A caller that passes its own ``instance`` (tests, embedding) gets the same steps, with the runs
executed in the caller's process, unsupervised (no signal handling, no child).

A stop (SIGINT, SIGTERM, Ctrl-C) ends the current run with its episode ``error`` ("stopped by
SIGTERM during transcript; run `pod run` to resume"), launches nothing more, and exits with
128 + the signal number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from pod_assets.partitions import episode_partitions
from pod_assets.status import (
    EPISODE_STEPS,
    mark_run_failed,
    run_key_claim,
    with_follow_ups,
)
from pod_assets.tags import (
    ATTEMPT_TAG,
    CLAIM_TAG,
    HOST_TAG,
    PARTITION_TAG,
    PID_TAG,
    RESUME_OF_TAG,
    RESUME_TAG,
    RESUMES_TAG,
    RUN_KEY_TAG,
    TRIGGER_TAG,
)
from pod_pipeline import console, worker
from pod_pipeline.recovery import (
    MAX_AUTO_RESUMES,
    UNFINISHED,
    pending_resumes,
    process_alive,
    reap_dead_runs,
    steps_left,
)
from pod_pipeline.definitions import build_definitions
from pod_pipeline.settings import Settings, load_settings
from pod_resources.catalog import Catalog, EpisodeStatus

EPISODE_JOB = "process_episode_job"


@dataclass
class RunOutcome:
    messages: list[str] = field(default_factory=list)
    launched: int = 0
    failed: int = 0
    stopped_by: int = 0
    """128 + the signal number when a signal stopped ``pod run``, else 0."""
    episodes: list[str] = field(default_factory=list)
    """The episodes whose runs this ``pod run`` launched, in order (its summary)."""

    @property
    def exit_code(self) -> int:
        if self.stopped_by:
            return self.stopped_by
        return 1 if self.failed else 0


@dataclass(frozen=True)
class EpisodeRun:
    run_id: str
    episode_id: str
    success: bool
    failure: str | None


def episode_job() -> dg.JobDefinition:
    """The episode job, built from the environment (a reconstructable target).

    In a step process of the multiprocess executor it also makes that process die with the
    run's process."""
    worker.die_with_parent_if_spawned()
    console.quiet_dagster()
    return build_definitions().resolve_job_def(EPISODE_JOB)


def _already_launched(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """``step S failed: <the reason the step failed with>`` (one line)."""
    for record in instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records:
        event = record.event_log_entry.dagster_event
        if event is not None:
            return f"step {event.step_key} failed: {console.failure_reason(event)}"
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
    run_config: Mapping[str, object] | None = None,
) -> EpisodeRun:
    """One run of the episode job for one partition, in this process: every step, or only
    ``steps``, with ``run_config`` (``{"ops": {asset: {"config": …}}}``, as the launchpad
    takes it). Tagged with this host and process, so a later ``pod run`` can tell it died."""
    _validate_steps(steps)
    selection = [dg.AssetKey(step) for step in EPISODE_STEPS if step in set(steps)] if steps else None
    own = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    with dg.execute_job(
        dg.reconstructable(episode_job),
        instance=instance,
        tags={**(tags or {}), **own, PARTITION_TAG: episode_id},
        asset_selection=selection,
        # Every event is in the instance's event log; the terminal gets what matters.
        run_config={
            **(run_config or {}),
            "loggers": {"console": {"config": {"log_level": log_level}}},
        },
        raise_on_error=False,
    ) as result:
        return EpisodeRun(
            run_id=result.run_id,
            episode_id=episode_id,
            success=result.success,
            failure=None if result.success else _failure_message(instance, result.run_id),
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


def open_instance() -> dg.DagsterInstance:
    """The configured instance, opened under a lock in ``DAGSTER_HOME``: two ``pod run``
    starting at once on a fresh home would otherwise both create its SQLite storage and
    leave it with two schema heads."""
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".pod-open.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return dg.DagsterInstance.get()


def _current_step(instance: dg.DagsterInstance, run_id: str) -> str:
    started: list[str] = []
    done: set[str] = set()
    for record in instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS},
    ).records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started.append(event.step_key)
        else:
            done.add(event.step_key)
    running = [step for step in started if step not in done]
    return running[-1] if running else "start"


def stopped_message(signal_name: str, step: str) -> str:
    """The one line an episode stopped by a signal to ``pod run`` shows."""
    where = "before its first step" if step == "start" else f"during {step}"
    return f"stopped by {signal_name} {where}; run `pod run` to resume"


@dataclass
class Launcher:
    """Launches runs in supervised children (one at a time) and settles how they ended."""

    instance: dg.DagsterInstance
    catalog: Catalog
    stopper: worker.Stopper
    log_level: str
    supervised: bool = True
    """Each run in a supervised child (``pod run``); else in this process (a caller that
    brings its own instance: tests, embedding)."""
    run_config: Mapping[str, object] | None = None
    """Run config of every run this launcher starts (``pod run --set``/``--config``)."""
    verbose: bool = False
    """Stack traces of failed steps on the terminal too."""
    owner: str = field(
        default_factory=lambda: f"pod-run:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )

    def launch(
        self, episode_id: str, *, steps: Sequence[str] | None, tags: Mapping[str, str]
    ) -> EpisodeRun | None:
        """One run in a child; ``None`` when no run was created (stopped before it began)."""
        attempt = uuid.uuid4().hex
        all_tags = {**tags, ATTEMPT_TAG: attempt}
        run_kwargs = {"steps": steps, "tags": all_tags, "log_level": self.log_level,
                      "run_config": self.run_config}
        if not self.supervised:
            return run_episode(self.instance, episode_id, **run_kwargs)

        status, output = self._run_child(episode_id, attempt, run_kwargs)
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(tags={ATTEMPT_TAG: attempt}), limit=1
        )
        if not records:
            return None
        run = records[0].dagster_run
        if self.stopper.requested:
            stopped = self._settle_stopped(run)
            print(f"pod run: {stopped.episode_id}: {stopped.failure or 'finished'}", file=sys.stderr)
            return stopped
        if run.status in UNFINISHED:
            return self._settle_died(run, status, output=output)
        success = run.status == dg.DagsterRunStatus.SUCCESS
        if success and output is not None:
            output.unlink(missing_ok=True)  # kept only for runs that failed or died
        return EpisodeRun(
            run_id=run.run_id,
            episode_id=episode_id,
            success=success,
            failure=None if success else _failure_message(self.instance, run.run_id),
        )

    def _run_child(
        self, episode_id: str, attempt: str, run_kwargs: Mapping[str, Any]
    ) -> tuple[int, Path | None]:
        """The run in a supervised child, its step lines printed meanwhile; the child's exit
        status and, unless ``verbose``, the file its own output went to (``None`` when it
        wrote nothing): Dagster's and the libraries' lines stay off the terminal, and are
        kept for a run that fails or dies."""
        output = None if self.verbose else console.output_log(attempt)

        def body() -> int:
            if output is not None:
                console.divert_output(output)
            with dg.DagsterInstance.get() as instance:
                run = run_episode(instance, episode_id, **run_kwargs)
            return 0 if run.success else 1

        with console.watching(
            self.instance, self._printer(episode_id), run_tags={ATTEMPT_TAG: attempt}
        ):
            status = self.stopper.run_child(body, scratch=worker.make_scratch_root())
        return status, console.kept_output(output)

    def _printer(self, episode_id: str) -> console.RunPrinter:
        episode = self.catalog.get_episode(episode_id)
        audio_s = episode.metrics.get("duration_s") if episode is not None else None
        return console.RunPrinter(
            episode_id,
            audio_s=float(audio_s) if isinstance(audio_s, (int, float)) else None,
            write=console.stdout_writer(),
            verbose=self.verbose,
        )

    def _settle_stopped(self, run: dg.DagsterRun) -> EpisodeRun:
        episode_id = run.tags[PARTITION_TAG]
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return EpisodeRun(run.run_id, episode_id, success=True, failure=None)
        step = _current_step(self.instance, run.run_id)
        message = stopped_message(self.stopper.signal_name or "a signal", step)
        if run.status in UNFINISHED:
            self.instance.report_run_canceled(run, message)
        self.catalog.set_status(
            episode_id,
            expected={EpisodeStatus.PROCESSING, EpisodeStatus.ERROR},
            new=EpisodeStatus.ERROR,
            error=message,
            step=step,
            only_if_run_id=run.run_id,
        )
        self.instance.add_run_tags(run.run_id, {RESUME_TAG: "pending"})
        return EpisodeRun(run.run_id, episode_id, success=False, failure=message)

    def _settle_died(self, run: dg.DagsterRun, status: int, *, output: Path | None) -> EpisodeRun:
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        message = f"run {run.run_id} died: its process ended ({how}); the next `pod run` resumes it"
        if output is not None:
            message += f" (its output: {output})"
        self.instance.report_run_failed(run, message)
        self.instance.add_run_tags(run.run_id, {RESUME_TAG: "pending"})
        episode_id = run.tags[PARTITION_TAG]
        mark_run_failed(self.catalog, episode_id=episode_id, run_id=run.run_id, message=message)
        return EpisodeRun(run.run_id, episode_id, success=False, failure=message)


def _record(outcome: RunOutcome, catalog: Catalog, run: EpisodeRun, stopper: worker.Stopper) -> None:
    outcome.launched += 1
    outcome.episodes.append(run.episode_id)
    if run.success:
        outcome.messages.append(f"run {run.run_id[:8]} {run.episode_id}: success")
        return
    message = run.failure or "the run failed"
    if stopper.requested:
        outcome.stopped_by = stopper.exit_code
        outcome.messages.append(f"run {run.run_id[:8]} {run.episode_id}: {message}")
        return
    outcome.failed += 1
    mark_run_failed(catalog, episode_id=run.episode_id, run_id=run.run_id, message=message)
    outcome.messages.append(f"run {run.run_id[:8]} {run.episode_id}: FAILED: {message}")


def _recover(launcher: Launcher, outcome: RunOutcome) -> None:
    """Steps 1-3 of the module docstring."""
    outcome.messages.extend(worker.clean_stale_scratch())
    outcome.messages.extend(reap_dead_runs(launcher.instance, launcher.catalog))
    resumes, messages = pending_resumes(launcher.instance, launcher.catalog, owner=launcher.owner)
    outcome.messages.extend(messages)
    for resume in resumes:
        if launcher.stopper.requested:
            break
        outcome.messages.append(
            f"{resume.episode_id}: resuming run {resume.dead.run_id[:8]}, which died or was "
            f"stopped (automatic resume {resume.count} of {MAX_AUTO_RESUMES})"
        )
        run = launcher.launch(
            resume.episode_id,
            steps=steps_left(launcher.instance, resume.dead),
            tags={
                TRIGGER_TAG: "resume",
                RESUME_OF_TAG: resume.dead.run_id,
                RESUMES_TAG: str(resume.count),
            },
        )
        if run is not None:
            _record(outcome, launcher.catalog, run, launcher.stopper)


def _claim_run_key(launcher: Launcher, run_key: str) -> bool:
    """Whether this ``pod run`` may launch ``run_key``: it holds the key's claim, or takes
    it over from a ``pod run`` of this host that died before it launched the run."""
    key = run_key_claim(run_key)
    holder = launcher.catalog.claim(key, owner=launcher.owner)
    if holder == launcher.owner:
        return True
    kind, host, pid, _ = (holder.split(":") + ["", "", "", ""])[:4]
    dead_launcher = (
        kind == "pod-run"
        and host == socket.gethostname()
        and pid.isdigit()
        and not process_alive(int(pid))
        and not _already_launched(launcher.instance, run_key)
    )
    if not dead_launcher:
        return False
    return launcher.catalog.claim(key, owner=launcher.owner, replace=holder) == launcher.owner


def _stopper(supervised: bool) -> contextlib.AbstractContextManager[worker.Stopper]:
    """The signal handling of ``pod run``; none when runs execute in the caller's process."""
    return worker.Stopper().installed() if supervised else contextlib.nullcontext(worker.Stopper())


def run_once(
    settings: Settings | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "WARNING",
    verbose: bool = False,
) -> RunOutcome:
    """Recover what died, one upload-sensor tick, then every run it requested (see the
    module docstring). Settings come from the environment; ``settings``, if given, must be
    those. Supervised runs print their step lines (:mod:`pod_pipeline.console`)."""
    defs = build_definitions(_environment_settings(settings))
    supervised = instance is None
    instance = instance or open_instance()
    catalog = defs.resources["catalog"].get_catalog()
    outcome = RunOutcome()
    with _stopper(supervised) as stopper:
        launcher = Launcher(
            instance, catalog, stopper, log_level, supervised=supervised, verbose=verbose
        )
        _recover(launcher, outcome)
        if not stopper.requested:
            _tick(launcher, defs, outcome)
        if stopper.requested:
            outcome.stopped_by = stopper.exit_code
    if not outcome.launched and not outcome.stopped_by:
        outcome.messages.append("no new uploads")
    return outcome


def _tick(launcher: Launcher, defs: dg.Definitions, outcome: RunOutcome) -> None:
    instance = launcher.instance
    sensor = defs.resolve_sensor_def("upload_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(episode_partitions.name, list(request.partition_keys))
    for request in result.run_requests or []:
        if launcher.stopper.requested:
            break
        if _already_launched(instance, request.run_key):
            continue
        if not _claim_run_key(launcher, request.run_key):
            outcome.messages.append(
                f"{request.partition_key}: run key {request.run_key} is launched by another "
                "process; skipped"
            )
            continue
        run = launcher.launch(
            request.partition_key,
            steps=None,
            tags={**request.tags, RUN_KEY_TAG: request.run_key, CLAIM_TAG: launcher.owner},
        )
        if run is not None:
            _record(outcome, launcher.catalog, run, launcher.stopper)


def rerun_episodes(
    settings: Settings | None,
    episode_ids: Sequence[str],
    *,
    steps: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "WARNING",
    run_config: Mapping[str, object] | None = None,
    verbose: bool = False,
) -> RunOutcome:
    """Run known episodes again (all steps or ``steps``), as a re-execution from the UI would,
    with ``run_config`` (validated by :mod:`pod_pipeline.run_settings`) for each run.

    Dead runs are reaped first (and left for the next plain ``pod run`` to resume)."""
    defs = build_definitions(_environment_settings(settings))
    supervised = instance is None
    instance = instance or open_instance()
    catalog = defs.resources["catalog"].get_catalog()
    _validate_steps(steps)
    if steps:
        steps = list(with_follow_ups(steps))
    known = set(instance.get_dynamic_partitions(episode_partitions.name))
    outcome = RunOutcome()
    with _stopper(supervised) as stopper:
        launcher = Launcher(
            instance, catalog, stopper, log_level, supervised=supervised,
            run_config=run_config, verbose=verbose,
        )
        outcome.messages.extend(worker.clean_stale_scratch())
        outcome.messages.extend(reap_dead_runs(instance, catalog))
        for episode_id in episode_ids:
            if stopper.requested:
                break
            if episode_id not in known:
                outcome.failed += 1
                outcome.messages.append(f"{episode_id}: no such episode")
                continue
            run = launcher.launch(episode_id, steps=steps, tags={TRIGGER_TAG: "cli"})
            if run is not None:
                _record(outcome, catalog, run, stopper)
        if stopper.requested:
            outcome.stopped_by = stopper.exit_code
    return outcome
