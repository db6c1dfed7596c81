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


def test_a_queue_slower_than_the_wait_limit_answers_503_before_senders_would_time_out(tmp_path: Path) -> None:
    import time

    from gpu_rca.correlate.server import ServerConfig, create_app
    from gpu_rca.correlate.store import Store
    from tests.support.otlp import every_stamp_trace_request
    from tests.support.serving import PB, running, status_message, writer_held

    store = Store(tmp_path / "store.duckdb")
    app = create_app(store, ServerConfig(max_queue=64, max_queue_wait_s=0.5), close_store=False)
    writer = app.state.gpu_rca.writer
    payload = every_stamp_trace_request(3).SerializeToString()
    with running(app) as client:
        writer.call(lambda _: time.sleep(1.0))  # the writer now knows a write takes about a second
        with writer_held(writer):  # one write queued behind a held one
            busy = client.post("/v1/traces", content=payload, headers=PB)  # 1 of 64 slots used, but ~1 s ahead
        metrics = client.get("/metrics").text
        assert client.post("/v1/traces", content=payload, headers=PB).status_code == 200  # nothing ahead now
    store.close()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    message = status_message(busy)
    assert message.startswith("ingest queue busy (about ") and "s of writes ahead, limit 0.5 s); retry later" in message
    assert 'gpu_rca_serve_spans_dropped_total{reason="queue_full"} 3.0' in metrics
