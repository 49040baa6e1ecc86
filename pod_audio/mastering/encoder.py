"""The MP3 encoder fed from a thread of its own (:class:`BackgroundWrites`).

The encoder is a child process fed through a pipe: written from the caller's thread,
decoding and limiting the next block would wait while the encoder empties the pipe. With
a few blocks queued between them both cores work; every block is written, in order, and
an error of the write reaches the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["BackgroundWrites"]


class BackgroundWrites:
    """Call ``write`` on a thread of its own, a few blocks behind the caller.

    The MP3 encoder is a child process fed through a pipe: written from the caller's
    thread, decoding and limiting the next block would wait while the encoder empties
    the pipe, and the encoder would wait for that block. With a queue of ``depth`` blocks
    between them both cores work. Leaving the ``with`` block waits for the writes; an
    error of ``write`` is raised there (or by the next call).
    """

    def __init__(self, write: Callable[[np.ndarray], None], *, depth: int = 4) -> None:
        self._write = write
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mp3-writer", daemon=True)

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(block)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def __call__(self, block: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def __enter__(self) -> BackgroundWrites:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error
