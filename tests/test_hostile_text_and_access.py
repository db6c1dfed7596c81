"""Hostile text and access: attribute keys and values that look like SQL, HTML or paths stay text everywhere
(store, CLI table, JSON, digest HTML); bodies past the cap and decompression bombs are refused early; the
token guards every write, never shows in `ps` or the logs, and the server binds to loopback by default."""

from __future__ import annotations

import gzip
import html
import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from gpu_rca.schemas import store as s
from tests.support.otlp import every_stamp_trace_request
from tests.support.serving import PB

SQL = "x'); DROP TABLE spans; --"
XSS = "<script>alert('gpu')</script><img src=x onerror=alert(1)>"
PATH = "../../../../etc/passwd"
START_NS = 1_767_225_600 * 10**9


def hostile_request() -> ExportTraceServiceRequest:
    """40 inference spans; the 10 failed ones all ran the model named `XSS`, from a service named `SQL`."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SQL, "host.name": PATH}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("hostile")
    for index in range(40):
        failed = index % 4 == 0
        attributes = {
            "gpu.telemetry.source": "simulated",
            "gpu.uuid": "GPU-0a0a0a0a-1111-2222-3333-444455556666",
            "gpu.index": 0,
            "ddcolor.input_size": 512,
            "ddcolor.model": XSS if failed else "ddcolor_paper_tiny",
            SQL: PATH,
            XSS: SQL,
            **({"error.type": "ValueError"} if failed else {}),
        }
        span = tracer.start_span("ddcolor.inference", attributes=attributes, start_time=START_NS + index * 10**9)
        if failed:
            span.set_status(Status(StatusCode.ERROR, XSS))
        span.end(end_time=START_NS + index * 10**9 + 200_000_000)
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def gpu_rca(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_sql_html_and_path_lookalikes_are_stored_and_shown_as_text(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    with Store(db) as store:
        assert store.ingest_trace_request(hostile_request()).stored == 40
        con = store.connection
        assert {r[0] for r in con.execute("SHOW TABLES").fetchall()} == set(s.TABLES)  # nothing was dropped
        service, model, attributes = con.execute(
            "SELECT service, ddcolor_model, attributes FROM spans WHERE status = 'ERROR' LIMIT 1"
        ).fetchone()
        assert (service, model) == (SQL, XSS)
        assert json.loads(attributes)[SQL] == PATH and json.loads(attributes)[XSS] == SQL

    as_json = gpu_rca("analyze", "--db", str(db), "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    values = {d["value"] for cause in document["causes"] for d in cause["drivers"]}
    assert XSS in values  # the exact string, not escaped or mangled, in the JSON

    filtered = gpu_rca("analyze", "--db", str(db), "--service", SQL, "--host", PATH, "--json")
    assert filtered.returncode == 0, filtered.stderr
    assert json.loads(filtered.stdout)["spans"] == {
        "total": 40,
        "failed": 10,
        "slow": 0,
    }  # a filter is a value, not SQL

    table = gpu_rca("analyze", "--db", str(db))
    assert table.returncode == 0, table.stderr
    assert "<script>alert('gpu')</script>" in table.stdout  # a terminal shows text as it is

    page = tmp_path / "digest.html"
    digest = gpu_rca(
        "digest",
        "--db",
        str(db),
        "--since",
        str(START_NS // 10**9 - 60),
        "--until",
        str(START_NS // 10**9 + 120),
        "--format",
        "html",
        "--out",
        str(page),
    )
    assert digest.returncode == 0, digest.stderr
    text = page.read_text(encoding="utf-8")
    assert f"ddcolor.model={html.escape(XSS).replace('&#x27;', '&#39;')}" in text  # escaped, shown as text
    assert "<script" not in text.lower()  # no markup of it got through: the only images are the page's plots
    assert text.lower().count("<img") == text.count('<img class="plot" src="data:image/png;base64,')


def _stream_until_answered(url: str, chunks: int, chunk_bytes: int) -> tuple[bytes, int]:
    """POST a chunked body (no Content-Length) of up to `chunks` chunks over a raw socket, stopping as soon as
    the server answers; (the answer's first bytes, body bytes sent by then)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = f"{chunk_bytes:x}\r\n".encode() + bytes(chunk_bytes) + b"\r\n"
        for _ in range(chunks):
            if select.select([sock], [], [], 0)[0]:
                break  # answered mid-body
            try:
                sock.sendall(chunk)
            except OSError:  # closed on us after answering
                break
            sent += chunk_bytes
        return sock.recv(4096), sent


def test_a_body_past_the_cap_is_refused_early_and_a_gzip_bomb_is_never_inflated(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    with ServeProcess(db, args=["--max-body-mib", "1"]) as server, httpx.Client(timeout=30) as client:
        # 64 MiB offered without a length to refuse up front: the answer comes after about the 1 MiB cap
        answer, sent = _stream_until_answered(server.url, chunks=1024, chunk_bytes=64 * 1024)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert sent < 8 * 1024 * 1024
        bomb = gzip.compress(bytes(256 * 1024 * 1024), compresslevel=9)  # 256 MiB of zeros in ~250 KiB
        response = client.post(f"{server.url}/v1/traces", content=bomb, headers={**PB, "Content-Encoding": "gzip"})
        assert response.status_code == 413
        peak_kib = int(
            next(
                line
                for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            ).split()[1]
        )
        assert peak_kib < 512 * 1024  # never inflated: the server's peak memory stays far below the bomb
        assert client.get(f"{server.url}/healthz").status_code == 200
        assert server.stop() == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == 0


TOKEN = "s3cret-token-0f4e9a7c2b"


def test_the_token_guards_writes_and_never_shows_in_ps_or_the_logs(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    payload = every_stamp_trace_request(3).SerializeToString()
    with ServeProcess(db, args=["--token-file", str(token_file)]) as server, httpx.Client(timeout=30) as client:
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert TOKEN not in cmdline and "--token-file" in cmdline
        assert server.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        refused = [
            client.post(f"{server.url}/v1/traces", content=payload, headers=PB),
            client.post(f"{server.url}/v1/traces", content=payload, headers={**PB, "Authorization": "Bearer wrong"}),
            client.post(f"{server.url}/v1/traces", content=payload, headers={**PB, "Authorization": f"Basic {TOKEN}"}),
            client.post(f"{server.url}/v1/logs", content=b"", headers=PB),
            client.post(f"{server.url}/alertmanager", json={"alerts": []}),
            client.get(f"{server.url}/api/analyze"),
            client.get(f"{server.url}/metrics"),
            client.get(f"{server.url}/digests?token=wrong"),
        ]
        assert [r.status_code for r in refused] == [401] * len(refused)
        assert all(r.headers["www-authenticate"].startswith("Bearer") for r in refused)
        assert client.get(f"{server.url}/healthz").status_code == 200
        ok = client.post(f"{server.url}/v1/traces", content=payload, headers={**PB, "Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert server.stop() == 0
    assert TOKEN not in server.stderr and "token required" in server.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == 3  # only the authorised request
        assert con.execute("SELECT count(*) FROM digests").fetchone()[0] == 0


def test_a_token_from_the_environment_is_not_on_the_command_line_either(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_RCA_TOKEN": TOKEN}
    with ServeProcess(tmp_path / "store.duckdb", env=env) as server:
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{server.url}/metrics").status_code == 401
        assert server.stop() == 0
    assert TOKEN not in server.stderr


def test_binding_beyond_loopback_without_a_token_warns(tmp_path: Path) -> None:
    with ServeProcess(tmp_path / "store.duckdb", args=["--host", "0.0.0.0"]) as server:
        assert server.stop() == 0
    assert "warning: listening on 0.0.0.0 without a token" in server.stderr
