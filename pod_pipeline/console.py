"""What ``pod`` prints: its own lines, and nothing of Dagster's unless asked.

* Every step of a run gets a line when it starts and one when it ends, with the time it took
  and how many times faster than realtime that was (the episode's audio length divided by
  the step's wall time). Progress the steps log (the transcript's "12 of 32 s recognised")
  is shown as it comes; a step that says nothing for :data:`HEARTBEAT_S` gets a "still
  running" line, so a long step is never silence.
* A failure is one line with its reason: the message the step failed with, never Dagster's
  "Execution of step … failed". An expected error (bad input) has no stack trace; the full
  trace is in the run's event log (the UI) and, with ``--verbose``, on the terminal.
* Dagster's beta warnings, its telemetry/welcome banner and its missing-``dagster.yaml``
  warning are silenced where the project owns the instance (:func:`own_instance_config`).

The lines are read from the instance's event log while the run executes (a thread polls
it), so they are the same whichever process or executor runs the steps.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import dagster as dg

HEARTBEAT_S = 30.0
"""A step silent for this long gets a "still running" line."""
POLL_S = 0.5
"""How often the event log is read while a run executes."""
INSTANCE_CONFIG = "telemetry:\n  enabled: false\n"
"""The ``dagster.yaml`` written into a Dagster home the project owns: SQLite storage under
that home (Dagster's default), no telemetry and so no banner."""
_WRAPPER_ERRORS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError")
_EXPECTED_ERRORS = ("EpisodeInputError", "Failure")
"""Errors whose message is the whole story: no stack trace on the terminal."""


class PodError(Exception):
    """An expected problem with what the operator asked for: printed as one line
    (``pod COMMAND: message``), exit status 2, no trace."""


def quiet_dagster() -> None:
    """Silence Dagster's beta and preview warnings in this process (they concern Dagster's
    own internals, e.g. the ``owners`` of a sensor it copies, not anything an operator can
    act on). Processes forked from it inherit the filter."""
    for category in (dg.BetaWarning, dg.PreviewWarning):
        warnings.filterwarnings("ignore", category=category)


def own_instance_config(dagster_home: Path) -> bool:
    """Write :data:`INSTANCE_CONFIG` as ``dagster_home/dagster.yaml`` when it has none;
    whether it was written. Never overwrites: an existing file is the operator's."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    try:
        with (dagster_home / "dagster.yaml").open("x") as config:
            config.write(INSTANCE_CONFIG)
    except FileExistsError:
        return False
    return True


def output_log(attempt: str) -> Path:
    """Where the process of one run attempt writes what it prints itself (Dagster's lines
    from step processes, library warnings, a crash's traceback) instead of the terminal:
    ``$DAGSTER_HOME/pod-run-output/<attempt>.log``."""
    folder = Path(os.environ.get("DAGSTER_HOME") or tempfile.gettempdir()) / "pod-run-output"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{attempt}.log"


def divert_output(path: Path) -> None:
    """Point this process's stdout and stderr (the file descriptors, so child processes
    too) at ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def kept_output(path: Path | None) -> Path | None:
    """``path`` if something was written to it; an empty one is removed."""
    if path is None or not path.exists():
        return None
    if path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        return None
    return path


def plainly_not_audio(path: Path) -> str | None:
    """Why ``path`` is plainly not audio (its headers name no audio stream FFmpeg can read),
    or ``None``. Reads the headers only: a file that passes can still fail ``raw_audio``'s
    full decode (truncated, silent, too long)."""
    from pod_audio.errors import AudioInputError
    from pod_audio.io import probe

    try:
        probe(path, decode_check=False)
    except AudioInputError as exc:
        return str(exc) or type(exc).__name__
    return None


def error_reason(error: object) -> str:
    """The one-line reason of a Dagster ``SerializableErrorInfo``: the message of the first
    error in its chain that is not one of Dagster's wrappers, without the class name."""
    while getattr(error, "cls_name", None) in _WRAPPER_ERRORS and getattr(error, "cause", None):
        error = error.cause
    message = (getattr(error, "message", "") or "").strip()
    cls_name = getattr(error, "cls_name", None) or ""
    head, found, rest = message.partition(f"{cls_name}: ")
    if found and " " not in head:  # "package.module.ClassName: the message"
        message = rest
    first_line = message.splitlines()[0] if message else ""
    return first_line or cls_name or "unknown error"


def failure_reason(event: dg.DagsterEvent) -> str:
    """The one-line reason of a ``STEP_FAILURE`` event (without a leading ``step: ``, which
    the lines that show it already say)."""
    data = event.event_specific_data
    user = getattr(data, "user_failure_data", None)
    error = getattr(data, "error", None)
    if user is not None and user.description:
        reason = user.description.splitlines()[0]
    elif error is not None:
        reason = error_reason(error)
    else:
        reason = event.message or "the step failed"
    return reason.removeprefix(f"{event.step_key}: ") if event.step_key else reason


def is_expected(event: dg.DagsterEvent) -> bool:
    """Whether a ``STEP_FAILURE`` is an expected one (bad input, a refused request)."""
    error = getattr(event.event_specific_data, "error", None)
    while error is not None and error.cls_name in _WRAPPER_ERRORS and error.cause:
        error = error.cause
    return error is not None and error.cls_name in _EXPECTED_ERRORS


def format_elapsed(seconds: float) -> str:
    """``0.4 s``, ``12.3 s``, ``2 min 05 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def step_done_line(
    episode_id: str, step: str, *, elapsed_s: float, audio_s: float | None
) -> str:
    """``EP: step done in 4.7 s (6.7x realtime)``; without a known audio length, no speed."""
    speed = (
        f" ({audio_s / elapsed_s:.1f}x realtime)" if audio_s and elapsed_s > 0 else ""
    )
    return f"{episode_id}: {step} done in {format_elapsed(elapsed_s)}{speed}"


def step_failed_line(episode_id: str, step: str, *, elapsed_s: float, reason: str) -> str:
    return f"{episode_id}: {step} FAILED after {format_elapsed(elapsed_s)}: {reason}"


def progress_line(episode_id: str, step: str, message: str) -> str:
    """A step's own progress message, once prefixed with the episode and step: the
    transcript logs ``transcript EP: 12 of 32 s recognised``."""
    for redundant in (f"{step} {episode_id}: ", f"{episode_id}: "):
        message = message.removeprefix(redundant)
    return f"{episode_id}: {step}: {message}"


@dataclass
class RunPrinter:
    """Turns one run's event-log records into lines (see the module docstring)."""

    episode_id: str
    audio_s: float | None
    write: Callable[[str], None]
    verbose: bool = False
    """Dagster's console logger prints the traces; no hint about them."""
    started: dict[str, float] = field(default_factory=dict)
    last_said: dict[str, float] = field(default_factory=dict)

    def record(self, entry: dg.EventLogEntry) -> None:
        event = entry.dagster_event
        step = entry.step_key
        if step is None:
            return
        if event is None:
            # A step's own log line: progress and notes; errors come with the failure.
            if entry.level in (20, 30) and entry.user_message:
                self.write(progress_line(self.episode_id, step, entry.user_message))
                self.last_said[step] = time.monotonic()
            return
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            self.started[step] = entry.timestamp
            self.last_said[step] = time.monotonic()
            self.write(f"{self.episode_id}: {step} started")
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and step == "raw_audio":
            self._learn_duration(event)
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            self.write(step_done_line(
                self.episode_id, step, elapsed_s=self._elapsed(step, entry), audio_s=self.audio_s
            ))
            self.last_said.pop(step, None)
        elif kind == dg.DagsterEventType.STEP_UP_FOR_RETRY:
            self.write(f"{self.episode_id}: {step} will be retried: {failure_reason(event)}")
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            self._failed(step, entry, event)
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            self._check(event)

    def _failed(self, step: str, entry: dg.EventLogEntry, event: dg.DagsterEvent) -> None:
        self.write(step_failed_line(
            self.episode_id, step, elapsed_s=self._elapsed(step, entry),
            reason=failure_reason(event),
        ))
        self.last_said.pop(step, None)
        # With --verbose, Dagster's own console logger prints the trace.
        if not self.verbose and not is_expected(event):
            self.write(f"{self.episode_id}: (the stack trace: `pod run --verbose`, or the run's "
                       "logs in the UI)")

    def _check(self, event: dg.DagsterEvent) -> None:
        evaluation = event.event_specific_data
        if evaluation is None or evaluation.passed:
            return
        description = evaluation.description or ""
        self.write(f"{self.episode_id}: check {evaluation.check_name} failed"
                   + (f": {description}" if description else ""))

    def _learn_duration(self, event: dg.DagsterEvent) -> None:
        materialization = getattr(event.event_specific_data, "materialization", None)
        value = (materialization.metadata if materialization else {}).get("duration_s")
        if value is not None and isinstance(value.value, (int, float)):
            self.audio_s = float(value.value)

    def _elapsed(self, step: str, entry: dg.EventLogEntry) -> float:
        return max(0.0, entry.timestamp - self.started.get(step, entry.timestamp))

    def heartbeat(self, now: float) -> None:
        """A "still running" line for each running step silent for :data:`HEARTBEAT_S`."""
        for step, said in list(self.last_said.items()):
            if now - said >= HEARTBEAT_S:
                running_s = time.time() - self.started.get(step, time.time())
                audio = f" (audio {self.audio_s:.0f} s)" if self.audio_s else ""
                self.write(f"{self.episode_id}: {step} still running, {format_elapsed(running_s)}"
                           f"{audio}")
                self.last_said[step] = now


def _find_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str | None:
    records = instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=1)
    return records[0].dagster_run.run_id if records else None


