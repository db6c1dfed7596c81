"""Hostile OTLP on the ingest-log path of `gpu-rca serve`: multi-member gzip stored whole, bytes after the gzip
data refused, times past 2^63-1 ns and ids of the wrong length rejected alone (protobuf and JSON alike), never a
500, and a span's events capped."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from gpu_rca.correlate.otlp.check import MAX_EVENTS_PER_SPAN
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas.otlp_json import message_to_json
from tests.support.otlp import every_stamp_trace_request, logs_request
from tests.support.serving import JS, PB, all_stored, status_message


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    db = tmp_path_factory.mktemp("hostile") / "store.duckdb"
    with ServeProcess(db) as process, httpx.Client(base_url=process.url, timeout=30) as client:
        yield client, db


def _trace_ids(request: ExportTraceServiceRequest) -> list[str]:
    return [span.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def _explained(client: httpx.Client, trace_id: str) -> dict:
    response = client.get(f"/api/explain/{trace_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_every_member_of_a_multi_member_gzip_body_is_stored(served) -> None:
    client, _ = served
    first, second = every_stamp_trace_request(2), every_stamp_trace_request(3)
    both = ExportTraceServiceRequest()
    both.MergeFrom(first)
    both.MergeFrom(second)
    body = both.SerializeToString()
    cut = len(first.SerializeToString())  # two members, split where the first request's bytes end
    zipped = gzip.compress(body[:cut]) + gzip.compress(body[cut:])
    response = client.post("/v1/traces", content=zipped, headers={**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 200
    for trace_id in set(_trace_ids(second)):
        assert _explained(client, trace_id)["trace_id"] == trace_id


def test_bytes_after_the_gzip_data_are_refused(served) -> None:
    client, _ = served
    request = every_stamp_trace_request(2)
    zipped = gzip.compress(request.SerializeToString()) + b"trailing garbage"
    response = client.post("/v1/traces", content=zipped, headers={**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert status_message(response) == "body has bytes after its gzip data that are not another gzip member"
    assert client.get(f"/api/explain/{_trace_ids(request)[0]}").status_code == 404


@pytest.mark.parametrize("content_type", [PB, JS])
def test_times_past_2_63_ns_are_rejected_alone(served, content_type) -> None:
    client, _ = served
    request = every_stamp_trace_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].start_time_unix_nano = 2**64 - 2
    spans[1].end_time_unix_nano = 2**64 - 1
    body = request.SerializeToString() if content_type is PB else message_to_json(request).encode()
    response = client.post("/v1/traces", content=body, headers=content_type)
    assert response.status_code == 200
    partial = (
        ExportTraceServiceResponse.FromString(response.content).partial_success
        if content_type is PB
        else response.json()["partialSuccess"]
    )
    rejected = partial.rejected_spans if content_type is PB else int(partial["rejectedSpans"])
    message = partial.error_message if content_type is PB else partial["errorMessage"]
    assert rejected == 2 and "past the year 2262" in message
    assert _explained(client, spans[2].trace_id.hex())["trace_id"] == spans[2].trace_id.hex()


def test_a_log_time_of_2_64_minus_1_is_rejected_alone(served) -> None:
    client, _ = served
    request = logs_request()
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].time_unix_nano = 2**64 - 1
    response = client.post("/v1/logs", content=request.SerializeToString(), headers=PB)
    assert response.status_code == 200
    partial = ExportLogsServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_log_records == 1 and "past the year 2262" in partial.error_message


def test_a_15_byte_trace_id_is_rejected_alone_in_json_as_in_protobuf(served) -> None:
    client, _ = served
    request = every_stamp_trace_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = spans[0].trace_id[:15]
    for body, headers in ((request.SerializeToString(), PB), (message_to_json(request).encode(), JS)):
        response = client.post("/v1/traces", content=body, headers=headers)
        assert response.status_code == 200
        if headers is PB:
            partial = ExportTraceServiceResponse.FromString(response.content).partial_success
            assert partial.rejected_spans == 1 and "trace_id" in partial.error_message
        else:
            partial = response.json()["partialSuccess"]
            assert partial["rejectedSpans"] == "1" and "trace_id" in partial["errorMessage"]
    assert _explained(client, spans[1].trace_id.hex())["trace_id"] == spans[1].trace_id.hex()


def test_a_span_keeps_at_most_the_capped_number_of_events(tmp_path: Path) -> None:
    request = every_stamp_trace_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for i in range(MAX_EVENTS_PER_SPAN * 20):
        span.events.add(time_unix_nano=span.start_time_unix_nano + i, name="e")
    json_request = every_stamp_trace_request(1)
    json_request.resource_spans[0].scope_spans[0].spans[0].events.extend(span.events)
    db = tmp_path / "store.duckdb"
    with ServeProcess(db) as process, httpx.Client(base_url=process.url, timeout=30) as client:
        assert client.post("/v1/traces", content=request.SerializeToString(), headers=PB).status_code == 200
        assert client.post("/v1/traces", content=message_to_json(json_request), headers=JS).status_code == 200
        all_stored(client)
        assert process.stop() == 0
    with duckdb.connect(str(db), read_only=True) as con:
        counts = con.execute("SELECT count(*) FROM span_events GROUP BY trace_id, span_id").fetchall()
    assert sorted(counts) == [(MAX_EVENTS_PER_SPAN,), (MAX_EVENTS_PER_SPAN,)]


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_millions_of_empty_events_or_entries_do_not_stop_later_requests(served) -> None:
    client, _ = served
    # One span of 2M empty events (4 MiB): Span.events is field 11, ScopeSpans.spans 2, ResourceSpans.scope_spans
    # 2, the request's resource_spans 1.
    request = every_stamp_trace_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    events = span.SerializeToString() + _field(11, b"") * 2_000_000
    body = _field(1, _field(2, _field(2, events)))
    assert client.post("/v1/traces", content=body, headers=PB).status_code == 200
    # 32 MiB of empty ResourceSpans: refused whole, at once, with a reason.
    started = time.perf_counter()
    entries = client.post("/v1/traces", content=_field(1, b"") * (16 * 1024 * 1024), headers=PB)
    elapsed = time.perf_counter() - started
    assert entries.status_code == 400 and "more than 10000 resource and scope entries" in status_message(entries)
    assert elapsed < 10, elapsed
    # Later requests are stored as usual.
    later = every_stamp_trace_request(2)
    assert client.post("/v1/traces", content=later.SerializeToString(), headers=PB).status_code == 200
    for trace_id in set(_trace_ids(later)) | {span.trace_id.hex()}:
        assert _explained(client, trace_id)["trace_id"] == trace_id
