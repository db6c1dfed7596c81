"""Admission before the body: while the store lags behind the ingest log, `gpu-rca serve` answers a trace
request 503 + Retry-After from its headers alone, within 100 ms, and /healthz and /metrics keep answering
within 100 ms, under senders that trickle their bodies and senders that flood it."""

from __future__ import annotations

import ast
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from gpu_rca.correlate.server.process import ServeProcess
from tests.support.otlp import every_stamp_trace_request

#: A request the loader takes long to store (every attribute value is new), cheap to receive and check.
SPANS, ATTRIBUTES = 1000, 24


def _heavy_request() -> bytes:
    message = ExportTraceServiceRequest()
    spans = message.resource_spans.add().scope_spans.add().spans
    trace_id = random.randbytes(15) + b"\x01"
    for i in range(SPANS):
        span = spans.add(trace_id=trace_id, span_id=random.randbytes(7) + b"\x01", name="ddcolor.inference")
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        for k in range(ATTRIBUTES):
            value = AnyValue(string_value=random.randbytes(12).hex())
            span.attributes.append(KeyValue(key=f"attr.{k}", value=value))
    return message.SerializeToString()


def _headers(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@contextmanager
def _tricklers(port: int, count: int, stop: threading.Event) -> Iterator[None]:
    """`count` connections that send a request's headers and then its body a few bytes at a time."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(_headers("/v1/traces", 1_000_000) + b"\x0a")
        sockets.append(sock)

    def trickle() -> None:
        while not stop.wait(0.2):
            for sock in sockets:
                with suppress(OSError):
                    sock.send(b"\x00")

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for sock in sockets:
            sock.close()


#: Senders that post one heavy request again and again until stdin closes, in their own process (so this
#: process's timings do not wait on their threads), and then print the statuses they got.
_FLOOD = """
import sys, threading, httpx
url, body = sys.argv[1], open(sys.argv[2], "rb").read()
statuses, done = [], threading.Event()
def send():
    with httpx.Client(timeout=30) as client:
        while not done.is_set():
            try:
                statuses.append(client.post(url, content=body, headers={"Content-Type": "application/x-protobuf"}).status_code)
            except httpx.HTTPError:
                pass
threads = [threading.Thread(target=send) for _ in range(int(sys.argv[3]))]
for thread in threads:
    thread.start()
sys.stdin.read()
done.set()
for thread in threads:
    thread.join()
print(" ".join(map(str, statuses)))
"""


@contextmanager
def _flood(url: str, body_file: Path, senders: int) -> Iterator[list[int]]:
    """Senders in a child process; the list they fill with their statuses once the block ends."""
    statuses: list[int] = []
    child = subprocess.Popen(
        [sys.executable, "-c", _FLOOD, f"{url}/v1/traces", str(body_file), str(senders)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield statuses
    finally:
        out, _ = child.communicate("", timeout=120)
        statuses.extend(int(code) for code in out.split())


def _refused_from_headers(port: int, length: int) -> tuple[float, bytes]:
    """(seconds from sending a request's headers to the first bytes of the answer, that answer); the body is
    never sent: b"" when nothing came within 0.5 s (the request was admitted: the server waits for its body)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.5)
        started = time.perf_counter()
        sock.sendall(_headers("/v1/traces", length))
        try:
            answer = sock.recv(4096)
        except TimeoutError:
            return time.perf_counter() - started, b""
        return time.perf_counter() - started, answer


def _timed_get(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code in (200, 503), response.text
    return elapsed


def test_a_lagging_store_refuses_from_the_headers_and_health_answers_fast(tmp_path: Path) -> None:
    body_file = tmp_path / "heavy.pb"
    body_file.write_bytes(_heavy_request())
    length = body_file.stat().st_size
    refusals: list[tuple[float, bytes]] = []
    health: list[float] = []
    probes = 0
    with ServeProcess(tmp_path / "store.duckdb", args=["--max-lag", "0.3"]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with (
            _tricklers(port, 100, threading.Event()),
            httpx.Client(base_url=server.url, timeout=10) as client,
            _flood(server.url, body_file, 8) as statuses,
        ):
            deadline = time.monotonic() + 60
            while len(refusals) < 10 and time.monotonic() < deadline:
                probes += 1
                elapsed, answer = _refused_from_headers(port, length)
                if answer.startswith(b"HTTP/1.1 503"):
                    refusals.append((elapsed, answer))
                health.append(_timed_get(client, "/healthz"))
                health.append(_timed_get(client, "/metrics"))
        metrics = httpx.get(f"{server.url}/metrics").text
    print(
        f"{probes} probes, {len(refusals)} refused in "
        f"{sorted(round(e * 1000) for e, _ in refusals)} ms; health/metrics max {max(health) * 1000:.0f} ms, "
        f"median {sorted(health)[len(health) // 2] * 1000:.0f} ms"
    )
    assert len(refusals) >= 10, f"{probes} probes, none refused; flood answers {set(statuses)}"
    for elapsed, answer in refusals:
        assert elapsed < 0.1, f"refused after {elapsed * 1000:.0f} ms"
        assert b"retry-after: 1" in answer.lower() and b"connection: close" in answer.lower()
    assert max(health) < 0.1, f"/healthz or /metrics took {max(health) * 1000:.0f} ms"
    assert 200 in statuses and set(statuses) <= {200, 503}
    assert 'gpu_rca_serve_requests_refused_total{reason="lag"}' in metrics


#: 160 OTLP exporters with their default 10 s timeout, each posting again as soon as it is answered, in a child
#: process; prints how many requests were acknowledged, refused (503 + Retry-After), otherwise answered, and
#: not answered within the timeout.
_EXPORTERS = """
import collections, sys, threading, time, httpx
url, body, seconds, clients = sys.argv[1], open(sys.argv[2], "rb").read(), float(sys.argv[3]), int(sys.argv[4])
counts, lock, end = collections.Counter(), threading.Lock(), time.monotonic() + seconds
def export():
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < end:
            try:
                response = client.post(url, content=body, headers={"Content-Type": "application/x-protobuf"})
                key = {200: "acked", 503: "refused"}.get(response.status_code, f"status {response.status_code}")
                if key == "refused" and not response.headers.get("retry-after"):
                    key = "503 without Retry-After"
            except httpx.TimeoutException:
                key = "timed out"
            except httpx.TransportError:
                key = "connection error"
            with lock:
                counts[key] += 1
threads = [threading.Thread(target=export) for _ in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(dict(counts))
"""


def test_160_exporters_with_10_s_timeouts_are_each_answered_in_time(tmp_path: Path) -> None:
    body_file = tmp_path / "request.pb"
    body_file.write_bytes(every_stamp_trace_request(256).SerializeToString())
    with ServeProcess(tmp_path / "store.duckdb") as server:
        child = subprocess.run(
            [sys.executable, "-c", _EXPORTERS, f"{server.url}/v1/traces", str(body_file), "20", "160"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr[-2000:]
        assert server.stop() == 0
    counts = ast.literal_eval(child.stdout.strip().splitlines()[-1])
    print(counts)
    assert counts.get("acked", 0) > 0 and set(counts) <= {"acked", "refused"}, counts
    assert "Traceback" not in server.stderr
