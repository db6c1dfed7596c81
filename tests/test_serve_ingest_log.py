"""The ingest log in front of the store: `gpu-rca serve` killed (SIGKILL) again and again under load loses no
acknowledged span and stores none twice; a torn or corrupt segment is cut with a warning and the rest stored."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import duckdb
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas import attributes as a
from tests.support.serving import PB
from tests.support.waiting import wait_for

SPANS_PER_REQUEST = 16


def _request(serial: int) -> tuple[bytes, list[tuple[str, str]]]:
    """A request of SPANS_PER_REQUEST spans of one new trace, and their (trace_id, span_id) keys."""
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.append(KeyValue(key=a.SERVICE_NAME, value=AnyValue(string_value="ddcolor")))
    spans = resource_spans.scope_spans.add().spans
    trace_id = random.randbytes(15) + bytes([1])
    keys = []
    for i in range(SPANS_PER_REQUEST):
        span = spans.add(trace_id=trace_id, span_id=(serial * 64 + i + 1).to_bytes(8, "big"), name="ddcolor.inference")
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + serial
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        span.attributes.append(KeyValue(key="payload", value=AnyValue(string_value="x" * 200)))
        keys.append((trace_id.hex(), span.span_id.hex()))
    return message.SerializeToString(), keys


class Load:
    """Clients that post new requests until stopped, remembering which were acknowledged and which not."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.serial = 0
        self.acked: list[list[tuple[str, str]]] = []
        self.refused: list[list[tuple[str, str]]] = []  # answered 503: never logged, so never stored
        self.unknown: list[list[tuple[str, str]]] = []  # the connection broke: stored whole or not at all
        self.statuses: dict[int, int] = {}

    def run(self, url: str, stop: threading.Event) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                with self.lock:
                    self.serial += 1
                    serial = self.serial
                body, keys = _request(serial)
                try:
                    response = client.post(f"{url}/v1/traces", content=body, headers=PB)
                except httpx.HTTPError:
                    with self.lock:
                        self.unknown.append(keys)
                    return
                with self.lock:
                    self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        self.acked.append(keys)
                    elif response.status_code == 503 and response.headers.get("retry-after"):
                        self.refused.append(keys)
                    else:
                        self.unknown.append(keys)


def test_sigkill_under_32_clients_loses_no_acknowledged_span_and_stores_none_twice(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    # A small log: its segments (64 KiB) rotate and are deleted behind the loader all the time.
    args = ["--log-max-mib", "1"]
    load = Load()
    kills = 0
    while kills < 20:
        server = ServeProcess(db, args=args)
        stop = threading.Event()
        clients = [threading.Thread(target=load.run, args=(server.url, stop)) for _ in range(32)]
        for client in clients:
            client.start()
        time.sleep(random.uniform(0.2, 1.2))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        stop.set()
        for client in clients:
            client.join()
        server.stop()
        kills += 1
    assert kills >= 20 and load.acked
    with ServeProcess(db, args=args) as server, httpx.Client(base_url=server.url) as client:
        health = client.get("/healthz").json()
        wait_for(lambda: client.get("/healthz").json()["ingest_log"]["lag_records"] == 0, timeout_s=60, what="stored")
        assert server.stop() == 0
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT trace_id, span_id FROM spans").fetchall()
    stored = set(rows)
    assert len(stored) == len(rows)  # no key twice (also the store's key)
    missing = [key for keys in load.acked for key in keys if key not in stored]
    assert missing == [], f"{len(missing)} acknowledged spans lost"
    assert not any(key in stored for keys in load.refused for key in keys)  # a 503 logs nothing
    for keys in load.unknown:  # cut off mid-request: all of it or none
        assert len({key in stored for key in keys}) == 1
    assert health["ingest_log"]["corrupt_records"] >= 0 and set(load.statuses) <= {200, 503}


def _segments(log_dir: Path) -> list[Path]:
    return sorted(log_dir.glob("*.seg"))


def _stored(db: Path) -> set[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return set(con.execute("SELECT trace_id, span_id FROM spans").fetchall())


def test_a_torn_final_record_is_cut_with_a_warning_and_the_rest_stored(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    log_dir = tmp_path / "log"
    segment = log_dir / f"{1:020d}.seg"
    log_dir.mkdir()
    # A log left by a run killed mid-write: two whole records and half of a third.
    bodies = [_request(20_000 + i) for i in range(3)]
    from gpu_rca.correlate.server.wal import IngestLog

    written = IngestLog(log_dir)
    for body, _ in bodies:
        written.append("traces", "application/x-protobuf", body).result(10)
    written.close()
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - len(bodies[2][0]) // 2])
    with ServeProcess(db, args=["--log-dir", str(log_dir)]) as server, httpx.Client(base_url=server.url) as client:
        wait_for(lambda: client.get("/healthz").json()["ingest_log"]["lag_records"] == 0, timeout_s=30, what="stored")
        health = client.get("/healthz").json()
        assert server.stop() == 0
    assert "a torn or corrupt final record" in server.stderr and "cut off (never acknowledged)" in server.stderr
    assert health["ingest_log"]["corrupt_records"] == 1 and health["ingest_log"]["replayed_records"] == 2
    stored = _stored(db)
    assert all(key in stored for _, keys in bodies[:2] for key in keys)
    assert not any(key in stored for key in bodies[2][1])


def test_a_flipped_byte_inside_a_segment_is_detected_and_reported(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    log_dir = tmp_path / "log"
    from gpu_rca.correlate.server.wal import IngestLog

    bodies = [_request(30_000 + i) for i in range(4)]
    written = IngestLog(log_dir, segment_bytes=len(bodies[0][0]) + 100)  # one record per segment
    for body, _ in bodies:
        written.append("traces", "application/x-protobuf", body).result(10)
    written.close()
    segments = _segments(log_dir)
    assert len(segments) == 4
    damaged = bytearray(segments[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    segments[1].write_bytes(bytes(damaged))
    with ServeProcess(db, args=["--log-dir", str(log_dir)]) as server, httpx.Client(base_url=server.url) as client:
        wait_for(lambda: client.get("/healthz").json()["ingest_log"]["lag_records"] == 0, timeout_s=30, what="stored")
        health = client.get("/healthz").json()
        assert server.stop() == 0
    assert f"segment {segments[1].name}: a corrupt record" in server.stderr
    assert health["ingest_log"]["corrupt_records"] == 1
    stored = _stored(db)
    for index, (_, keys) in enumerate(bodies):
        assert all((key in stored) == (index != 1) for key in keys)
