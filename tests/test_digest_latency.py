"""A latency burst triggers a digest like a failure burst does: a real `serve` receives a lab incident's spans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from gpu_rca.correlate.digest.burst import BurstDetector
from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from gpu_rca.lab.engine import LabRun, run_scenario
from gpu_rca.lab.outputs import write_run
from gpu_rca.lab.scenario import load_scenario
from tests.support.waiting import wait_for

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
MINUTE_NS = 60 * 10**9
BATCH = 256


def _lab(name: str) -> LabRun:
    return run_scenario(load_scenario(SCENARIOS / f"{name}.yaml"), sample_hz=1.0)


def _post_spans(url: str, spans: list[Any]) -> None:
    """Post the spans as OTLP/HTTP protobuf requests, a batch at a time, as an exporter would."""
    for i in range(0, len(spans), BATCH):
        answer = httpx.post(
            f"{url}/v1/traces",
            content=encode_spans(spans[i : i + BATCH]).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text


def _burst_digests(url: str) -> list[dict[str, Any]]:
    listing = httpx.get(f"{url}/digests", headers={"Accept": "application/json"}, timeout=10).json()["digests"]
    return [d for d in listing if d["trigger"] == "burst"]


def test_a_latency_only_incident_triggers_a_burst_digest(tmp_path: Path) -> None:
    run = _lab("latency-thermal-fan-l4")
    assert not run.failures()  # the clients wait: nothing errors, requests only get slower
    start_ns = min(s.start_time for s in run.spans)
    # The spans up to 20 min in: the fan failed at 12 min, so the data's newest 5 minutes are in the incident.
    spans = sorted((s for s in run.spans if s.end_time < start_ns + 20 * MINUTE_NS), key=lambda s: s.end_time)
    with ServeProcess(tmp_path / "live.duckdb") as serve:
        _post_spans(serve.url, spans)
        found: list[dict[str, Any]] = []
        wait_for(
            lambda: found.extend(_burst_digests(serve.url)) or found,
            timeout_s=120,
            interval_s=1.0,
            what="a burst digest for the latency incident",
        )
        document = httpx.get(f"{serve.url}/digests/{found[0]['id']}.json", timeout=10).json()
    fan_gpu = run.truth["drivers"]["gpu.uuid"]
    trigger = document["trigger"]
    assert trigger["gpus"][0] == fan_gpu
    assert "far slower than comparable requests (latency incident)" in trigger["detail"]
    assert "errored" not in trigger["detail"]
    assert document["spans"]["slow"] > 0
    assert document["causes"][0]["cause"] == "thermal_throttling"
    assert document["causes"][0]["gpus"] == [fan_gpu]


def test_ordinary_tail_latency_is_no_burst_and_the_incident_is(tmp_path: Path) -> None:
    counts: dict[str, tuple[int, int, tuple[str, ...]] | None] = {}
    for name in ("quiet-night", "latency-thermal-fan-l4"):
        run = _lab(name)
        start_ns = min(s.start_time for s in run.spans)
        write_run(run, tmp_path / name)
        with Store(tmp_path / f"{name}.duckdb") as store:
            ingest_paths(store, [tmp_path / name], progress=False)
            # The data's newest 5 minutes, seen at 20 min in: inside the fan failure of the latency scenario.
            store.connection.execute("DELETE FROM spans WHERE end_ns >= ?", [start_ns + 20 * MINUTE_NS])
            burst = BurstDetector().check(store.connection)
            counts[name] = None if burst is None else (burst.failed, burst.slow, burst.gpus)
    assert counts["quiet-night"] is None
    failed, slow, gpus = counts["latency-thermal-fan-l4"]
    assert failed == slow >= 20 and gpus == (run.truth["drivers"]["gpu.uuid"],)
