"""Faults: serve killed with SIGKILL mid-ingest, a silent or absent Prometheus during analyze, the collector
with its OTLP endpoint down, and a GPU lost while the background sampler runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.load import PROTOBUF, BatchSource
from gpu_rca import lab
from gpu_rca.collector import Collector
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from tests.support.otlp import every_stamp_trace_request
from tests.support.waiting import wait_for

SPANS_PER_BATCH = 64
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_app(code: str, **env: str) -> dict:
    """Run `code` as an application would, in a fresh interpreter; it prints one JSON line last."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CUDA_VISIBLE"))}
    full_env.update(env, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _send_until_killed(url: str, source: BatchSource, acked: list[int], stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            number, payload = source.take()
            try:
                response = client.post(url, content=payload, headers=PROTOBUF)
            except httpx.HTTPError:
                return  # the server died under us: this batch was never acknowledged
            if response.status_code == 200:
                acked.append(number)


def test_sigkill_mid_ingest_loses_no_acknowledged_span_and_keeps_no_partial_batch(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    source = BatchSource(SPANS_PER_BATCH)
    acked: list[int] = []
    stop = threading.Event()
    server = ServeProcess(db)
    clients = [
        threading.Thread(target=_send_until_killed, args=(f"{server.url}/v1/traces", source, acked, stop))
        for _ in range(8)
    ]
    for client in clients:
        client.start()
    wait_for(lambda: len(acked) >= 20, timeout_s=60, what="20 batches acknowledged")
    server.process.send_signal(signal.SIGKILL)  # mid-ingest: clients are still sending
    assert server.process.wait(10) == -signal.SIGKILL
    stop.set()
    for client in clients:
        client.join(30)
    server.stop()
    sent = source.take()[0] - 1
    assert len(acked) < sent  # some batches were in flight when it died

    # Restarting replays DuckDB's write-ahead log; the store opens and takes writes again.
    with ServeProcess(db) as again, httpx.Client(timeout=30) as client:
        assert (
            client.post(
                f"{again.url}/v1/traces", content=every_stamp_trace_request(2).SerializeToString(), headers=PROTOBUF
            ).status_code
            == 200
        )
        assert again.stop() == 0
    with duckdb.connect(str(db), read_only=True) as con:
        per_batch = dict(
            con.execute(
                "SELECT substr(trace_id, 1, 16), count(*) FROM spans WHERE trace_id LIKE '0000%' GROUP BY 1"
            ).fetchall()
        )
    stored = {int(prefix, 16): count for prefix, count in per_batch.items()}
    assert set(acked) <= set(stored)  # every acknowledged batch survived the kill
    assert set(stored.values()) == {SPANS_PER_BATCH}  # and no batch is there in part


def test_a_sigterm_right_after_start_stops_serve_cleanly(tmp_path: Path) -> None:
    # The signal lands between the "listening" line and uvicorn's own handlers: it used to be swallowed
    # there, leaving serve running until it was killed.
    for attempt in range(3):
        server = ServeProcess(tmp_path / f"store-{attempt}.duckdb")
        started = time.monotonic()
        assert server.stop(timeout_s=20) == 0, server.stderr
        assert time.monotonic() - started < 15
        assert "stopped, store closed" in server.stderr


def _failure_store(path: Path) -> None:
    """A store of 40 stamped inference spans on one GPU, 10 of them failed with cuda_oom on large inputs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    start_ns = 1_767_225_600 * 10**9
    for index in range(40):
        failed = index % 4 == 0
        attributes = {
            "gpu.telemetry.source": "simulated",
            "gpu.uuid": "GPU-0a0a0a0a-1111-2222-3333-444455556666",
            "gpu.index": 0,
            "ddcolor.input_size": 1280 if failed else 512,
            "gpu.memory.used.max": 23_000_000_000,
            "gpu.memory.total": 24_000_000_000,
            **({"error.type": "cuda_oom"} if failed else {}),
        }
        span = tracer.start_span("ddcolor.inference", attributes=attributes, start_time=start_ns + index * 10**9)
        if failed:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, "CUDA out of memory"))
        span.end(end_time=start_ns + index * 10**9 + 300_000_000)
    provider.shutdown()
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    with Store(path) as store:
        store.ingest_trace_request(
            ExportTraceServiceRequest.FromString(encode_spans(exporter.get_finished_spans()).SerializeToString())
        )


def _analyze(db: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "analyze", "--db", str(db), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run, time.monotonic() - started


@pytest.mark.slow  # waits out the pull's 10 s deadline against the silent socket
def test_analyze_with_prometheus_down_or_silent_ranks_from_the_stamps_with_a_warning(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    _failure_store(db)
    plain, _ = _analyze(db)
    assert plain.returncode == 0, plain.stderr
    baseline = json.loads(plain.stdout)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections into its backlog and never answers a byte
        endpoints = {"down": f"http://127.0.0.1:{free_port()}", "silent": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        for kind, url in endpoints.items():
            run, elapsed = _analyze(db, "--prometheus", url)
            assert run.returncode == 0, (kind, run.stderr)
            document = json.loads(run.stdout)
            assert elapsed < 30, kind  # the pull's 10 s deadline, plus interpreter start-up on a busy machine
            assert [w for w in document["warnings"] if w.startswith("Prometheus unreachable")], (kind, document)
            assert "warning: Prometheus unreachable" in run.stderr
            assert document["causes"] == baseline["causes"] and document["spans"] == baseline["spans"]
    assert baseline["spans"] == {"total": 40, "failed": 10, "slow": 0} and baseline["causes"]


def test_collector_with_its_otlp_endpoint_down_serves_requests_in_bounded_memory_and_counts_every_drop() -> None:
    out = run_app(
        """
        import json, time
        from gpu_rca import collector, lab

        c = collector.configure(service_name="app", nvml=lab.simulated_nvml([{"host": "h", "gpus": 2, "model": "L4"}]))

        def rss_kib():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1])

        @collector.inference_span("ddcolor.inference", gpu=0)
        def work(x):
            return x + 1

        results, slowest, rss = [], 0.0, []
        for i in range(20000):
            t0 = time.perf_counter()
            results.append(work(i))
            slowest = max(slowest, time.perf_counter() - t0)
            if i in (4999, 19999):
                rss.append(rss_kib())
        c.tracer_provider.force_flush(30_000)
        print(json.dumps({"ok": results == [i + 1 for i in range(20000)], "slowest": slowest, "rss": rss,
                          "dropped": {r: n for (k, r), n in c.health.snapshot().items() if k == "dropped"}}))
        collector.shutdown()
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_BSP_MAX_QUEUE_SIZE="512",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="256",
    )
    assert out["ok"] is True
    assert out["slowest"] < 0.25  # no request ever waits for the dead endpoint
    spans_dropped = {reason: n for reason, n in out["dropped"].items() if reason.startswith("otlp_")}
    assert sum(spans_dropped.values()) == 20000  # every span is accounted for: not delivered, or no room
    assert out["dropped"]["otlp_queue_full"] > 0 and out["dropped"]["otlp_spans"] > 0
    growth_mib = (out["rss"][1] - out["rss"][0]) / 1024
    assert growth_mib < 16  # 15,000 more spans, the queue stays at 512


