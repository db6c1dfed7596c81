"""The bounded ingest log and write queue: overload answers 503 with Retry-After and logs nothing; shutdown
drains."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import duckdb
import httpx
from google.rpc import status_pb2

from gpu_rca.correlate.server import ServerConfig, WriterClosed, create_app
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from tests.support import require_binary
from tests.support.otlp import every_stamp_trace_request
from tests.support.serving import PB, all_stored, running, status_message, writer_held
from tests.support.waiting import wait_for


def test_a_full_ingest_log_answers_503_with_retry_after_and_logs_nothing(tmp_path: Path) -> None:
    payload = every_stamp_trace_request(3).SerializeToString()
    store = Store(tmp_path / "s.duckdb")
    # Room for one request's record (its body and a 34-byte header), not two.
    app = create_app(store, ServerConfig(max_queue=1, log_max_bytes=len(payload) + 60), close_store=False)
    writer = app.state.gpu_rca.writer
    reader = store.cursor()  # taken before the writer is held: Store.cursor() waits for the store's lock
    with running(app) as client:
        with writer_held(writer):  # the loader cannot store: the log keeps what it acknowledged
            assert client.post("/v1/traces", content=payload, headers=PB).status_code == 200
            busy = client.post("/v1/traces", content=every_stamp_trace_request(2).SerializeToString(), headers=PB)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.headers["connection"] == "close"
            message = status_pb2.Status.FromString(busy.content).message
            assert message.startswith("ingest log full (") and message.endswith("waiting for the store); retry later")
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "the ingest log is full"
            assert reader.execute("SELECT count(*) FROM spans").fetchone()[0] == 0
        # The loader stores the logged request; the log empties and takes requests again.
        wait_for(lambda: client.get("/healthz").status_code == 200, timeout_s=20, what="log emptied")
        assert client.post("/v1/traces", content=payload, headers=PB).status_code == 200
        # Refused from its headers: its body was never read, so it is counted as a request, not as spans.
        assert 'gpu_rca_serve_requests_refused_total{reason="log_full"} 1.0' in client.get("/metrics").text
    assert store.connection.execute("SELECT count(*) FROM spans").fetchone()[0] == 3
    reader.close()
    store.close()


def test_shutdown_runs_every_queued_write_before_the_store_closes(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    app = create_app(store, ServerConfig(max_queue=8))
    writer = app.state.gpu_rca.writer
    entered, gate = threading.Event(), threading.Event()
    requests = [every_stamp_trace_request(2) for _ in range(4)]
    results: list[object] = []
    with running(app):
        threading.Thread(target=writer.call, args=(lambda s: (entered.set(), gate.wait(30)),)).start()
        assert entered.wait(10)
        workers = [
            threading.Thread(target=lambda r=r: results.append(writer.call(lambda s: s.ingest_trace_request(r))))
            for r in requests
        ]
        for worker in workers:
            worker.start()
        wait_for(lambda: writer.depth == len(requests), timeout_s=10, what="all writes queued")
        gate.set()  # the server stops right away: the queued writes must still be committed
    for worker in workers:
        worker.join()
    assert sorted(r.stored for r in results) == [2, 2, 2, 2]  # type: ignore[attr-defined]
    with Store(tmp_path / "s.duckdb", read_only=True) as reopened:
        assert reopened.connection.execute("SELECT count(*) FROM spans").fetchone()[0] == 8
    try:
        writer.call(lambda s: None)
    except WriterClosed as exc:
        assert "shutting down" in str(exc)
    else:
        raise AssertionError("a closed writer took a job")


def _limit_file_size(pid: int, size: str) -> None:
    """Files the process writes past `size` bytes fail (EFBIG, as a full disk fails with ENOSPC; Python
    ignores SIGXFSZ, so the write raises). The soft limit only, so that it can be lifted again."""
    subprocess.run([require_binary("prlimit"), f"--pid={pid}", f"--fsize={size}:"], check=True)


def test_a_log_that_cannot_write_is_a_503_with_retry_after_until_it_can_again(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    # Segments of 64 KiB: each request below is a segment of its own, larger than the limit set meanwhile.
    with ServeProcess(db, args=["--log-max-mib", "1"]) as server, httpx.Client(base_url=server.url) as client:
        first = every_stamp_trace_request(300)
        assert client.post("/v1/traces", content=first.SerializeToString(), headers=PB).status_code == 200
        all_stored(client)  # the store writes nothing while the limit holds: only the log is refused
        _limit_file_size(server.process.pid, str(256 * 1024))
        try:
            refused = client.post("/v1/traces", content=every_stamp_trace_request(300).SerializeToString(), headers=PB)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert status_message(refused).startswith("the ingest log cannot write: ")
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"].startswith("the ingest log cannot write")
        finally:
            _limit_file_size(server.process.pid, "unlimited")
        time.sleep(1.1)  # Retry-After: then the log is tried again
        later = every_stamp_trace_request(300)
        assert client.post("/v1/traces", content=later.SerializeToString(), headers=PB).status_code == 200
        all_stored(client)
        assert client.get("/healthz").status_code == 200
        assert server.stop() == 0
    assert "Traceback" not in server.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        stored = {row[0] for row in con.execute("SELECT DISTINCT trace_id FROM spans").fetchall()}
    sent = {first.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()}
    sent.add(later.resource_spans[0].scope_spans[0].spans[0].trace_id.hex())
    assert sent <= stored
