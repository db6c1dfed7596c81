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

from gpu_rca.bench import baselines, scoring
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
