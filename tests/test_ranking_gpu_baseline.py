"""A GPU's "normal" in summaries is what it showed before its failures, even when the fault fills the window.

A fault that outlasts most of the window (a power cap, a co-tenant job) leaves more successes during the
incident than before it; their medians would make the capped limit or the co-tenant's memory look normal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpu_rca import correlate
from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence
from gpu_rca.correlate.store import Store
from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.outputs import write_run
from gpu_rca.lab.scenario import parse_scenario

L4_DEFAULT_LIMIT_W = 72
FLEET = [{"host": "node-a", "gpus": 2, "model": "L4"}, {"host": "node-b", "gpus": 2, "model": "L4"}]
SCENARIOS: dict[str, dict[str, Any]] = {
    # Capped from minute 3 to the end of a 12-minute run: most of its successes ran under the cap.
    "long-cap": {
        "seed": 5,
        "duration": "12m",
        "fleet": FLEET,
        "workload": {
            "rate": "5.2/s",
            "input_size": {512: 0.3, 768: 0.7},
            "model": {"ddcolor_paper": 1},
            "timeout": "20s",
        },
        "faults": [{"kind": "power_cap", "gpu": "node-b/0", "start": "3m", "severity": 0.7}],
    },
    # A co-tenant on every GPU of node-b from minute 3 to the end; requests that fit beside it still succeed.
    "long-co-tenant": {
        "seed": 6,
        "duration": "12m",
        "fleet": FLEET,
        "workload": {
            "rate": "2/s",
            "input_size": {512: 0.6, 768: 0.4},
            "model": {"ddcolor_paper_tiny": 0.7, "ddcolor_paper": 0.3},
        },
        "faults": [{"kind": "foreign_process", "gpu": f"node-b/{i}", "start": "3m", "severity": 0.8} for i in (0, 1)],
    },
}


def _analyze(root: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    files = root / name
    write_run(run_scenario(parse_scenario({"name": name, **SCENARIOS[name]}), sample_hz=1.0), files)
    with Store(root / f"{name}.duckdb") as store:
        ingest_paths(store, [files], progress=False)
    return correlate.analyze(root / f"{name}.duckdb"), json.loads((files / "truth.json").read_text())


def _cause(result: dict[str, Any], cause: str) -> dict[str, Any]:
    top = result["causes"][0]
    assert top["cause"] == cause, [c["cause"] for c in result["causes"]]
    assert numbers_missing_from_evidence(top) == [], top["summary"]
    return top


def test_a_cap_that_fills_the_window_is_compared_with_the_limit_before_it(tmp_path: Path) -> None:
    result, _ = _analyze(tmp_path, "long-cap")
    top = _cause(result, "power_capping")
    limits = [e for e in top["evidence"] if e["name"] == "gpu.power.limit"]
    assert limits and limits[0]["baseline"] == L4_DEFAULT_LIMIT_W and limits[0]["value"] < L4_DEFAULT_LIMIT_W
    assert f"(was {L4_DEFAULT_LIMIT_W} W)" in top["summary"]


def test_a_co_tenant_that_stays_is_not_what_the_gpus_normally_hold(tmp_path: Path) -> None:
    result, _ = _analyze(tmp_path, "long-co-tenant")
    top = _cause(result, "gpu_memory_foreign_process")
    others = [e for e in top["evidence"] if e["name"] == "gpu.memory.used.max - gpu.memory.process.max"]
    assert others and others[0]["value"] > 10 and others[0]["baseline"] < 1
    assert "memory used by others" in top["summary"] and "(normally 0 GiB)" in top["summary"]
    assert top["hosts"] == ["node-b"]
