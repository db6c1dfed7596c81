"""`gpu-rca serve` under 32 concurrent OTLP clients: every acknowledged span stored once, overload is a 503."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load import drive_load


@pytest.mark.slow  # a bounded 3 s of load plus the retries it causes
def test_32_clients_overloading_a_small_queue_lose_nothing_and_store_nothing_twice(tmp_path: Path) -> None:
    # A queue of 2 against 32 clients: most requests meet a full queue at least once and are retried.
    report = drive_load(tmp_path / "load.duckdb", clients=32, seconds=3.0, spans_per_request=32, queue_size=2)
    assert report.errors == []
    assert report.server_exit == 0  # no crash: it stopped cleanly on SIGTERM after the run
    assert report.unacked == []
    assert report.acked and report.stored == report.acked and report.duplicates == 0
    assert set(report.statuses) <= {200, 503}
    assert report.statuses[503] > 0 and report.retry_after_missing == 0
