"""`gpu-rca serve` under 32 concurrent OTLP clients: every acknowledged span stored once, overload is a 503."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load import drive_load


@pytest.mark.slow  # a bounded 3 s of load plus the retries it causes
def test_32_clients_against_a_small_ingest_log_lose_nothing_and_store_nothing_twice(tmp_path: Path) -> None:
    # A 1 MiB log against 32 clients: a request that finds it full is answered 503 and retried.
    report = drive_load(
        tmp_path / "load.duckdb",
        clients=32,
        seconds=3.0,
        spans_per_request=32,
        queue_size=2,
        server_args=("--log-max-mib", "1"),
    )
    assert report.errors == []
    assert report.server_exit == 0  # no crash: it stopped cleanly on SIGTERM after the run
    assert report.unacked == []
    assert report.acked and report.stored == report.acked and report.duplicates == 0
    assert set(report.statuses) <= {200, 503}
    assert report.retry_after_missing == 0
