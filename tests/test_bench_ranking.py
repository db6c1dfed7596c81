"""`gpu-rca bench ranking`: RCAEval's measures, the two baselines, and the verb end to end on a small suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from gpu_rca.bench import baselines, perturb, scoring
from gpu_rca.correlate.ranking.run import analyze_connection
from gpu_rca.schemas.timefmt import parse_time_ns
from tests.support.ranking import incident_stores


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    return incident_stores(tmp_path_factory)


def case(truth: str | None, ranked: list[str], drivers: dict | None = None, entries: list | None = None):
    return scoring.Case("c", {"cause": truth, "drivers": drivers or {}, "also": []}, ranked, entries or [])


def test_ac_and_avg_follow_rcaeval() -> None:
    cases = [case("a", ["a", "b"]), case("a", ["b", "a"]), case("a", ["b", "c", "d", "e", "a"]), case(None, [])]
    assert scoring.ac_at(cases, 1) == 0.5  # the first and the quiet one
    assert scoring.ac_at(cases, 2) == 0.75
    assert scoring.ac_at(cases, 5) == 1.0
    # Avg@5 = (AC@1 + … + AC@5) / 5
    assert scoring.avg_at(cases) == pytest.approx((0.5 + 0.75 + 0.75 + 0.75 + 1.0) / 5)
    assert scoring.ac_at([case(None, ["a"])], 3) == 0.0  # a quiet window must rank nothing


def test_driver_accuracy_needs_every_truth_driver_on_the_truth_cause() -> None:
    entry = {
        "cause": "a",
        "confidence": "high",
        "drivers": [{"attribute": "ddcolor.input_size", "value": 1280}, {"attribute": "host.name", "value": "n"}],
    }
    good = case("a", ["a"], {"ddcolor.input_size": 1280}, [entry])
    partial = case("a", ["a"], {"ddcolor.input_size": 1280, "gpu.uuid": "GPU-x"}, [entry])
    elsewhere = case("b", ["a"], {"ddcolor.input_size": 1280}, [entry])
    no_drivers = case("a", ["a"], {}, [entry])
    assert scoring.driver_accuracy([good, partial, elsewhere, no_drivers]) == pytest.approx(1 / 3)
    assert scoring.by_confidence([good, elsewhere]) == {"high": {"cases": 2, "right": 1, "accuracy": 0.5}}


def _window(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    result = analyze_connection(con)
    first = con.execute("SELECT min(end_ns) FROM rk_spans WHERE failed").fetchone()[0]
    return parse_time_ns(result["window"]["start"]), parse_time_ns(result["window"]["end"]), first


def test_baselines_name_what_their_own_signal_shows(incidents, tmp_path: Path) -> None:
    thermal_db, _ = incidents["thermal"]
    con = duckdb.connect(str(thermal_db), read_only=True)
    start, end, first = _window(con)
    assert baselines.baro_ranking(con, start, end, first)[0] == "thermal_throttling"
    con.close()
    lost_db, _ = incidents["lost-and-bug"]
    con = duckdb.connect(str(lost_db), read_only=True)
    _window(con)
    ranked = baselines.contrast_ranking(con)
    con.close()
    # The lost GPU's requests fail with "CUDA error: unspecified launch failure". The collector stamps them
    # `gpu_lost` because NVML said so; without GPU telemetry that text reads as a kernel fault.
    assert ranked[:2] == ["cuda_kernel_fault", "application_error"]
    told = tmp_path / "told.duckdb"
    told.write_bytes(lost_db.read_bytes())
    con = duckdb.connect(str(told))
    con.execute("UPDATE spans SET status_message = 'NVMLError_GpuIsLost: GPU is lost' WHERE error_type = 'gpu_lost'")
    _window(con)
    ranked = baselines.contrast_ranking(con)  # an application that saw the GPU lost itself says so
    con.close()
    assert ranked[:2] == ["gpu_fallen_off_bus", "application_error"]
    assert set(baselines.METRIC_CAUSES.values()) <= set(baselines.METRIC_VISIBLE)


def test_bench_ranking_runs_a_suite_end_to_end(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    fleet = [{"host": "node-a", "gpus": 2, "model": "L4"}]
    scenarios = {
        "tiny-app-bug": {
            "duration": "8m",
            "fleet": fleet,
            "workload": {"rate": "2/s", "model": {"ddcolor_paper_tiny": 0.6, "ddcolor_artistic": 0.4}},
            "faults": [{"kind": "app_bug", "model": "ddcolor_artistic", "start": "3m", "severity": 0.5}],
            "truth": {"cause": "application_error", "drivers": {"ddcolor.model": "ddcolor_artistic"}},
        },
        "tiny-quiet": {"duration": "4m", "fleet": fleet, "workload": {"rate": "1/s"}},
    }
    for name, body in scenarios.items():
        (suite / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **body}))
    run = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "bench", "ranking", "--scenarios", str(suite), "--json", "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    public = document["suites"]["public"]
    assert public["ours"]["cases"] == 2
    assert public["ours"]["ac1"] == 1.0 and public["ours"]["ac3"] == 1.0 and public["ours"]["avg5"] == 1.0
    assert public["ours"]["driver_accuracy"] == 1.0
    assert public["summaries_with_numbers_outside_evidence"] == []
    assert {c["name"] for c in public["cases"]} == set(scenarios)
    assert "tiny-app-bug: truth application_error, ranked first application_error" in run.stderr
    assert document["baseline_tables"]["baro_metrics_only"]["DCGM_FI_DEV_GPU_TEMP up"] == "thermal_throttling"


def test_bench_ranking_rejects_an_empty_folder(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "bench", "ranking", "--scenarios", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "no scenario YAML files" in run.stderr


# --- the rows by class, the split, and the perturbations of the robustness matrix ---------------------------

_TINY = {
    "name": "tiny-kernel-fault",
    "seed": 5,
    "duration": "5m",
    "fleet": [{"host": "node-a", "gpus": 2, "model": "L4"}, {"host": "node-b", "gpus": 1, "model": "L4"}],
    "workload": {"rate": "2/s"},
    "faults": [{"kind": "xid", "gpu": "node-a/0", "code": 13, "start": "2m", "end": "4m", "severity": 0.5}],
    "truth": {"cause": "cuda_kernel_fault", "drivers": {"gpu.uuid": "node-a/0"}},
}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny lab run's files (three GPUs on two hosts, kernel faults on one), as a file set."""
    from gpu_rca.lab.engine import run_scenario
    from gpu_rca.lab.outputs import write_run
    from gpu_rca.lab.scenario import parse_scenario

    out = tmp_path_factory.mktemp("tiny-files")
    write_run(run_scenario(parse_scenario(_TINY, "tiny")), out)
    return {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()}


