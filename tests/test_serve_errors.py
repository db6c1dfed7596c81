"""What `gpu-rca serve` answers to bad, oversized, duplicated, partly invalid and unauthenticated requests."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas.otlp_json import message_to_json
from tests.support.otlp import every_stamp_trace_request
from tests.support.serving import JS, PB, status_message
from tests.support.waiting import wait_for


def span_count(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM spans").fetchone()[0]


@pytest.fixture
def served(tmp_path: Path):
    db = tmp_path / "store.duckdb"
    with ServeProcess(db) as process, httpx.Client(base_url=process.url, timeout=30) as client:
        yield process, client, db


def test_bad_requests_get_the_right_status_and_change_nothing(served) -> None:
    process, client, db = served
    cases = [
        (
            client.post("/v1/traces", content=b"\xff\xff\xff not protobuf", headers=PB),
            400,
            "body is not OTLP/protobuf traces: its bytes do not decode as an OTLP export request",
        ),
        (client.post("/v1/logs", content=b"{not json", headers=JS), 400, "invalid JSON"),
        (
            client.post(
                "/v1/traces",
                content=json.dumps(
                    {
                        "resourceSpans": [
                            {"scopeSpans": [{"spans": [{"traceId": "abc", "spanId": "00f067aa0ba902b7", "name": "x"}]}]}
                        ]
                    }
                ),
                headers=JS,
            ),
            400,
            "traceId",
        ),
        (
            client.post("/v1/traces", content=b"hello", headers={"Content-Type": "text/plain"}),
            415,
            "Content-Type must be application/x-protobuf or application/json, not 'text/plain'",
        ),
        (
            client.post("/v1/traces", content=b"x", headers={**PB, "Content-Encoding": "br"}),
            415,
            "unsupported Content-Encoding 'br'",
        ),
        (
            client.post("/v1/traces", content=b"plain bytes, not gzip", headers={**PB, "Content-Encoding": "gzip"}),
            400,
            "not valid gzip",
        ),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.content
        assert message in status_message(response)
    bomb = gzip.compress(bytes(80 * 1024 * 1024), compresslevel=9)  # 80 MiB of zeros in ~80 KiB
    response = client.post("/v1/traces", content=bomb, headers={**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert status_message(response) == "the decompressed body exceeds the limit of 67108864 bytes (64 MiB)"
    assert process.stop() == 0
    assert span_count(db) == 0


def test_content_length_past_the_limit_is_refused_before_the_body_is_sent(served) -> None:
    process, _, _ = served
    url = urlsplit(process.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        reply = sock.makefile("rb")
        status_line = reply.readline().decode("latin-1")
        headers = dict(line.decode("latin-1").strip().lower().split(": ", 1) for line in iter(reply.readline, b"\r\n"))
        body = reply.read(int(headers["content-length"]))
    assert status_line.startswith("HTTP/1.1 413 ")
    assert status_pb2.Status.FromString(body).message == (
        "Content-Length 104857600 exceeds the limit of 67108864 bytes (64 MiB)"
    )


def test_same_payload_twice_is_stored_once_and_json_works_too(served) -> None:
    process, client, db = served
    request = every_stamp_trace_request(3)
    payload = request.SerializeToString()
    for _ in range(2):
        response = client.post("/v1/traces", content=payload, headers=PB)
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-protobuf"
        assert response.content == b""  # ExportTraceServiceResponse with partial_success unset
    zipped = client.post("/v1/traces", content=gzip.compress(payload), headers={**PB, "Content-Encoding": "gzip"})
    assert zipped.status_code == 200
    as_json = client.post("/v1/traces", content=message_to_json(request), headers=JS)
    assert as_json.status_code == 200 and as_json.json() == {}
    wait_for(lambda: client.get("/healthz").json()["ingest_log"]["lag_records"] == 0, timeout_s=20, what="all stored")
    metrics = client.get("/metrics").text
    assert "gpu_rca_serve_spans_ingested_total 3.0" in metrics  # new spans: each retry found them stored
    assert 'gpu_rca_serve_requests_total{code="200",route="/v1/traces"} 4.0' in metrics
    assert process.stop() == 0
    with duckdb.connect(str(db), read_only=True) as con:
        ids = sorted(r[0] for r in con.execute("SELECT trace_id FROM spans").fetchall())
    assert ids == sorted(
        span.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
    )


def test_invalid_spans_are_rejected_alone_with_partial_success(served) -> None:
    process, client, db = served
    request = every_stamp_trace_request(3)
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = bytes(16)  # all-zero: invalid
    response = client.post("/v1/traces", content=request.SerializeToString(), headers=PB)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "trace_id" in partial.error_message
    as_json = client.post(
        "/v1/traces",
        content=message_to_json(request).replace('"traceId":""', '"traceId":"00000000000000000000000000000000"'),
        headers=JS,
    )
    assert as_json.status_code == 200
    assert as_json.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert process.stop() == 0
    assert span_count(db) == 2


def test_a_token_guards_every_route_but_healthz(tmp_path: Path) -> None:
    secret = "s3cret-token-value"
    (tmp_path / "token").write_text(secret + "\n")
    db = tmp_path / "store.duckdb"
    payload = every_stamp_trace_request(1).SerializeToString()
    with (
        ServeProcess(db, args=["--token-file", str(tmp_path / "token")]) as process,
        httpx.Client(base_url=process.url, timeout=30) as client,
    ):
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 401
        denied = [
            client.post("/v1/traces", content=payload, headers=PB),
            client.post("/v1/traces", content=payload, headers={**PB, "Authorization": "Bearer wrong"}),
            client.post("/v1/traces", content=payload, headers={**PB, "Authorization": f"Basic {secret}"}),
        ]
        assert [r.status_code for r in denied] == [401, 401, 401]
        assert "bearer token" in status_message(denied[0])
        assert denied[0].headers["www-authenticate"].startswith("Bearer")
        ok = client.post("/v1/traces", content=payload, headers={**PB, "Authorization": f"Bearer {secret}"})
        assert ok.status_code == 200
        assert client.get("/metrics", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        # A browser opens a page once with ?token=, then keeps the HttpOnly cookie; writes still need the header.
        assert client.get("/metrics", params={"token": "wrong"}).status_code == 401
        granted = client.get("/metrics", params={"token": secret})
        assert granted.status_code == 200 and granted.headers["referrer-policy"] == "no-referrer"
        assert granted.headers["set-cookie"] == f"gpu_rca_token={secret}; HttpOnly; SameSite=Strict; Path=/"
        cookie = {"Cookie": f"gpu_rca_token={secret}"}
        assert client.get("/metrics", headers=cookie).status_code == 200
        assert client.post("/v1/traces", content=payload, headers={**PB, **cookie}).status_code == 401
        assert process.stop() == 0
        assert "token required" in process.stderr and secret not in process.stderr
    assert span_count(db) == 1


@pytest.mark.parametrize(("content", "message"), [("", "is empty"), (None, "cannot read token file")])
def test_a_bad_token_file_is_a_usage_error(tmp_path: Path, content: str | None, message: str) -> None:
    import subprocess
    import sys

    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "serve", "--db", str(tmp_path / "s.duckdb"), "--token-file", str(token)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and message in result.stderr


def test_otlp_json_with_hex_ids_is_stored_under_those_ids(served) -> None:
    process, client, db = served
    request = every_stamp_trace_request(2)
    document = json.loads(message_to_json(request))
    for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span["traceId"] = span["traceId"].upper()  # OTLP/JSON ids are case-insensitive hex
    logs = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ddcolor"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1767225600000000000",
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "body": {"stringValue": "CUDA out of memory"},
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    assert client.post("/v1/traces", content=json.dumps(document), headers=JS).json() == {}
    assert client.post("/v1/logs", content=json.dumps(logs), headers=JS).json() == {}
    assert process.stop() == 0
    with duckdb.connect(str(db), read_only=True) as con:
        spans = sorted(con.execute("SELECT trace_id, span_id FROM spans").fetchall())
        stored_logs = con.execute("SELECT trace_id, span_id, severity, body, service FROM logs").fetchall()
    assert spans == sorted((s.trace_id.hex(), s.span_id.hex()) for s in request.resource_spans[0].scope_spans[0].spans)
    assert stored_logs == [
        ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "ERROR", "CUDA out of memory", "ddcolor")
    ]


def test_a_second_server_on_the_same_store_or_port_fails_with_one_line(served) -> None:
    import subprocess
    import sys

    process, _, db = served
    locked = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "serve", "--db", str(db), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert locked.returncode == 1
    assert locked.stderr.startswith("Error: ") and "locked by another process" in locked.stderr
    assert locked.stderr.count("\n") == 1
    port = urlsplit(process.url).port
    busy = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "serve", "--db", str(db.with_name("other.duckdb")), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert busy.returncode == 1
    assert busy.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
