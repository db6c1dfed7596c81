"""One thread that builds requests' store rows ahead of the writer, bounded like the write queue.

Row building is Python holding the GIL, so one thread is enough (more only take turns: measured slower with
eight senders), and running it off the event loop and off the writer lets the writer spend its time inside
DuckDB, which releases the GIL, while the next request's rows are built.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gpu_rca.correlate.server.writer import QueueFull

T = TypeVar("T")


class RowBuilder:
    """Runs row-building calls one at a time on its own thread; refuses work past `max_pending`."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-rca-rows")
        self._pending = 0  # changed on the event loop only
        self._build_s = 0.0  # moving average of the time one call takes

    @property
    def expected_wait_s(self) -> float:
        """About how long a request admitted now waits for the builds ahead of it and its own."""
        return (self._pending + 1) * self._build_s

    def admit(self, max_wait_s: float | None) -> None:
        """Raise QueueFull when `max_pending` builds are waiting, or they would take longer than `max_wait_s`."""
        if self._pending >= self.max_pending:
            raise QueueFull(f"ingest queue full ({self._pending} requests waiting to be read)")
        if max_wait_s is not None and (wait_s := self.expected_wait_s) > max_wait_s:
            raise QueueFull(f"ingest queue busy (about {wait_s:.1f} s of requests to read ahead)")

    async def build(self, build: Callable[[Any], T], argument: Any) -> T:
        """`build(argument)` on the row-builder thread."""
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, build, argument)
        finally:
            self._pending -= 1

    def _timed(self, build: Callable[[Any], T], argument: Any) -> T:
        started = time.perf_counter()
        try:
            return build(argument)
        finally:
            elapsed = time.perf_counter() - started
            self._build_s = elapsed if self._build_s == 0.0 else 0.8 * self._build_s + 0.2 * elapsed

    def close(self) -> None:
        """Stop the thread once the builds already queued are done."""
        self._executor.shutdown(wait=True)


__all__ = ["RowBuilder"]