def _spans(files: dict[str, str]) -> list[dict[str, Any]]:
    return [
        span
        for line in files["traces.otlp.jsonl"].splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


def _series(files: dict[str, str]) -> list[dict[str, Any]]:
    return [s for line in files["metrics.prom.jsonl"].splitlines() for s in json.loads(line)["data"]["result"]]


def _ingested(files: dict[str, str], tmp_path: Path, units: tuple[str, ...] = ()) -> duckdb.DuckDBPyConnection:
    from gpu_rca.correlate.ingest import ingest_paths
    from gpu_rca.correlate.store import Store
    from gpu_rca.correlate.store.units import Units

    folder = tmp_path / "files"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    with Store(tmp_path / "s.duckdb", units=Units.parse(units)) as store:
        ingest_paths(store, [folder], progress=False)
    return duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)


def test_telemetry_none_leaves_gpu_identity_alone(tiny_files: dict[str, str], tmp_path: Path) -> None:
    out = perturb.perturbed(tiny_files, "telemetry_none", "t")
    inference = [s for s in _spans(out) if "gpu.telemetry.source" in _attrs(s)]
    assert len(inference) == sum("gpu.telemetry.source" in _attrs(s) for s in _spans(tiny_files)) > 100
    for span in inference:
        attrs = _attrs(span)
        assert attrs["gpu.telemetry.source"] == "none"
        assert {k for k in attrs if k.startswith("gpu.")} <= perturb.IDENTITY | {"gpu.telemetry.source"}
        assert "gpu.uuid" in attrs and "gpu.name" in attrs
        assert not [e for e in span.get("events", []) if e["name"].startswith("gpu.")]
    assert any(_attrs(s).get("error.type") == "cuda_illegal_address" for s in inference)  # workload attrs kept
    con = _ingested(out, tmp_path)
    uuids, temps = con.execute(
        "SELECT count(gpu_uuid), count(gpu_temperature_max) FROM spans WHERE is_inference"
    ).fetchone()
    con.close()
    assert uuids == len(inference) and temps == 0


