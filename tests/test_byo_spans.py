"""Bring your own spans (docs/byo-spans.md): a service traced only by the OTel SDK's own HTTP server spans, no
gpu-rca collector, GPUs scraped by dcgm-exporter. Ranked through the CLI, with the GPU found by the pod join,
by a one-GPU host, or not at all (an ambiguous host says so)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from gpu_rca.schemas.otlp_json import message_to_json

START_S = 1_767_261_600  # 2026-01-01T10:00:00Z
MINUTES = 20
HOT_FROM_S = START_S + 10 * 60
UNIT = "service=colorizer,name=POST /colorize"
#: Two GPUs; the second one overheats from minute 10 on.
GPUS = (
    {
        "uuid": "GPU-11111111-1111-4111-8111-111111111111",
        "index": "0",
        "pci": "00000000:3B:00.0",
        "pod": "colorizer-7d9f-a",
    },
    {
        "uuid": "GPU-22222222-2222-4222-8222-222222222222",
        "index": "1",
        "pci": "00000000:86:00.0",
        "pod": "colorizer-7d9f-b",
    },
)
HOT = GPUS[1]["uuid"]


def _series(gpu: dict[str, str], host: str, pods: bool) -> list[dict[str, Any]]:
    """dcgm-exporter's series of one GPU as a Prometheus query_range answer holds them."""
    labels = {
        "gpu": gpu["index"],
        "UUID": gpu["uuid"],
        "pci_bus_id": gpu["pci"],
        "device": f"nvidia{gpu['index']}",
        "modelName": "NVIDIA L4",
        "Hostname": host,
    }
    if pods:
        labels |= {"pod": gpu["pod"], "namespace": "inference", "container": "colorizer"}
    hot_gpu = gpu["uuid"] == HOT
    values: dict[str, list[list[Any]]] = {}
    for ts in range(START_S, START_S + MINUTES * 60 + 1, 15):
        hot = hot_gpu and ts >= HOT_FROM_S
        point = {
            "DCGM_FI_DEV_GPU_TEMP": 94 if hot else 55,
            "DCGM_FI_DEV_SLOWDOWN_TEMP": 90,
            "DCGM_FI_DEV_SM_CLOCK": 600 if hot else 2040,
            "DCGM_FI_DEV_MAX_SM_CLOCK": 2040,
            "DCGM_FI_DEV_GPU_UTIL": 100 if hot else 45,
            "DCGM_FI_DEV_POWER_USAGE": 60.0 if hot else 45.0,
            "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": 72.0,
            "DCGM_FI_DEV_FB_USED": 6000,
            "DCGM_FI_DEV_FB_FREE": 17000,
            "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": 32 | 64 if hot else 0,
        }
        for name, value in point.items():
            values.setdefault(name, []).append([float(ts), str(value)])
    return [{"metric": {"__name__": name, **labels}, "values": v} for name, v in values.items()]


def _spans(layout: str) -> list[Any]:
    """Real SDK server spans, as an HTTP server instrumentation ends them; one TracerProvider per process."""
    exporter = InMemorySpanExporter()
    rng = random.Random(21)
    for gpu in GPUS:
        resource: dict[str, Any] = {"service.name": "colorizer", "service.version": "2.0.1"}
        if layout == "pods":
            resource |= {
                "host.name": "node-a",
                "k8s.pod.name": gpu["pod"],
                "k8s.namespace.name": "inference",
                "k8s.node.name": "node-a",
            }
        else:
            resource["host.name"] = "node-a" if layout == "ambiguous" else f"node-{gpu['index']}"
        provider = TracerProvider(resource=Resource.create(resource))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("opentelemetry.instrumentation.asgi")
        t = float(START_S)
        while t < START_S + MINUTES * 60 - 30:
            t += rng.expovariate(1.0)
            hot = gpu["uuid"] == HOT and t >= HOT_FROM_S
            fails = hot and rng.random() < 0.7
            duration = 20.0 if fails else rng.uniform(0.3, 0.6) * (3 if hot else 1)
            span = tracer.start_span(
                "POST /colorize",
                kind=SpanKind.SERVER,
                start_time=int(t * 1e9),
                attributes={
                    "http.request.method": "POST",
                    "http.route": "/colorize",
                    "url.path": "/colorize",
                    "url.scheme": "http",
                    "ddcolor.input_size": 512,
                },
            )
            if fails:
                span.record_exception(
                    TimeoutError("inference did not finish in 20 s"), timestamp=int((t + duration) * 1e9)
                )
                span.set_attribute("error.type", "TimeoutError")
                span.set_attribute("http.response.status_code", 500)
                span.set_status(Status(StatusCode.ERROR, "TimeoutError: inference did not finish in 20 s"))
            else:
                span.set_attribute("http.response.status_code", 200)
            span.end(end_time=int((t + duration) * 1e9))
        provider.force_flush()  # not shutdown(): it would shut the shared exporter too
    return list(exporter.get_finished_spans())


