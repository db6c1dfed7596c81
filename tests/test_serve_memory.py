"""Memory bounded in bytes: spans whose attribute values are 1 MiB and never repeat stream into `gpu-rca serve`
and its resident memory stays under a bound (the attribute cache is capped in bytes, not entries, and a text
over MAX_TEXT_CHARS is stored as its head and tail)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from gpu_rca.correlate.otlp.check import MAX_TEXT_CHARS
from gpu_rca.correlate.server.process import ServeProcess
from tests.support.serving import PB, all_stored

MIB = 1024 * 1024
#: What the test streams in all: far more than the bound, so a cache that kept the values would cross it.
REQUESTS, SPANS_PER_REQUEST = 160, 4
#: The serve process's resident memory stays under this (docs/serve.md).
RSS_BOUND_MIB = 600


def _request() -> bytes:
    """SPANS_PER_REQUEST spans, each with one attribute whose 1 MiB value no other span repeats."""
    message = ExportTraceServiceRequest()
    spans = message.resource_spans.add().scope_spans.add().spans
    trace_id = random.randbytes(15) + b"\x01"
    for i in range(SPANS_PER_REQUEST):
        span = spans.add(trace_id=trace_id, span_id=random.randbytes(7) + b"\x01", name="ddcolor.inference")
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        value = AnyValue(string_value=random.randbytes(MIB // 2).hex())
        span.attributes.append(KeyValue(key="ddcolor.prompt", value=value))
    return message.SerializeToString()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_distinct_1_mib_attribute_values_keep_rss_under_the_bound(tmp_path: Path) -> None:
    with ServeProcess(tmp_path / "store.duckdb") as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(REQUESTS):
            response = client.post("/v1/traces", content=_request(), headers=PB)
            assert response.status_code in (200, 503), response.text
        all_stored(client, timeout_s=120)
        peak = _peak_rss_mib(server.process.pid)
        metrics = client.get("/metrics").text
    streamed = REQUESTS * SPANS_PER_REQUEST
    assert "gpu_rca_serve_spans_ingested_total" in metrics
    print(f"{streamed} MiB of distinct values streamed, peak RSS {peak:.0f} MiB")
    assert peak < RSS_BOUND_MIB, f"peak RSS {peak:.0f} MiB"


def test_a_long_text_is_stored_as_its_head_and_tail(tmp_path: Path) -> None:
    message = ExportTraceServiceRequest()
    span = (
        message.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="ddcolor.inference")
    )
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_000_001_000
    traceback = (
        "Traceback (most recent call last):\n" + "  frame\n" * 20_000 + "torch.OutOfMemoryError: CUDA out of memory"
    )
    span.attributes.append(KeyValue(key="exception.stacktrace", value=AnyValue(string_value=traceback)))
    db = tmp_path / "store.duckdb"
    with ServeProcess(db) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/traces", content=message.SerializeToString(), headers=PB).status_code == 200
        all_stored(client)
    with duckdb.connect(str(db), read_only=True) as con:
        (attributes,) = con.execute("SELECT attributes FROM spans").fetchone()
    stored = json.loads(attributes)["exception.stacktrace"]
    cut = len(traceback) - MAX_TEXT_CHARS
    assert stored.startswith("Traceback (most recent call last):") and stored.endswith("CUDA out of memory")
    assert f" …[{cut} characters cut]… " in stored and len(stored) < MAX_TEXT_CHARS + 40
