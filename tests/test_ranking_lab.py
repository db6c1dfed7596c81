"""Ranking on real lab incidents: simulate, write the standard files, ingest them, analyze.

The scenarios here are written for these tests (the public suite is measured by `gpu-rca bench ranking`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gpu_rca import correlate
from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence, summary_numbers
from gpu_rca.schemas.errors import UsageError
from tests.support.ranking import check_contract, incident_stores


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    return incident_stores(tmp_path_factory)


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
    # The failures' own words: the CUDA error their texts state, counted.
    said = next(e for e in lost["evidence"] if e["kind"] == "cuda_text")
    assert said["name"] == "CUDA error: unspecified launch failure" and 0 < said["value"] <= lost["failed_spans"]
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
    db, _truth = incidents["thermal"]
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
    db, _truth = incidents["lost-and-bug"]
    copy = tmp_path / "noisy.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    con.execute(
        "UPDATE spans SET status = 'ERROR', error_type = 'ValueError'"
        " WHERE is_inference AND status <> 'ERROR' AND hash(span_id) % 200 = 0"
    )
    con.execute(
        "UPDATE spans SET start_ns = start_ns + 60000000000, end_ns = end_ns + 60000000000 WHERE host = 'node-a'"
    )
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
    with pytest.raises(UsageError, match="no inference spans on GPU 'GPU-not-in-this-store'; known GPUs: "):
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
    evidence = [
        {
            "kind": "driver",
            "name": "ddcolor.input_size=1280",
            "gpu_uuid": None,
            "host": None,
            "value": 48,
            "baseline": 8.3,
            "unit": "%",
            "start": None,
            "end": None,
        }
    ]
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