def test_no_kernel_log_and_no_prometheus_remove_only_their_file(tiny_files: dict[str, str]) -> None:
    assert "kernel.log" in tiny_files and "NVRM: Xid" in tiny_files["kernel.log"]
    for name, gone in (("no_kernel_log", "kernel.log"), ("no_prometheus", "metrics.prom.jsonl")):
        out = perturb.perturbed(tiny_files, name, "t")
        assert set(out) == set(tiny_files) - {gone}
        assert all(out[f] == tiny_files[f] for f in out)


def test_metrics_skewed_moves_every_sample_by_one_shift_of_60_to_90_s(tiny_files: dict[str, str]) -> None:
    out = perturb.perturbed(tiny_files, "metrics_skewed", "t")
    shifts = {
        round(float(a[0]) - float(b[0]), 6)
        for s_out, s_in in zip(_series(out), _series(tiny_files))
        for a, b in zip(s_out["values"], s_in["values"])
        if a[1] == b[1]
    }
    assert len(shifts) == 1 and 60 <= abs(shifts.pop()) <= 90
    assert out["traces.otlp.jsonl"] == tiny_files["traces.otlp.jsonl"]
    assert perturb.perturbed(tiny_files, "metrics_skewed", "t") == out  # seeded


def test_tail_sampling_keeps_every_error_trace_whole_and_a_tenth_of_the_rest(tiny_files: dict[str, str]) -> None:
    out = perturb.perturbed(tiny_files, "tail_sampled", "t")
    before, after = _spans(tiny_files), _spans(out)
    errored = {s["traceId"] for s in before if s.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR")}
    assert errored
    kept = {s["traceId"] for s in after}
    assert errored <= kept
    by_trace = {t: sum(s["traceId"] == t for s in before) for t in kept}
    assert all(by_trace[t] == sum(s["traceId"] == t for s in after) for t in kept)  # whole traces
    others = {s["traceId"] for s in before} - errored
    share = len(kept - errored) / len(others)
    assert len(others) > 300 and 0.06 < share < 0.14, share
    assert out["logs.otlp.jsonl"] == tiny_files["logs.otlp.jsonl"]
    assert perturb.perturbed(tiny_files, "tail_sampled", "t") == out


def test_gpu_operator_labels_are_stored_on_the_right_hosts(tiny_files: dict[str, str], tmp_path: Path) -> None:
    out = perturb.perturbed(tiny_files, "gpu_operator_labels", "t")
    hosts_before = {s["metric"]["UUID"]: s["metric"]["Hostname"] for s in _series(tiny_files)}
    for series in _series(out):
        labels = series["metric"]
        assert "Hostname" not in labels and labels["hostname"] == hosts_before[labels["UUID"]]
        assert labels["namespace"] == "inference" and labels["container"] == "ddcolor" and labels["pod"]
        assert labels["job"] == "nvidia-dcgm-exporter" and not labels["instance"].startswith("node-")
    con = _ingested(out, tmp_path)
    stored = dict(con.execute("SELECT DISTINCT gpu_uuid, host FROM metric_samples").fetchall())
    con.close()
    assert stored == hosts_before


@pytest.mark.parametrize("name", ["unstamped", "unstamped_hosts"])
def test_unstamped_files_hold_http_server_spans_joined_to_their_gpus(
    tiny_files: dict[str, str], tmp_path: Path, name: str
) -> None:
    out = perturb.perturbed(tiny_files, name, "t")
    spans = _spans(out)
    assert not [k for s in spans for k in _attrs(s) if k.startswith("gpu.") or k == "inference.queue_ms"]
    servers = [s for s in spans if s["name"] == "POST /colorize"]
    inference = [s for s in _spans(tiny_files) if "gpu.telemetry.source" in _attrs(s)]
    assert len(servers) == len(inference) and all(s["kind"] == 2 for s in servers)
    failed = [s for s in servers if s["status"].get("code") == 2]
    assert failed and all(
        int(_attrs(s)["http.response.status_code"]) == 500 and _attrs(s)["error.type"] for s in failed
    )
    assert all(any(e["name"] == "exception" for e in s["events"]) for s in failed)
    truth_gpu = {s["traceId"]: _attrs(s)["gpu.uuid"] for s in inference}
    con = _ingested(out, tmp_path, perturb.UNITS[name])
    joins = dict(
        con.execute(
            "SELECT trace_id, gpu_uuid FROM spans WHERE is_inference AND gpu_join = ?",
            ["pod" if name == "unstamped" else "host_gpu"],
        ).fetchall()
    )
    ambiguous = con.execute("SELECT DISTINCT host FROM spans WHERE gpu_join = 'host'").fetchall()
    con.close()
    assert joins and all(truth_gpu[trace] == gpu for trace, gpu in joins.items())
    # On Kubernetes every request finds its GPU; without it only node-b (one GPU) does, node-a is ambiguous.
    node_b = {s["metric"]["UUID"] for s in _series(tiny_files) if s["metric"]["Hostname"] == "node-b"}
    on_node_b = sum(1 for s in inference if _attrs(s)["gpu.uuid"] in node_b)
    assert len(joins) == (len(inference) if name == "unstamped" else on_node_b)
    assert ambiguous == ([] if name == "unstamped" else [("node-a",)])


def test_generated_splits_are_disjoint_and_named_by_class() -> None:
    from gpu_rca.bench import ranking as bench_ranking
    from gpu_rca.lab.generate import TEST_FIRST

    dev = bench_ranking.generated_scenarios(3)
    test = bench_ranking.generated_scenarios(3, split="test")
    assert [s["name"] for s in dev] == [f"gen-{bench_ranking.GENERATED_SEED}-{i:04d}-{k}" for i, k in
                                        enumerate(("error", "quiet", "latency"))]  # fmt: skip
    assert test[0]["name"] == f"gen-{bench_ranking.GENERATED_SEED}-{TEST_FIRST}-error"
    assert bench_ranking.case_class("gen-1-0004-moderate", {"cause": "hw_slowdown"}, 0) == "moderate"
    assert bench_ranking.case_class("x", {"cause": "hw_slowdown"}, 0) == "latency"
    assert bench_ranking.case_class("x", {"cause": "hw_slowdown"}, 3) == "error"
    assert bench_ranking.case_class("x", {"cause": None}, 0) == "quiet"


def test_high_precision_false_alarms_and_the_robustness_row() -> None:
    high = {"cause": "a", "confidence": "high", "drivers": []}
    cases = [case("a", ["a"], entries=[high]), case("b", ["a"], entries=[high]), case(None, ["a"]), case(None, [])]
    assert scoring.high_precision(cases) == 0.5
    assert scoring.false_alarms(cases) == 1
    row = scoring.robustness_row(cases, ["error", "error", "quiet", "quiet"])
    assert row["ac1"] == 0.5 and row["ac1_by_class"] == {"error": 0.5, "quiet": 0.5}
    assert [m["name"] for m in row["misses"]] == ["c", "c"] and row["false_alarms"] == 1


def test_bench_ranking_reports_a_latency_incident_as_its_own_row_with_baselines_fed_its_slow_requests(
    tmp_path: Path,
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    latency = {
        "name": "tiny-latency-slowdown",
        "seed": 8,
        "duration": "12m",
        "fleet": [{"host": "node-a", "gpus": 2, "model": "L4"}],
        "workload": {"rate": "2/s", "timeout": "900s"},
        "faults": [{"kind": "hw_slowdown", "gpu": "node-a/1", "start": "6m", "end": "11m", "severity": 0.7}],
        "truth": {"cause": "hw_slowdown", "drivers": {"gpu.uuid": "node-a/1"}},
    }
    (suite / "tiny-latency-slowdown.yaml").write_text(yaml.safe_dump(latency))
    (suite / "tiny-kernel-fault.yaml").write_text(yaml.safe_dump(_TINY))
    run = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "bench", "ranking", "--scenarios", str(suite), "--json", "--robustness"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    public = json.loads(run.stdout)["suites"]["public"]
    rows = public["by_class"]
    assert set(rows) == {"error", "latency"} and rows["latency"]["ours"]["cases"] == 1
    (slow,) = [c for c in public["cases"] if c["class"] == "latency"]
    assert slow["slow_failures_fed_to_baselines"] > 0 and slow["baro"] and slow["contrast"]
    assert set(public["robustness"]) == set(perturb.PERTURBATIONS)
    for row in public["robustness"].values():
        assert row["cases"] == 2 and set(row["ac1_by_class"]) == {"error", "latency"}
    assert set(slow["robustness"]) == set(perturb.PERTURBATIONS)
