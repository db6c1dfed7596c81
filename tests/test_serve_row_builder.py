"""The row builder ahead of the writer is bounded like the write queue: past `max_pending` requests waiting,
or past the wait limit, a request is refused (503) before any of its rows are built."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gpu_rca.correlate.server.row_builder import RowBuilder
from gpu_rca.correlate.server.writer import QueueFull


def test_a_full_row_builder_refuses_until_a_build_ends() -> None:
    async def scenario() -> None:
        rows = RowBuilder(max_pending=1)
        gate = threading.Event()
        held = asyncio.create_task(rows.build(lambda _: gate.wait(10), None))
        await asyncio.sleep(0.05)  # the build is running and counted
        with pytest.raises(QueueFull, match="waiting to be read"):
            rows.admit(None)
        gate.set()
        assert await held is True
        rows.admit(None)  # room again
        assert await rows.build(lambda value: value * 2, 21) == 42
        rows.close()

    asyncio.run(scenario())


def test_builds_slower_than_the_wait_limit_are_refused_before_they_start() -> None:
    async def scenario() -> None:
        rows = RowBuilder(max_pending=64)
        await rows.build(lambda _: time.sleep(0.3), None)  # the builder now knows a build takes about 0.3 s
        rows.admit(1.0)
        with pytest.raises(QueueFull, match="busy"):
            rows.admit(0.1)
        rows.close()

    asyncio.run(scenario())
