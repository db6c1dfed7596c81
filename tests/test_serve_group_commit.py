"""Group commit: OTLP requests logged while the store writer is busy are acknowledged at once and stored
together, a request sent twice stored once; span attribute bytes that are not a KeyValue are refused with a 400
before anything is logged."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client.parser import text_string_to_metric_families

from gpu_rca.correlate.otlp.wire import RawTraces
from gpu_rca.correlate.server import ServerConfig, create_app
from gpu_rca.correlate.store import Store
from gpu_rca.schemas import metrics as m
from tests.support.otlp import every_stamp_trace_request
from tests.support.serving import PB, running
from tests.support.waiting import wait_for


def _commits(client: httpx.Client) -> float:
    """Transactions the server's writer has committed (the count of its write-time histogram)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == m.SERVE_WRITE_SECONDS:
            return next(s.value for s in family.samples if s.name.endswith("_count"))
    raise AssertionError(f"no {m.SERVE_WRITE_SECONDS} on /metrics")


def test_requests_logged_while_the_store_is_busy_are_acknowledged_then_stored_together(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    app = create_app(store, ServerConfig(max_queue=16), close_store=False)
    writer = app.state.gpu_rca.writer
    bodies = [every_stamp_trace_request(3).SerializeToString() for _ in range(4)]
    bodies.append(bodies[1])  # an exporter's retry, logged beside the original
    entered, gate = threading.Event(), threading.Event()
    with running(app) as client:
        threading.Thread(target=writer.call, args=(lambda s: (entered.set(), gate.wait(30)),)).start()
        assert entered.wait(10)
        commits = _commits(client)
        with ThreadPoolExecutor(len(bodies)) as pool:
            # Acknowledged once logged, while the store writer is still held: nothing waits for DuckDB.
            responses = list(pool.map(lambda body: client.post("/v1/traces", content=body, headers=PB), bodies))
        assert _commits(client) == commits
        gate.set()
        wait_for(lambda: app.state.gpu_rca.loader.catch_up(0.1), timeout_s=20, what="every request stored")
        # The job holding the writer, then the loader's batches: the first request alone (read while the writer
        # was held) and the rest together.
        assert _commits(client) <= commits + 3
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert all(ExportTraceServiceResponse.FromString(r.content) == ExportTraceServiceResponse() for r in responses)
    assert store.connection.execute("SELECT count(*) FROM spans").fetchone()[0] == 12
    store.close()


def test_span_attribute_bytes_that_are_no_key_value_are_refused_and_store_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    app = create_app(store, ServerConfig(), close_store=False)
    message = RawTraces.FromString(every_stamp_trace_request(2).SerializeToString())
    message.resource_spans[0].scope_spans[0].spans[1].attributes.append(b"\x0a\x20truncated")  # a 32-byte key, 9 sent
    with running(app) as client:
        response = client.post("/v1/traces", content=message.SerializeToString(), headers=PB)
        assert response.status_code == 400
        assert "do not decode as an OTLP export request" in response.content.decode("utf-8", "replace")
        assert (
            client.post("/v1/traces", content=every_stamp_trace_request(2).SerializeToString(), headers=PB).status_code
            == 200
        )
    assert store.connection.execute("SELECT count(*) FROM spans").fetchone()[0] == 2
    store.close()
