"""Hardware faults without the kernel log: dcgm-exporter's last-XID gauge stands in, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence
from tests.support.cli import run_cli


def _without_kernel_log(capsys: pytest.CaptureFixture[str], root: Path, scenario: str) -> tuple[Path, dict[str, Any]]:
    files, db = root / scenario, root / f"{scenario}.duckdb"
    run_cli(capsys, "lab", "run", scenario, "--out", str(files))
    (files / "kernel.log").unlink()  # a team that ships no node logs
    run_cli(capsys, "ingest", "--db", str(db), str(files))
    return db, json.loads((files / "truth.json").read_text())


@pytest.mark.parametrize("scenario", ["kernel-fault-xid13", "kernel-fault-xid43-t4"])
def test_a_kernel_fault_is_found_from_the_xid_gauge_without_a_kernel_log(capsys, tmp_path: Path, scenario) -> None:
    db, truth = _without_kernel_log(capsys, tmp_path, scenario)
    document = json.loads(run_cli(capsys, "analyze", "--db", str(db), "--json"))
    top = document["causes"][0]
    assert top["cause"] == "cuda_kernel_fault"
    assert top["gpus"] == [truth["drivers"]["gpu.uuid"]]
    assert "last-XID gauge" in top["summary"]
    gauge = [e for e in top["evidence"] if e["name"].startswith("DCGM_FI_DEV_XID_ERRORS changed to XID")]
    assert gauge and gauge[0]["gpu_uuid"] == truth["drivers"]["gpu.uuid"] and gauge[0]["start"]
    assert not any(e["kind"] == "kernel" for e in top["evidence"])
    assert numbers_missing_from_evidence(top) == []


def test_an_xid_the_gauge_held_before_the_window_is_no_event(capsys, tmp_path: Path) -> None:
    """A gauge already at 13 when the window opens (yesterday's XID) names no kernel fault by itself."""
    import duckdb

    db, _ = _without_kernel_log(capsys, tmp_path, "kernel-fault-xid13")
    con = duckdb.connect(str(db))
    # The gauge reads 13 from its first sample on: no change to a code is ever seen.
    con.execute(
        "UPDATE metric_samples SET value = 13 WHERE metric = 'DCGM_FI_DEV_XID_ERRORS'"
        " AND gpu_uuid IN (SELECT gpu_uuid FROM metric_samples WHERE metric = 'DCGM_FI_DEV_XID_ERRORS' AND value = 13)"
    )
    con.close()
    document = json.loads(run_cli(capsys, "analyze", "--db", str(db), "--json"))
    assert all("last-XID gauge" not in c["summary"] for c in document["causes"])
