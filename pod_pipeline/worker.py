"""Where ``pod run`` executes a run: a forked child it supervises, and how that child is stopped.

Invariants:

* every run executes in a forked child of ``pod run`` that leads its own process group, has
  its own scratch root as ``TMPDIR`` (``$TMPDIR/pod-run-<pid>-<start>-<random>``, named after
  the ``pod run`` process that owns it) and dies with ``pod run`` (``PR_SET_PDEATHSIG``);
  every process the run starts inherits ``POD_RUN_SCRATCH`` naming that root;
* the first SIGINT or SIGTERM to ``pod run`` is forwarded as SIGINT to the child only (its
  helpers are left to it); whatever of the child's group is alive :data:`GRACE_S` later is
  killed; ``pod run`` itself is gone :data:`HARD_STOP_S` after the signal whatever happens;
* a second signal kills the child's group and exits at once, with the first signal's code,
  also when it comes while ``pod run`` is already winding down;
* the child's output reaches ``pod run``'s stderr until a stop is requested, and not after:
  a stop shows as one line, not as the stack traces of the steps it cut short;
* the scratch root is removed when the child ends; roots whose owner is gone (a ``pod run``
  killed with SIGKILL) are removed, with any process still marked with them, by the next
  ``pod run`` (:func:`clean_stale_scratch`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

GRACE_S = 5.0
"""Seconds a stopped run gets to end by itself before its processes are killed."""
HARD_STOP_S = 9.0
"""Seconds after the first signal by which ``pod run`` has exited, whatever it was doing."""
SCRATCH_PREFIX = "pod-run-"
SCRATCH_ENV = "POD_RUN_SCRATCH"
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_on_the_next_stop_signal(code: int) -> None:
    """From now on a SIGINT or SIGTERM ends the process at once with ``code`` (a second
    Ctrl-C while ``pod`` winds down after the first), up to interpreter shutdown, from which
    on they are ignored (:func:`ignore_stop_signals_at_exit`)."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda _signum, _frame: os._exit(code))
    ignore_stop_signals_at_exit()


def ignore_stop_signals_at_exit() -> None:
    """Ignore SIGINT and SIGTERM once the interpreter shuts down (atexit, once per process).

    While it finalises, Python gives every signal with a handler of its own back its default
    action: a Ctrl-C landing then would end the process killed by SIGINT instead of with the
    exit code it is returning. Ignored signals are left ignored.
    """
    global _ignoring_at_exit
    if not _ignoring_at_exit:
        _ignoring_at_exit = True
        atexit.register(_ignore_stop_signals)


_ignoring_at_exit = False


def _ignore_stop_signals() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def die_with_parent(expected_parent_pid: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; a no-op elsewhere).

    With ``expected_parent_pid``, exit at once if the parent is already gone.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if expected_parent_pid is not None and os.getppid() != expected_parent_pid:
        os._exit(1)


def die_with_parent_if_spawned() -> None:
    """In a process started by ``multiprocessing`` (a step process of the multiprocess
    executor): die with the process that started it."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(parent.pid)


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or ``None`` if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields follow the last ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def _own_tag() -> str:
    pid = os.getpid()
    return f"{pid}-{process_start_ticks(pid) or 0}"


def owner_alive(tag: str) -> bool:
    """Whether the process named by a ``<pid>-<start ticks>`` tag is still the same process."""
    pid, _, ticks = tag.partition("-")
    if not pid.isdigit() or not ticks.isdigit():
        return False
    return process_start_ticks(int(pid)) == int(ticks)


def make_scratch_root() -> Path:
    """A fresh scratch root for one run, named after this process."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_own_tag()}-"))


def _owner_of(root: Path) -> str:
    parts = root.name.removeprefix(SCRATCH_PREFIX).split("-")
    return "-".join(parts[:2])


def marked_processes(root: Path) -> list[int]:
    """Processes of this user whose environment names ``root`` as their run's scratch."""
    return processes_with_env(SCRATCH_ENV, str(root))


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of this user's processes, other than this one, whose environment has
    ``name=value`` (Linux ``/proc``)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def remove_scratch(root: Path) -> None:
    """Kill what still runs in ``root``'s name, then remove it."""
    _kill(marked_processes(root))
    shutil.rmtree(root, ignore_errors=True)


def clean_stale_scratch() -> list[str]:
    """Remove the scratch roots of ``pod run`` processes that are gone; one line per root."""
    messages = []
    for root in sorted(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")):
        if not root.is_dir() or owner_alive(_owner_of(root)):
            continue
        remove_scratch(root)
        messages.append(f"removed scratch {root.name} of a pod run that is gone")
    return messages


class Stopper:
    """The signal handling of ``pod run`` (see the module docstring)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._signum = 0
        self._child: int | None = None
        self._scratch: Path | None = None
        self._kill_at: float | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @property
    def exit_code(self) -> int:
        return 128 + self._signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stopper]:
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            if not self.requested:
                # After a stop the handler stays: a signal that comes while ``pod run`` winds
                # down exits with the first stop's code, never as Python's KeyboardInterrupt
                # (which would end the process killed by SIGINT instead of with 130).
                for sig, handler in self._previous.items():
                    signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signal_name is not None:
            self._stop_now()
        ignore_stop_signals_at_exit()
        self.signal_name = signal.Signals(signum).name
        self._signum = signum
        self._kill_at = time.monotonic() + GRACE_S
        if self._child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child, signal.SIGINT)
        threading.Thread(target=self._hard_stop, daemon=True, name="pod-hard-stop").start()

    def _hard_stop(self) -> None:
        time.sleep(HARD_STOP_S)
        self._stop_now()

    def _stop_now(self) -> None:
        if self._child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._child, signal.SIGKILL)
        if self._scratch is not None:
            remove_scratch(self._scratch)
        print(f"pod run: stopped by {self.signal_name or 'a second signal'}", file=sys.stderr, flush=True)
        os._exit(self.exit_code or 130)

    def run_child(self, body: Callable[[], int], *, scratch: Path) -> int:
        """``body()`` in a forked child (see the module docstring); its exit status
        (negative: killed by that signal). Removes ``scratch`` when the child ends."""
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            os.close(write_fd)
            _child_main(body, scratch=scratch, parent=parent)
        os.close(write_fd)
        relay = threading.Thread(target=self._relay, args=(read_fd,), daemon=True, name="pod-relay")
        relay.start()
        self._child, self._scratch = pid, scratch
        try:
            return self._wait(pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # helpers the run left behind
            relay.join(timeout=1.0)
            remove_scratch(scratch)
            self._child = self._scratch = None

    def _relay(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                if not self.requested:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()

    def _wait(self, pid: int) -> int:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            time.sleep(0.05)


def _child_main(body: Callable[[], int], *, scratch: Path, parent: int) -> None:
    """The forked child: never returns, never runs the parent's cleanup."""
    code = 1
    try:
        os.setsid()
        die_with_parent(parent)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.default_int_handler)
        os.environ["TMPDIR"] = str(scratch)
        os.environ[SCRATCH_ENV] = str(scratch)
        tempfile.tempdir = str(scratch)
        code = body()
    except BaseException:  # noqa: BLE001 - the child reports and exits, whatever happened
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