@contextlib.contextmanager
def watching(
    instance: dg.DagsterInstance,
    printer: RunPrinter,
    *,
    run_tags: dict[str, str],
) -> Iterator[None]:
    """Print ``printer``'s lines for the run tagged ``run_tags`` while the body executes it,
    then the lines of the events the run wrote last."""
    done = threading.Event()
    state: dict[str, object] = {"run_id": None, "cursor": None}

    def drain() -> None:
        if state["run_id"] is None:
            state["run_id"] = _find_run(instance, run_tags)
            if state["run_id"] is None:
                return
        while True:
            connection = instance.get_records_for_run(
                str(state["run_id"]), cursor=state["cursor"], limit=500
            )
            for record in connection.records:
                with contextlib.suppress(Exception):  # one odd record never repeats the rest
                    printer.record(record.event_log_entry)
            state["cursor"] = connection.cursor
            if not connection.has_more:
                return

    def poll() -> None:
        while not done.wait(POLL_S):
            with contextlib.suppress(Exception):  # the terminal lines never stop a run
                drain()
                printer.heartbeat(time.monotonic())

    thread = threading.Thread(target=poll, daemon=True, name="pod-console")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5.0)
        with contextlib.suppress(Exception):
            drain()


def stdout_writer(stream: TextIO | None = None) -> Callable[[str], None]:
    """A line writer that flushes at once (lines come from a thread while a run executes)."""

    def write(line: str) -> None:
        out = stream or sys.stdout
        print(line, file=out, flush=True)

    return write
