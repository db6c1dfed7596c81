"""`gpu-rca serve` as a real subprocess, fed by the real OpenTelemetry SDK OTLP/HTTP exporters."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas import attributes as a
from tests.support.otlp import SERVE_RESOURCE, full_stamps


@pytest.fixture
def server(tmp_path: Path):
    with ServeProcess(tmp_path / "store.duckdb") as process:
        yield process


def test_sdk_spans_and_logs_arrive_with_every_stamp_typed(server: ServeProcess, tmp_path: Path) -> None:
    resource = Resource.create(SERVE_RESOURCE)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{server.url}/v1/traces")))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{server.url}/v1/logs")))
    tracer = tracer_provider.get_tracer("test")
    logger = logger_provider.get_logger("test")
    expected: dict[str, dict[str, object]] = {}
    for index in range(3):
        stamps = full_stamps(index)
        with tracer.start_as_current_span("ddcolor.inference", attributes=stamps) as span:
            span.add_event("gpu.xid", {"gpu.xid": 79})
            span.set_status(Status(StatusCode.ERROR, "CUDA out of memory"))
            logger.emit(
                body=f"request {index} failed",
                severity_number=SeverityNumber.ERROR,
                context=set_span_in_context(span),
                attributes={"request": index},
            )
            expected[format(span.get_span_context().span_id, "016x")] = stamps
    with tracer.start_as_current_span("http.request"):
        pass  # a plain span: stored, not an inference span
    tracer_provider.shutdown()  # flushes through the real exporter; the server answers after commit
    logger_provider.shutdown()
    assert server.stop() == 0, server.stderr

    columns = ", ".join(s.column for s in a.STAMPS)
    with duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True) as con:
        rows = con.execute(
            f"SELECT span_id, service, service_version, host, status, is_inference, {columns} FROM spans"
        ).fetchall()
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'spans'"
            ).fetchall()
        )
        events = con.execute("SELECT name, attributes FROM span_events").fetchall()
        logs = con.execute("SELECT body, severity, trace_id, span_id, service, host FROM logs ORDER BY body").fetchall()
    by_span = {row[0]: row for row in rows}
    assert len(rows) == 4 and sum(row[5] for row in rows) == 3
    for span_id, stamps in expected.items():
        row = by_span[span_id]
        assert row[1:6] == ("ddcolor", "1.4.2", "node-a", "ERROR", True)
        for stamp, value in zip(a.STAMPS, row[6:]):
            assert value == stamps[stamp.attribute], stamp.attribute
            assert types[stamp.column] == stamp.sql_type, stamp.column
    assert events == [("gpu.xid", json.dumps({"gpu.xid": 79}, separators=(",", ":")))] * 3
    assert [log[0] for log in logs] == [f"request {i} failed" for i in range(3)]
    assert {log[3] for log in logs} == set(expected) and all(log[4:] == ("ddcolor", "node-a") for log in logs)
    assert "token" not in server.stderr.lower() or "token required" not in server.stderr
