"""Connections that stall or go away: `gpu-rca serve` drops a request whose head or body stops coming after
--client-timeout seconds, keeps serving other clients meanwhile, and says so in one line per request (a
client that disconnects mid-body too), never a traceback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from gpu_rca.correlate.server.process import ServeProcess
from tests.support.otlp import every_stamp_trace_request
from tests.support.serving import PB, all_stored
from tests.support.waiting import wait_for

HEAD = (
    b"POST /v1/traces HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n"
)


def _port(server: ServeProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _read_to_end(sock: socket.socket, timeout_s: float) -> bytes | None:
    """What the server sends until it closes the connection; None if it is still open after `timeout_s`."""
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def _metric(server: ServeProcess, reason: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    line = f'gpu_rca_serve_connections_dropped_total{{reason="{reason}"}} '
    return next((float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)), 0.0)


def test_200_half_sent_requests_neither_starve_a_client_nor_stay(tmp_path: Path) -> None:
    with ServeProcess(tmp_path / "store.duckdb", args=["--client-timeout", "1"]) as server:
        half_heads = [socket.create_connection(("127.0.0.1", _port(server))) for _ in range(100)]
        half_bodies = [socket.create_connection(("127.0.0.1", _port(server))) for _ in range(100)]
        for sock in half_heads:
            sock.sendall(HEAD[:40])
        for sock in half_bodies:
            sock.sendall(HEAD + b"\x0a\x05")
        request = every_stamp_trace_request(3)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            started = time.perf_counter()
            response = client.post("/v1/traces", content=request.SerializeToString(), headers=PB)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200 and elapsed < 1.0, (response.status_code, elapsed)
            all_stored(client)
            trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
            assert client.get(f"/api/explain/{trace_id}").status_code == 200
        # Each stalled request is dropped after about a second: a head is closed, a body answered 408.
        heads = [_read_to_end(sock, 5) for sock in half_heads]
        bodies = [_read_to_end(sock, 5) for sock in half_bodies]
        assert heads == [b""] * 100
        assert all(body is not None and body.startswith(b"HTTP/1.1 408") for body in bodies), bodies[0]
        for sock in half_heads + half_bodies:
            sock.close()
        assert _metric(server, "head_timeout") == 100 and _metric(server, "body_timeout") == 100
        assert server.stop() == 0
    warnings = [line for line in server.stderr_lines if "dropped a request" in line]
    assert len(warnings) == 100 and all("traces body stalled" in line for line in warnings), warnings[:2]
    assert "Traceback" not in server.stderr


def test_a_client_that_disconnects_mid_body_is_one_warning_line(tmp_path: Path) -> None:
    with ServeProcess(tmp_path / "store.duckdb") as server:
        with socket.create_connection(("127.0.0.1", _port(server))) as sock:
            sock.sendall(HEAD + b"\x0a" * 1000)
        wait_for(lambda: _metric(server, "client_disconnected") == 1, timeout_s=10, what="the drop counted")
        assert server.stop() == 0
    warnings = [line for line in server.stderr_lines if "dropped a request" in line]
    assert len(warnings) == 1 and "disconnected in the middle of its traces body" in warnings[0], warnings
    assert "Traceback" not in server.stderr and "Exception" not in server.stderr