def _write(folder: Path, layout: str) -> None:
    folder.mkdir()
    spans = _spans(layout)
    assert not any(k.startswith("gpu.") for s in spans for k in (s.attributes or {}))
    (folder / "traces.otlp.jsonl").write_text(
        "".join(message_to_json(encode_spans(spans[i : i + 500])) + "\n" for i in range(0, len(spans), 500)),
        encoding="utf-8",
    )
    result = []
    for gpu in GPUS:
        host = "node-a" if layout in ("pods", "ambiguous") else f"node-{gpu['index']}"
        result += _series(gpu, host, pods=layout == "pods")
    answer = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    (folder / "metrics.prom.jsonl").write_text(json.dumps(answer) + "\n", encoding="utf-8")


def _gpu_rca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=300)


def _analyze(tmp_path: Path, layout: str) -> dict[str, Any]:
    folder = tmp_path / layout
    _write(folder, layout)
    db = str(tmp_path / f"{layout}.duckdb")
    ingested = _gpu_rca("ingest", "--db", db, "--unit", UNIT, str(folder))
    assert ingested.returncode == 0, ingested.stderr
    assert "no inference span" not in ingested.stderr
    analyzed = _gpu_rca("analyze", "--db", db, "--json")
    assert analyzed.returncode == 0, analyzed.stderr
    result: dict[str, Any] = json.loads(analyzed.stdout)
    return result


@pytest.mark.parametrize(
    ("layout", "join_words"),
    [("pods", "through their Kubernetes pod"), ("hosts", "as the only GPU of their host")],
)
def test_a_thermal_incident_on_unstamped_http_spans_is_found_on_its_gpu(
    tmp_path: Path, layout: str, join_words: str
) -> None:
    result = _analyze(tmp_path, layout)
    assert result["spans"]["failed"] > 100
    top = result["causes"][0]
    assert top["cause"] == "thermal_throttling", [c["cause"] for c in result["causes"]]
    assert top["gpus"] == [HOT]
    assert any(join_words in w for w in result["warnings"]), result["warnings"]


def test_spans_of_an_ambiguous_host_say_that_the_gpus_could_not_be_told_apart(tmp_path: Path) -> None:
    result = _analyze(tmp_path, "ambiguous")
    assert result["spans"]["failed"] > 100
    told = [w for w in result["warnings"] if "could not be told apart by GPU" in w]
    assert told and "on 1 host(s)" in told[0], result["warnings"]
    assert all(HOT not in c["gpus"] for c in result["causes"] if c["cause"] == "thermal_throttling")


def test_a_bad_unit_rule_is_a_usage_error(tmp_path: Path) -> None:
    done = _gpu_rca("ingest", "--db", str(tmp_path / "x.duckdb"), "--unit", "name=POST /x", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("Error: --unit 'name=POST /x': name the service")


def test_serve_selects_unstamped_spans_by_its_unit_rule(tmp_path: Path) -> None:
    """The same rule on `serve`: spans posted over OTLP/HTTP go through its ingest log and are ranked."""
    import httpx

    from gpu_rca.correlate.server.process import ServeProcess

    folder = tmp_path / "pods"
    _write(folder, "pods")
    db = tmp_path / "serve.duckdb"
    (folder / "traces.otlp.jsonl").unlink()  # the metrics come from a file, the spans over the wire
    assert _gpu_rca("ingest", "--db", str(db), str(folder)).returncode == 0
    spans = _spans("pods")
    with ServeProcess(db, args=["--unit", UNIT]) as serve:
        for i in range(0, len(spans), 500):
            answer = httpx.post(
                f"{serve.url}/v1/traces",
                content=encode_spans(spans[i : i + 500]).SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
        result = httpx.get(f"{serve.url}/api/analyze", timeout=120).json()
    assert result["spans"]["failed"] > 100
    assert result["causes"][0]["cause"] == "thermal_throttling"
    assert result["causes"][0]["gpus"] == [HOT]
