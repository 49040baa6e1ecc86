"""Pocketsphinx searches in worker processes while a long transcription runs.

pocketsphinx holds Python's GIL for a whole utterance: two searches in two threads run one
after the other, and while one runs the recogniser's own Python code waits as well. Inside
:func:`workers`, :func:`run` sends each search to one of a few worker processes and the
calling thread waits on a pipe, without the GIL; outside it, :func:`run` calls the search
in the calling thread. A search is a pure function of its arguments (a fresh decoder each
time), so where it runs never changes what it returns.

A worker is a fresh interpreter (``python -m pod_audio.search_workers``), not a fork: no
lock held by another thread is copied, and unlike :mod:`multiprocessing`'s spawn it never
imports the caller's main script again. It reads pickled calls on stdin and writes
pickled results on stdout, ignores SIGINT (a Ctrl-C reaches the whole process group; the
caller decides what an interrupt ends) and exits when its stdin closes: at the end of the
outermost :func:`workers` block, or when the caller's process is gone.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

from pod_audio.errors import TranscriptionError

__all__ = ["run", "usable_cores", "workers"]

T = TypeVar("T")

_HEADER = struct.Struct("<Q")


class _Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self) -> None:
        # The worker imports pod_audio from where this process did, installed or not.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.environ.get("PYTHONPATH")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pod_audio.search_workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")},
        )

    def call(self, search: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            _send(self.process.stdin, (search, args))
            ok, value = _receive(self.process.stdout)
        except (OSError, EOFError) as exc:
            # The pipe closes as the process exits, a moment before its exit code is there.
            try:
                code: int | None = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise TranscriptionError(
                f"a pocketsphinx worker process died (exit code {code})"
            ) from exc
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Pool:
    def __init__(self, count: int) -> None:
        self.idle: queue.Queue[_Worker] = queue.Queue()
        self.all = [_Worker() for _ in range(count)]
        for worker in self.all:
            self.idle.put(worker)

    def close(self) -> None:
        for worker in self.all:
            worker.close()


_lock = threading.Lock()
_pool: _Pool | None = None
_users = 0


@contextmanager
def workers(count: int) -> Iterator[None]:
    """Send searches made by :func:`run` (from any thread) to ``count`` worker processes
    until the block ends. Blocks may nest or overlap across threads: the first one starts
    the workers, the last one to end stops them. ``count < 2`` runs searches in place."""
    global _pool, _users
    if count < 2:
        yield
        return
    with _lock:
        if _pool is None:
            _pool = _Pool(count)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            pool = _pool if _users == 0 else None
            if pool is not None:
                _pool = None
        if pool is not None:
            pool.close()


def run(search: Callable[..., T], /, *args: Any) -> T:
    """``search(*args)``, in a worker process inside :func:`workers`, here otherwise.

    ``search`` must be a module-level function; its arguments and result are pickled.
    An exception it raises is raised here.

    Raises:
        TranscriptionError: a worker process died (killed, out of memory).
    """
    pool = _pool
    if pool is None:
        return search(*args)
    worker = pool.idle.get()
    try:
        return worker.call(search, args)
    finally:
        pool.idle.put(worker)


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _send(stream: IO[bytes], value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("worker pipe closed")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("worker pipe closed")
    return pickle.loads(data)


def _serve() -> None:
    """The worker's loop: one call per message until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    while True:
        try:
            search, args = _receive(requests)
        except EOFError:
            return
        try:
            reply = (True, search(*args))
        except Exception as exc:  # noqa: BLE001 - handed back to the caller, who raises it
            reply = (False, exc)
        _send(replies, reply)


if __name__ == "__main__":
    _serve()
