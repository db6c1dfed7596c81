"""Ranking on real lab incidents: simulate, write the standard files, ingest them, analyze.

The scenarios here are written for these tests (the public suite is measured by `gpu-rca bench ranking`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gpu_rca import correlate
from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence, summary_numbers
from gpu_rca.correlate.store import Store
from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.outputs import write_run
from gpu_rca.lab.scenario import parse_scenario
from gpu_rca.schemas.causes import CAUSE_IDS
from gpu_rca.schemas.errors import InputError

FLEET = [{"host": "node-a", "gpus": 2, "model": "L4"}, {"host": "node-b", "gpus": 1, "model": "L4"}]

SCENARIOS: dict[str, dict[str, Any]] = {
    "thermal": {
        "seed": 3, "duration": "14m", "fleet": FLEET,
        "workload": {"rate": "2/s", "input_size": {512: 0.8, 1024: 0.2}},
        "faults": [
            {"kind": "thermal", "gpu": "node-b/0", "start": "7m", "end": "13m", "severity": 0.9},
            {"kind": "thermal", "gpu": "node-a/0", "start": "2m", "end": "4m", "severity": 0.3},  # harmless
        ],
        "truth": {"cause": "thermal_throttling", "drivers": {"gpu.uuid": "node-b/0"}},
    },
    "lost-and-bug": {
        "seed": 27, "duration": "14m",
        "fleet": [{"host": "node-a", "gpus": 2, "model": "L4"}, {"host": "node-b", "gpus": 2, "model": "L4"}],
        "workload": {"rate": "2/s", "model": {"ddcolor_paper_tiny": 0.7, "ddcolor_artistic": 0.3}},
        "faults": [
            {"kind": "gpu_lost", "gpu": "node-b/1", "start": "6m"},
            {"kind": "app_bug", "model": "ddcolor_artistic", "start": "8m", "end": "13m", "severity": 0.3},
        ],
        "truth": {
            "cause": "gpu_fallen_off_bus", "drivers": {"gpu.uuid": "node-b/1"},
            "also": [{"cause": "application_error", "drivers": {"ddcolor.model": "ddcolor_artistic"}}],
        },
    },
    "quiet": {
        "seed": 26, "duration": "6m", "fleet": FLEET[:1], "workload": {"rate": "1/s"},
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
            (db, json.loads((root / name / "truth.json").read_text())) if db.exists() else build_incident(root, name, spec)
        )
    return built


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    return incident_stores(tmp_path_factory)


def check_contract(result: dict[str, Any]) -> None:
    """Contract 3's analyze document, and the rule that every number in a summary is in its evidence."""
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


def test_thermal_incident_ranks_thermal_first_on_the_hot_gpu(incidents) -> None:
    db, truth = incidents["thermal"]
    result = correlate.analyze(db)
    check_contract(result)
    top = result["causes"][0]
    assert top["cause"] == "thermal_throttling"
    assert top["confidence"] == "high"
    assert top["gpus"] == [truth["drivers"]["gpu.uuid"]]
    assert {"attribute": "gpu.uuid", "value": truth["drivers"]["gpu.uuid"]}.items() <= top["drivers"][0].items()
    # The mild, harmless heat on node-a/0 is not a second thermal cause (each id at most once) nor its GPU.
    assert all(uuid == truth["drivers"]["gpu.uuid"] for uuid in top["gpus"])


def test_independent_incidents_are_separate_causes_with_their_drivers(incidents) -> None:
    db, truth = incidents["lost-and-bug"]
    result = correlate.analyze(db)
    check_contract(result)
    ranked = [c["cause"] for c in result["causes"]]
    assert ranked[:2] == ["gpu_fallen_off_bus", "application_error"]
    lost, bug = result["causes"][:2]
    assert lost["gpus"] == [truth["drivers"]["gpu.uuid"]]
    assert any(e["kind"] == "kernel" and e["value"] == 79 for e in lost["evidence"])
    assert bug["drivers"][0]["attribute"] == "ddcolor.model" and bug["drivers"][0]["value"] == "ddcolor_artistic"
    assert lost["failed_spans"] + bug["failed_spans"] <= result["spans"]["failed"]