def test_a_gpu_lost_while_the_background_sampler_runs_leaves_the_other_gpus_sampled() -> None:
    nvml = lab.simulated_nvml([{"host": "node-a", "gpus": 3, "model": "L4"}])
    provider = TracerProvider()
    collector = Collector(nvml, tracer_provider=provider, sample_hz=50, cuda_visible_devices=None)
    collector.start()
    try:
        sampler = collector.sampler
        indexes = [d.index for d in sampler.devices]
        assert indexes == [0, 1, 2]
        wait_for(lambda: all(sampler.latest(i) is not None for i in indexes), timeout_s=10, what="every GPU sampled")
        nvml.devices[1].lost_at_ns = time.time_ns()
        wait_for(lambda: sampler.is_lost(1), timeout_s=10, what="GPU 1 seen lost")
        seen = {i: sampler.latest(i).ts_ns for i in indexes}
        time.sleep(0.3)
        after = {i: sampler.latest(i).ts_ns for i in indexes}
    finally:
        collector.shutdown()
        provider.shutdown()
    assert after[0] > seen[0] and after[2] > seen[2]  # still sampled, at 50 Hz
    assert after[1] == seen[1]  # the lost GPU is no longer asked
    assert [(e.gpu_index, e.kind) for e in sampler.events if e.kind == "gpu_lost"] == [(1, "gpu_lost")]


def test_the_stack_alerts_when_gpu_rca_is_down_or_refusing_spans_and_tells_people_not_gpu_rca() -> None:
    import yaml

    from gpu_rca.schemas import metrics as m
    from tests.support import require_binary

    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load((REPO / "deploy/prometheus/rules/gpu-alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert 'up{job="gpu-rca"} == 0' in rules["GpuRcaDown"]["expr"]
    assert m.SERVE_SPANS_DROPPED in rules["GpuRcaDroppingSpans"]["expr"]  # the name /metrics serves
    assert m.SERVE_REQUESTS_REFUSED in rules["GpuRcaRefusingRequests"]["expr"]
    amtool = require_binary("amtool")  # promtool's tests of both rules run in test_deploy_prometheus
    for alert in ("GpuRcaDown", "GpuRcaDroppingSpans", "GpuRcaRefusingRequests"):
        routed = subprocess.run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={REPO / 'deploy/alertmanager/alertmanager.yml'}",
                f"alertname={alert}",
                "severity=warning",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert routed.stdout.strip() == "chat", routed.stderr  # a struggling gpu-rca is not sent its own alert
