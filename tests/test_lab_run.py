"""`gpu-rca lab run`: standard files that standard tools parse, stable bytes, truth only in truth.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gpu_rca.correlate.kernel_log.parse import parse_kernel_log
from gpu_rca.lab.device import gpu_uuid_for
from gpu_rca.lab.scenario import FAULT_KINDS
from gpu_rca.schemas.causes import CAUSE_IDS
from gpu_rca.schemas.otlp_json import message_from_json, message_to_dict

SCENARIO = """\
name: small-incident
seed: 3
start: 2026-03-02T10:00:00Z
duration: 4m
scrape_interval: 10s
fleet:
  - {host: node-a, gpus: 2, model: L4}
  - {host: node-b, gpus: 1, model: A100-40GB}
workload:
  rate: 3/s
  input_size: {512: 0.7, 1024: 0.3}
  model: {ddcolor_paper_tiny: 0.6, ddcolor_paper: 0.4}
  timeout: 20s
faults:
  - {kind: gpu_lost, gpu: node-a/1, start: 2m}
  - {kind: ecc_uncorrectable, gpu: node-b/0, start: 30s, end: 3m, severity: 0.9}
  - {kind: thermal, gpu: node-a/0, start: 10s, severity: 0.2}
truth: {cause: gpu_fallen_off_bus, drivers: {gpu.uuid: node-a/1}, also: [{cause: ecc_memory_errors, drivers: {gpu.uuid: node-b/0}}]}
"""


def _run(scenario: Path, out: Path, cwd: Path, hash_seed: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(
        [sys.executable, "-m", "gpu_rca", "lab", "run", str(scenario), "--out", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("lab")
    scenario = base / "small-incident.yaml"
    scenario.write_text(SCENARIO)
    done = _run(scenario, base / "out", base, "0")
    assert done.returncode == 0, done.stderr
    assert "inference spans" in done.stderr
    return base / "out"


def test_writes_contract_3_files(outputs):
    assert sorted(p.name for p in outputs.iterdir()) == sorted(
        ["traces.otlp.jsonl", "logs.otlp.jsonl", "metrics.prom.jsonl", "kernel.log", "truth.json"]
    )


def _span_ids(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(traceId, spanId) of every span in an OTLP/JSON trace export request."""
    return [(s["traceId"], s["spanId"]) for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def test_trace_lines_parse_as_export_requests_and_ids_round_trip(outputs):
    spans = 0
    for line in (outputs / "traces.otlp.jsonl").read_text().splitlines():
        request = message_from_json(line, ExportTraceServiceRequest)
        assert isinstance(request, ExportTraceServiceRequest)
        original = json.loads(line)
        again = message_to_dict(request)
        assert _span_ids(again) == _span_ids(original)
        for trace_id, span_id in _span_ids(original):
            assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and re.fullmatch(r"[0-9a-f]{16}", span_id)
        spans += len(_span_ids(original))
    assert spans > 300


def _span_attributes(outputs: Path) -> list[tuple[str, dict]]:
    result = []
    for line in (outputs / "traces.otlp.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            host = next(a["value"]["stringValue"] for a in rs["resource"]["attributes"] if a["key"] == "host.name")
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    # OTLP JSON leaves out empty fields: a child span without attributes has no key at all.
                    attrs = {a["key"]: next(iter(a["value"].values()), None) for a in span.get("attributes", ())}
                    result.append((host, {**attrs, "_span": span}))
    return result


def test_spans_carry_collector_stamps_and_the_mechanism_s_failures(outputs):
    every = _span_attributes(outputs)
    spans = [(host, attrs) for host, attrs in every if "gpu.telemetry.source" in attrs]
    inference_traces = {attrs["_span"]["traceId"] for _, attrs in spans}
    others = {attrs["_span"]["name"] for _, attrs in every if "gpu.telemetry.source" not in attrs}
    assert {"preprocess", "decode"} <= others  # a real service's traces carry child spans beside the inference span
    assert all(attrs["_span"]["traceId"] in inference_traces for _, attrs in every)
    lost = gpu_uuid_for(3, "node-a", 1)
    ecc = gpu_uuid_for(3, "node-b", 0)
    for _host, attrs in spans:
        assert attrs["gpu.telemetry.source"] == "simulated"
        assert "code.filepath" not in attrs
        assert attrs["ddcolor.input_size"] in ("512", "1024")
    lost_start = 1772445600 * 10**9 + 120 * 10**9
    after = [a for h, a in spans if a["gpu.uuid"] == lost and int(a["_span"]["startTimeUnixNano"]) > lost_start + 10**9]
    assert after and all(a.get("error.type") == "gpu_lost" for a in after)
    others = [
        a for h, a in spans if a["gpu.uuid"] not in (lost, ecc) and int(a["_span"]["startTimeUnixNano"]) > lost_start
    ]
    assert others and all("error.type" not in a for a in others)
    ecc_failed = [a for h, a in spans if a["gpu.uuid"] == ecc and a.get("error.type")]
    assert ecc_failed and {a["error.type"] for a in ecc_failed} == {"RuntimeError"}
    dbe = []
    for line in (outputs / "metrics.prom.jsonl").read_text().splitlines():
        for series in json.loads(line)["data"]["result"]:
            if series["metric"]["__name__"] == "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" and series["metric"]["UUID"] == ecc:
                dbe = [float(v) for _, v in series["values"]]
    assert dbe[0] == 0 and dbe[-1] > 0
    assert any(a.get("inference.queue_ms") is not None for _, a in spans)


def test_log_lines_parse_and_carry_the_spans_trace_ids(outputs):
    span_ids = {(a["_span"]["traceId"], a["_span"]["spanId"]) for _, a in _span_attributes(outputs)}
    records = 0
    for line in (outputs / "logs.otlp.jsonl").read_text().splitlines():
        request = message_from_json(line, ExportLogsServiceRequest)
        assert request.resource_logs
        for rl in json.loads(line)["resourceLogs"]:
            for sl in rl["scopeLogs"]:
                for record in sl["logRecords"]:
                    records += 1
                    if "traceId" in record:
                        assert (record["traceId"], record["spanId"]) in span_ids
                    assert record["observedTimeUnixNano"] == record["timeUnixNano"]
    assert records > 300


def test_metrics_have_the_prometheus_query_range_shape(outputs):
    names = set()
    for line in (outputs / "metrics.prom.jsonl").read_text().splitlines():
        doc = json.loads(line)
        assert doc["status"] == "success" and doc["data"]["resultType"] == "matrix"
        for series in doc["data"]["result"]:
            metric = series["metric"]
            names.add(metric["__name__"])
            assert {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"} <= set(metric)
            for ts, value in series["values"]:
                assert isinstance(ts, float) and isinstance(value, str)
                float(value)  # "NaN" included
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_XID_ERRORS"} <= names


def test_kernel_log_is_journalctl_short_iso_that_the_correlator_parses(outputs):
    text = (outputs / "kernel.log").read_text()
    lines = text.splitlines()
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000 node-[ab] kernel: NVRM: ", line) for line in lines)
    assert any(" NVRM: GPU at PCI:0000:" in line for line in lines)
    result = parse_kernel_log(text.splitlines())
    assert sum(result.skipped.values()) == 0
    by_xid = {(e.xid, e.gpu_uuid) for e in result.events}
    assert (79, gpu_uuid_for(3, "node-a", 1)) in by_xid
    assert (48, gpu_uuid_for(3, "node-b", 0)) in by_xid


def test_truth_names_real_uuids(outputs):
    truth = json.loads((outputs / "truth.json").read_text())
    assert truth == {
        "cause": "gpu_fallen_off_bus",
        "drivers": {"gpu.uuid": gpu_uuid_for(3, "node-a", 1)},
        "also": [{"cause": "ecc_memory_errors", "drivers": {"gpu.uuid": gpu_uuid_for(3, "node-b", 0)}}],
    }


def test_no_output_but_truth_names_fault_kinds_causes_or_severities(outputs):
    # Contract names that happen to equal a fault kind are legitimate: a throttle reason and an error.type.
    contract_words = {"hw_slowdown", "gpu_lost", "xid"}
    words = (set(FAULT_KINDS) | set(CAUSE_IDS) | {"severity", "inject", "truth"}) - contract_words
    for path in outputs.iterdir():
        if path.name == "truth.json":
            continue
        text = path.read_text().lower()
        for word in words:
            assert not re.search(rf"\b{re.escape(word)}\b", text), f"{path.name} names {word!r}"


def test_same_seed_same_bytes_from_another_directory_and_hash_seed(outputs, tmp_path):
    scenario = tmp_path / "small-incident.yaml"
    scenario.write_text(SCENARIO)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _run(scenario, tmp_path / "again", elsewhere, "12345")
    assert done.returncode == 0, done.stderr
    for path in outputs.iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name


def test_run_scenario_reports_progress_every_simulated_minute():
    from gpu_rca.lab.engine import run_scenario
    from gpu_rca.lab.scenario import parse_scenario

    scenario = parse_scenario(
        {
            "name": "tiny",
            "duration": "3m",
            "fleet": [{"host": "h", "gpus": 1, "model": "T4"}],
            "workload": {"rate": "1/s"},
        }
    )
    calls: list[tuple[int, int]] = []
    run_scenario(scenario, progress=lambda done, total: calls.append((done, total)))
    assert [done for done, _ in calls] == [60 * 10**9, 120 * 10**9, 180 * 10**9]
    assert {total for _, total in calls} == {180 * 10**9}