def test_quiet_window_reports_no_causes(incidents) -> None:
    db, truth = incidents["quiet"]
    assert truth["cause"] is None
    result = correlate.analyze(db)
    check_contract(result)
    assert result["causes"] == []
    assert result["spans"]["failed"] == 0
    assert "no failed inference spans in the window" in result["warnings"]


def test_missing_kernel_log_metrics_and_stamps_still_rank(incidents, tmp_path: Path) -> None:
    """Old collectors (no throttle/temperature/clock stamps), no kernel log, no Prometheus: degrade, don't guess."""
    db, truth = incidents["thermal"]
    copy = tmp_path / "thermal-old.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE spans SET gpu_throttle_reasons = NULL, gpu_temperature_max = NULL, gpu_clock_sm_min = NULL")
    con.execute("DELETE FROM kernel_events")
    con.close()
    result = correlate.analyze(copy)
    check_contract(result)
    assert result["causes"][0]["cause"] == "thermal_throttling"  # from the GPU's own metric samples
    assert any("kernel log" in w for w in result["warnings"])

    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM metric_samples")
    con.close()
    result = correlate.analyze(copy)
    check_contract(result)
    assert "no GPU metric samples in the window; ranking uses the span stamps alone" in result["warnings"]
    assert all(c["cause"] != "thermal_throttling" or c["confidence"] != "high" for c in result["causes"])


def test_background_noise_and_a_skewed_host_clock_change_nothing(incidents, tmp_path: Path) -> None:
    """0.5 % of successes turned into random application errors, one host's clock a minute ahead."""
    db, truth = incidents["lost-and-bug"]
    copy = tmp_path / "noisy.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE spans SET status = 'ERROR', error_type = 'ValueError'"
                " WHERE is_inference AND status <> 'ERROR' AND hash(span_id) % 200 = 0")
    con.execute("UPDATE spans SET start_ns = start_ns + 60000000000, end_ns = end_ns + 60000000000 WHERE host = 'node-a'")
    con.close()
    result = correlate.analyze(copy)
    check_contract(result)
    assert [c["cause"] for c in result["causes"]] == ["gpu_fallen_off_bus", "application_error"]
    assert result["causes"][0]["confidence"] == "high"
    assert result["causes"][1]["drivers"][0]["value"] == "ddcolor_artistic"


def test_filters_and_window_options(incidents) -> None:
    db, truth = incidents["thermal"]
    hot = truth["drivers"]["gpu.uuid"]
    whole = correlate.analyze(db)
    with pytest.raises(InputError, match="no inference spans"):
        correlate.analyze(db, gpu="GPU-not-in-this-store")
    only_hot = correlate.analyze(db, gpu=hot)
    assert only_hot["spans"]["total"] < whole["spans"]["total"]
    assert only_hot["causes"][0]["cause"] == "thermal_throttling"
    wider = correlate.analyze(db, lookback="30m")
    assert wider["window"]["start"] <= whole["window"]["start"]
    slow = correlate.analyze(db, slow="1ms")
    assert slow["spans"]["failed"] == slow["spans"]["total"]


def test_summary_numbers_ignore_identifiers() -> None:
    text = "12 failed requests on GPU GPU-3f2a… on node-1: 97.5 % at 91 °C (XID 79), 1.25 GiB."
    assert summary_numbers(text) == [12, 97.5, 91, 79, 1.25]


def test_quoted_driver_values_count_as_identifiers_only_when_they_are_evidence_names() -> None:
    evidence = [{"kind": "driver", "name": "ddcolor.input_size=1280", "gpu_uuid": None, "host": None, "value": 48,
                 "baseline": 8.3, "unit": "%", "start": None, "end": None}]
    quoted = {"summary": "48 % of them had ddcolor.input_size=1280 against 8.3 % of successes.", "evidence": evidence}
    assert numbers_missing_from_evidence(quoted) == []
    invented = {"summary": "48 % of them had ddcolor.input_size=2048 against 8.3 %.", "evidence": evidence}
    assert numbers_missing_from_evidence(invented) == [2048]


def test_correlate_never_imports_lab() -> None:
    root = Path(correlate.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"^\s*(from\s+lab[\s.]|import\s+lab\b)", path.read_text(encoding="utf-8"), re.MULTILINE)
    ]
    assert offenders == []
