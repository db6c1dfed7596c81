"""Run scenarios through the lab, file ingest and ranking; score ours and the two baselines on each.

Every scenario goes the way a user's incident goes: the lab writes the standard files, `ingest` stores
them, `analyze` ranks with its default window; the baselines then rank the same store and window.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from gpu_rca.bench import baselines, scoring
from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence
from gpu_rca.correlate.ranking.run import analyze_connection
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.query import scalar
from gpu_rca.schemas.timefmt import parse_time_ns

#: The seed of `--generated N`: fixed, so the generated suite is the same for everyone.
GENERATED_SEED = 20260302


@dataclass(frozen=True)
class SuiteResult:
    """One suite's cases for each method."""

    name: str
    ours: list[scoring.Case]
    baro: list[scoring.Case]
    contrast: list[scoring.Case]
    unchecked_summaries: list[str]

    def report(self) -> dict[str, Any]:
        """The suite's numbers: ours, both baselines, and our margin over the better one."""
        ours = scoring.summarize(self.ours)
        ours["driver_accuracy"] = scoring.driver_accuracy(self.ours)
        ours["also_recall_top3"] = scoring.also_recall(self.ours)
        ours["by_confidence"] = scoring.by_confidence(self.ours)
        baro = scoring.summarize(self.baro, visible=baselines.METRIC_VISIBLE)
        contrast = scoring.summarize(self.contrast, visible=baselines.ATTRIBUTE_VISIBLE)
        best = max((b["ac1"] or 0.0) for b in (baro, contrast))
        return {
            "ours": ours,
            "baro_metrics_only": baro,
            "attribute_contrast_only": contrast,
            "ac1_margin_over_best_baseline": None if ours["ac1"] is None else ours["ac1"] - best,
            "summaries_with_numbers_outside_evidence": self.unchecked_summaries,
            "cases": [
                {
                    "name": o.name,
                    "truth": o.truth.get("cause"),
                    "ours": o.ranked[:3],
                    "confidence": o.causes[0]["confidence"] if o.causes else None,
                    "drivers_found": scoring.drivers_found(o),
                    "baro": b.ranked[:3],
                    "contrast": c.ranked[:3],
                }
                for o, b, c in zip(self.ours, self.baro, self.contrast)
            ],
        }


def run_case(scenario_data: dict[str, Any] | str) -> dict[str, Any]:
    """Simulate one scenario (a YAML path or a mapping), ingest its files, rank with ours and both baselines."""
    from gpu_rca.lab.engine import run_scenario
    from gpu_rca.lab.outputs import write_run
    from gpu_rca.lab.scenario import load_scenario, parse_scenario

    if isinstance(scenario_data, str):
        scenario = load_scenario(scenario_data)
    else:
        scenario = parse_scenario(scenario_data, source=f"generated {scenario_data.get('name')}")
    with tempfile.TemporaryDirectory(prefix="gpu-rca-bench-") as tmp:
        files = Path(tmp) / "files"
        run = run_scenario(scenario)
        write_run(run, files)
        db = Path(tmp) / "store.duckdb"
        with Store(db) as store:
            ingest_paths(store, [files], progress=False)
        with Store(db, read_only=True) as store:
            con = store.connection
            ours = analyze_connection(con)
            start = parse_time_ns(ours["window"]["start"])
            end = parse_time_ns(ours["window"]["end"])
            contrast: list[str] = []
            detect = None
            if ours["spans"]["failed"]:
                detect = scalar(con, "SELECT min(end_ns) FROM rk_spans WHERE failed")
                contrast = baselines.contrast_ranking(con) if _has_kv(con) else []
            baro = baselines.baro_ranking(con, start, end, detect)
    unchecked = [c["cause"] for c in ours["causes"] if numbers_missing_from_evidence(c)]
    return {
        "name": scenario.name,
        "truth": run.truth,
        "ours": ours["causes"],
        "baro": baro,
        "contrast": contrast,
        "summaries_with_numbers_outside_evidence": unchecked,
    }


def _has_kv(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'rk_kv'"))


def run_suite(
    name: str, scenarios: list[Any], jobs: int = 1, progress: Callable[[dict[str, Any]], None] | None = None
) -> SuiteResult:
    """Run every scenario (paths or mappings), `jobs` at a time, each in its own process."""
    results: list[dict[str, Any]] = []
    if jobs <= 1:
        for item in scenarios:
            results.append(run_case(item))
            if progress:
                progress(results[-1])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(run_case, scenarios):
                results.append(result)
                if progress:
                    progress(result)
    ours = [scoring.Case(r["name"], r["truth"], [c["cause"] for c in r["ours"]], r["ours"]) for r in results]
    baro = [scoring.Case(r["name"], r["truth"], r["baro"]) for r in results]
    contrast = [scoring.Case(r["name"], r["truth"], r["contrast"]) for r in results]
    unchecked = [f"{r['name']}: {cause}" for r in results for cause in r["summaries_with_numbers_outside_evidence"]]
    return SuiteResult(name, ours, baro, contrast, unchecked)


def public_scenarios(directory: str | Path | None) -> list[str]:
    """The YAML files of the public suite (the shipped `scenarios/`, or `directory`)."""
    if directory is None:
        from gpu_rca.lab.scenario import shipped_scenarios

        return [str(p) for p in _shipped_paths(shipped_scenarios())]
    paths = sorted(Path(directory).glob("*.yaml")) + sorted(Path(directory).glob("*.yml"))
    return [str(p) for p in paths]


def _shipped_paths(names: list[str]) -> list[Path]:
    from importlib import resources

    root = resources.files("gpu_rca.scenarios")
    return [Path(str(root / f"{name}.yaml")) for name in names]


def generated_scenarios(count: int, seed: int = GENERATED_SEED) -> list[dict[str, Any]]:
    """`count` scenarios from `lab generate` with the fixed seed."""
    from gpu_rca.lab.generate import generate_scenarios

    return generate_scenarios(seed, count)


def baseline_tables() -> dict[str, dict[str, str]]:
    """The published mapping tables of both baselines, as printed in the report."""
    return {
        "baro_metrics_only": {
            f"{series} {direction}": cause for (series, direction), cause in baselines.METRIC_CAUSES.items()
        },
        "attribute_contrast_only": {
            f"error {kind}, concentrated on {where}": cause
            for (kind, where), cause in baselines.ATTRIBUTE_CAUSES.items()
        },
    }
