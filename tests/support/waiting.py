"""Waiting for something a test started (a server, a queue, a scrape) to happen."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object], *, timeout_s: float, interval_s: float = 0.05, what: str = "condition"
) -> None:
    """Poll `predicate()` until it is truthy, or raise TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout_s} s")
        time.sleep(interval_s)


__all__ = ["wait_for"]
