"""Lab incidents for ranking tests: simulate, write the standard files, ingest them (built once per
session), and the checks every analyze document must pass."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence
from gpu_rca.correlate.store import Store
from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.outputs import write_run
from gpu_rca.lab.scenario import parse_scenario
from gpu_rca.schemas.causes import CAUSE_IDS

FLEET = [{"host": "node-a", "gpus": 2, "model": "L4"}, {"host": "node-b", "gpus": 1, "model": "L4"}]

SCENARIOS: dict[str, dict[str, Any]] = {
    "thermal": {
        "seed": 3,
        "duration": "14m",
        "fleet": FLEET,
        "workload": {"rate": "2/s", "input_size": {512: 0.8, 1024: 0.2}},
        "faults": [
            {"kind": "thermal", "gpu": "node-b/0", "start": "7m", "end": "13m", "severity": 0.9},
            {"kind": "thermal", "gpu": "node-a/0", "start": "2m", "end": "4m", "severity": 0.3},  # harmless
        ],
        "truth": {"cause": "thermal_throttling", "drivers": {"gpu.uuid": "node-b/0"}},
    },
    "lost-and-bug": {
        "seed": 27,
        "duration": "14m",
        "fleet": [{"host": "node-a", "gpus": 2, "model": "L4"}, {"host": "node-b", "gpus": 2, "model": "L4"}],
        "workload": {"rate": "2/s", "model": {"ddcolor_paper_tiny": 0.7, "ddcolor_artistic": 0.3}},
        "faults": [
            {"kind": "gpu_lost", "gpu": "node-b/1", "start": "6m"},
            {"kind": "app_bug", "model": "ddcolor_artistic", "start": "8m", "end": "13m", "severity": 0.3},
        ],
        "truth": {
            "cause": "gpu_fallen_off_bus",
            "drivers": {"gpu.uuid": "node-b/1"},
            "also": [{"cause": "application_error", "drivers": {"ddcolor.model": "ddcolor_artistic"}}],
        },
    },
    "quiet": {
        "seed": 26,
        "duration": "6m",
        "fleet": FLEET[:1],
        "workload": {"rate": "1/s"},
        "faults": [{"kind": "thermal", "gpu": "node-a/0", "start": "2m", "end": "4m", "severity": 0.3}],
    },
}


def build_incident(root: Path, name: str, spec: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Run a scenario through the lab, write its files, ingest them; return (store path, truth)."""
    scenario = parse_scenario({"name": name, **spec})
    files = root / name
    write_run(run_scenario(scenario, sample_hz=1.0), files)
    db = root / f"{name}.duckdb"
    with Store(db) as store:
        ingest_paths(store, [files], progress=False)
    return db, json.loads((files / "truth.json").read_text())


def incident_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every scenario above as a store, built once per test session and shared read-only by the test modules."""
    root = tmp_path_factory.getbasetemp() / "ranking-incidents"
    root.mkdir(exist_ok=True)
    built = {}
    for name, spec in SCENARIOS.items():
        db = root / f"{name}.duckdb"
        built[name] = (
            (db, json.loads((root / name / "truth.json").read_text()))
            if db.exists()
            else build_incident(root, name, spec)
        )
    return built


def check_contract(result: dict[str, Any]) -> None:
    """The analyze document of docs/contracts.md §3, and the rule that every number in a summary is in its evidence."""
    json.dumps(result, allow_nan=False)
    assert set(result) == {"window", "spans", "warnings", "causes"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", result["window"]["start"])
    assert result["window"]["start"] < result["window"]["end"]
    assert 0 <= result["spans"]["failed"] <= result["spans"]["total"]
    causes = result["causes"]
    assert [c["score"] for c in causes] == sorted((c["score"] for c in causes), reverse=True)
    assert len({c["cause"] for c in causes}) == len(causes)
    for cause in causes:
        assert cause["cause"] in CAUSE_IDS
        assert 0.0 <= cause["score"] <= 1.0
        assert cause["confidence"] in ("high", "medium", "low")
        assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in cause["example_traces"])
        assert cause["example_traces"] and cause["failed_spans"] > 0
        for driver in cause["drivers"]:
            assert set(driver) == {"attribute", "value", "failure_share", "baseline_share", "lift", "p_value"}
            assert 0 <= driver["p_value"] <= 0.02 and driver["failure_share"] > driver["baseline_share"]
        for item in cause["evidence"]:
            assert set(item) == {"kind", "name", "gpu_uuid", "host", "value", "baseline", "unit", "start", "end"}
        assert numbers_missing_from_evidence(cause) == [], cause["summary"]
