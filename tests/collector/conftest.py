"""The `sim` fixture: a fresh simulated fleet, collector and in-memory span pipeline per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.collector import Sim, make_sim


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = make_sim()
    yield s
    s.collector.shutdown()
    s.provider.shutdown()
