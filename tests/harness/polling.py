"""Waiting for what a test cannot be told about (another process's state, a log line, a
file) by polling it, never by sleeping a fixed time instead."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05
) -> bool:
    """Poll ``condition`` every ``interval`` seconds until it holds or ``timeout`` seconds
    pass; whether it held, for the caller to assert with its own message."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
