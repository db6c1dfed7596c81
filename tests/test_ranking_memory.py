"""Memory causes through the CLI (lab run -> ingest -> analyze --json): the OOMs' footprint and their own texts.

A foreign process on one GPU whose OOMs still lean to large inputs, a large-input OOM wave over every GPU, a
leaking version, and a fragmentation OOM wave read from the OOM texts alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gpu_rca.schemas import causes as c
from tests.support.cli import run_cli


def _incident(capsys: pytest.CaptureFixture[str], root: Path, scenario: str) -> tuple[Path, dict[str, Any]]:
    files, db = root / scenario, root / f"{scenario}.duckdb"
    run_cli(capsys, "lab", "run", scenario, "--out", str(files))
    run_cli(capsys, "ingest", "--db", str(db), str(files))
    return db, json.loads((files / "truth.json").read_text())


def _analyze(capsys: pytest.CaptureFixture[str], db: Path) -> dict[str, Any]:
    return json.loads(run_cli(capsys, "analyze", "--db", str(db), "--json"))


def _strip_process_stamp(db: Path) -> None:
    con = duckdb.connect(str(db))
    con.execute("UPDATE spans SET gpu_memory_process_max = NULL")
    con.close()


def test_a_foreign_process_on_one_gpu_wins_though_its_ooms_lean_to_large_inputs(capsys, tmp_path: Path) -> None:
    db, truth = _incident(capsys, tmp_path, "foreign-process-large-inputs-a100")
    gpu = truth["drivers"]["gpu.uuid"]
    for stripped in (False, True):  # with the process stamp, then from the OOM texts alone
        if stripped:
            _strip_process_stamp(db)
        result = _analyze(capsys, db)
        top = result["causes"][0]
        assert top["cause"] == c.GPU_MEMORY_FOREIGN_PROCESS, result["causes"]
        assert top["gpus"] == [gpu]
        assert {"attribute": "gpu.uuid", "value": gpu}.items() <= next(
            d for d in top["drivers"] if d["attribute"] == "gpu.uuid"
        ).items()
        # The OOMs lean to large inputs, and that is no cause of its own here.
        assert any(d["attribute"] == "ddcolor.input_size" for d in top["drivers"])
        assert all(x["cause"] != c.GPU_OOM_LARGE_INPUTS or x["confidence"] == "low" for x in result["causes"][1:])
        texts = [e for e in top["evidence"] if e["kind"] == "oom_text"]
        assert texts and texts[0]["value"] == 34.0  # "Process 31000 has 34.00 GiB memory in use."
        footprint = next(e for e in top["evidence"] if e["kind"] == "footprint")
        assert footprint["value"] >= 90  # the same inputs ran fine on the other GPUs


def test_a_large_input_wave_over_every_gpu_stays_large_inputs(capsys, tmp_path: Path) -> None:
    db, _ = _incident(capsys, tmp_path, "oom-2048-a100")
    result = _analyze(capsys, db)
    top = result["causes"][0]
    assert top["cause"] == c.GPU_OOM_LARGE_INPUTS, result["causes"]
    assert top["drivers"][0]["attribute"] == "ddcolor.input_size" and top["drivers"][0]["value"] == 2048
    footprint = next(e for e in top["evidence"] if e["kind"] == "footprint")
    assert footprint["value"] <= 20  # the same inputs failed wherever they ran


def test_a_leaking_version_is_a_memory_leak_driven_by_its_version(capsys, tmp_path: Path) -> None:
    db, _ = _incident(capsys, tmp_path, "memory-leak-version-l4")
    result = _analyze(capsys, db)
    top = result["causes"][0]
    assert top["cause"] == c.GPU_MEMORY_LEAK, result["causes"]
    assert {"attribute": "service.version", "value": "1.5.0"}.items() <= next(
        d for d in top["drivers"] if d["attribute"] == "service.version"
    ).items()
    climb = [e for e in top["evidence"] if e["kind"] == "climb"]
    assert climb and climb[0]["value"] > climb[1]["value"]  # rose more minutes than it fell (restarts)
    assert "kept alive" in top["summary"]


def test_a_fragmentation_wave_is_read_from_the_oom_texts_alone(capsys, tmp_path: Path) -> None:
    db, _ = _incident(capsys, tmp_path, "fragmentation-oom-wave-a100")
    _strip_process_stamp(db)
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM metric_samples")
    con.close()
    result = _analyze(capsys, db)
    top = result["causes"][0]
    assert top["cause"] == c.GPU_MEMORY_LEAK, result["causes"]
    assert "fragmentation" in top["summary"]
    fragmented = next(e for e in top["evidence"] if e["kind"] == "oom_text" and e["unit"] == "%")
    assert fragmented["value"] >= 50
    assert all(x["cause"] != c.GPU_OOM_LARGE_INPUTS for x in result["causes"])
