"""Waiting in a test for something another process does: poll, and fail the test with what
it waited for once the time is up."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object], *, timeout_s: float, what: str, interval_s: float = 0.01
) -> None:
    """Return as soon as ``predicate()`` is true, asking every ``interval_s``; after
    ``timeout_s``, fail with "timed out waiting for ``what``"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")
