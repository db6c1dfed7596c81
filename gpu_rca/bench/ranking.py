"""Run scenarios through the lab, file ingest and ranking; score ours and the two baselines on each.

Every scenario goes the way a user's incident goes: the lab writes the standard files, `ingest` stores
them, `analyze` ranks with its default window; the baselines then rank the same store and window.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from gpu_rca.bench import baselines, scoring
from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence
from gpu_rca.correlate.ranking.run import analyze_connection
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.query import one_row, scalar
from gpu_rca.correlate.store.units import Units
from gpu_rca.schemas.errors import EmptyWindowError
from gpu_rca.schemas.timefmt import parse_time_ns

#: The seed of `--generated N`: fixed, so the generated suite is the same for everyone.
GENERATED_SEED = 20260302
#: Which scenario indexes of that seed each split takes: development (looked at while changing the
#: ranking) from 0, test (only ever measured) from `lab.generate.TEST_FIRST`.
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class SuiteResult:
    """One suite's cases for each method."""

    name: str
    ours: list[scoring.Case]
    baro: list[scoring.Case]
    contrast: list[scoring.Case]
    unchecked_summaries: list[str]
    classes: list[str] = field(default_factory=list)
    fed_slow: list[int] = field(default_factory=list)
    perturbed: dict[str, list[scoring.Case]] = field(default_factory=dict)
    files_not_ingested: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """The suite's numbers: ours, both baselines, our margin over the better one, rows by class, robustness."""
        ours = scoring.summarize(self.ours)
        ours["driver_accuracy"] = scoring.driver_accuracy(self.ours)
        ours["also_recall_top3"] = scoring.also_recall(self.ours)
        ours["by_confidence"] = scoring.by_confidence(self.ours)
        ours["high_precision"] = scoring.high_precision(self.ours)
        baro = scoring.summarize(self.baro, visible=baselines.METRIC_VISIBLE)
        contrast = scoring.summarize(self.contrast, visible=baselines.ATTRIBUTE_VISIBLE)
        best = max((b["ac1"] or 0.0) for b in (baro, contrast))
        classes = self.classes or ["error"] * len(self.ours)
        return {
            "ours": ours,
            "baro_metrics_only": baro,
            "attribute_contrast_only": contrast,
            "ac1_margin_over_best_baseline": None if ours["ac1"] is None else ours["ac1"] - best,
            "summaries_with_numbers_outside_evidence": self.unchecked_summaries,
            "files_not_ingested": self.files_not_ingested,
            "by_class": {
                kind: self._class_row([i for i, c in enumerate(classes) if c == kind])
                for kind in scoring.CLASSES
                if kind in classes
            },
            "robustness": {name: scoring.robustness_row(cases, classes) for name, cases in self.perturbed.items()},
            "cases": [
                {
                    "name": o.name,
                    "class": k,
                    "truth": o.truth.get("cause"),
                    "ours": o.ranked[:3],
                    "confidence": o.causes[0]["confidence"] if o.causes else None,
                    "drivers_found": scoring.drivers_found(o),
                    "baro": b.ranked[:3],
                    "contrast": c.ranked[:3],
                    "slow_failures_fed_to_baselines": fed,
                    "robustness": {name: cases[i].ranked[:3] for name, cases in self.perturbed.items()},
                }
                for i, (o, b, c, k, fed) in enumerate(
                    zip(self.ours, self.baro, self.contrast, classes, self.fed_slow or [0] * len(self.ours))
                )
            ],
        }

    def _class_row(self, picked: list[int]) -> dict[str, Any]:
        ours = [self.ours[i] for i in picked]
        row: dict[str, Any] = {
            "ours": {
                **scoring.summarize(ours),
                "driver_accuracy": scoring.driver_accuracy(ours),
                "any_cause_reported": scoring.any_cause_share(ours),
                "high_precision": scoring.high_precision(ours),
            },
            "baro_metrics_only": scoring.summarize([self.baro[i] for i in picked]),
            "attribute_contrast_only": scoring.summarize([self.contrast[i] for i in picked]),
        }
        for method in ("ours", "baro_metrics_only", "attribute_contrast_only"):
            cases = ours if method == "ours" else [getattr(self, _FIELD[method])[i] for i in picked]
            row[method]["false_alarms"] = scoring.false_alarms(cases)
        return row


_FIELD = {"baro_metrics_only": "baro", "attribute_contrast_only": "contrast"}


def run_case(scenario_data: dict[str, Any] | str, robustness: bool = False) -> dict[str, Any]:
    """Simulate one scenario (a YAML path or a mapping), ingest its files, rank with ours and both baselines.

    With `robustness`, the same files are also ingested under each perturbation (perturb.py) and ranked
    by ours: the lab runs once.
    """
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
        failed_files = _ingest(db, files)
        ours, baro, contrast, fed_slow = _rank(db)
        perturbed = _perturbed_rankings(files, Path(tmp), scenario.name) if robustness else {}
    unchecked = [c["cause"] for c in ours if numbers_missing_from_evidence(c)]
    return {
        "name": scenario.name,
        "class": case_class(scenario.name, run.truth, sum(run.failures().values())),
        "truth": run.truth,
        "ours": ours,
        "baro": baro,
        "contrast": contrast,
        "slow_failures_fed_to_baselines": fed_slow,
        "files_not_ingested": failed_files,
        "summaries_with_numbers_outside_evidence": unchecked,
        "robustness": perturbed,
    }


def _ingest(db: Path, files: Path, units: tuple[str, ...] = ()) -> list[str]:
    """Ingest `files` into a fresh store at `db` (with `--unit` rules `units`); the files that failed, each
    with its reason."""
    with Store(db, units=Units.parse(units)) as store:
        reports = ingest_paths(store, [files], progress=False)
    return [f"{Path(r.path).name}: {r.reason}" for r in reports.failed]


def _rank(db: Path) -> tuple[list[Any], list[str], list[str], int]:
    """Ours, BARO and attribute contrast on the store at `db` (ours' window), and how many slow requests the
    baselines read as failures. A store with nothing to rank (every trace file failed) answers nothing."""
    with Store(db, read_only=True) as store:
        con = store.connection
        try:
            ours = analyze_connection(con)
        except EmptyWindowError:
            return [], [], [], 0
        start = parse_time_ns(ours["window"]["start"])
        end = parse_time_ns(ours["window"]["end"])
        contrast: list[str] = []
        detect, fed_slow = None, 0
        # The baselines read the failures ours marked, `--slow auto`'s slow requests included (rk_spans).
        if ours["spans"]["failed"]:
            detect, fed_slow = one_row(
                con, "SELECT min(end_ns), count(*) FILTER (WHERE status <> 'ERROR') FROM rk_spans WHERE failed"
            )
            contrast = baselines.contrast_ranking(con) if _has_kv(con) else []
        baro = baselines.baro_ranking(con, start, end, detect)
    return list(ours["causes"]), baro, contrast, int(fed_slow or 0)


def case_class(name: str, truth: dict[str, Any], errored: int) -> str:
    """`quiet` (truth null), `error` (some inference span errored), else a latency incident: `moderate` for a
    generated 1.5-2× slowdown (its name says so), `latency` otherwise."""
    if truth.get("cause") is None:
        return "quiet"
    if errored:
        return "error"
    return "moderate" if name.endswith("-moderate") else "latency"


def _perturbed_rankings(files: Path, tmp: Path, name: str) -> dict[str, list[Any]]:
    """Ours on the same files under each perturbation: a fresh folder and store per perturbation."""
    from gpu_rca.bench.perturb import PERTURBATIONS, UNITS, perturbed

    original = {p.name: p.read_text(encoding="utf-8") for p in sorted(files.iterdir())}
    rankings: dict[str, list[Any]] = {}
    for perturbation in PERTURBATIONS:
        folder = tmp / perturbation
        folder.mkdir()
        for file_name, text in perturbed(original, perturbation, name).items():
            (folder / file_name).write_text(text, encoding="utf-8")
        db = tmp / f"{perturbation}.duckdb"
        _ingest(db, folder, UNITS.get(perturbation, ()))
        rankings[perturbation] = _rank(db)[0]
    return rankings


def _has_kv(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'rk_kv'"))


def run_suite(
    name: str,
    scenarios: list[Any],
    jobs: int = 1,
    progress: Callable[[dict[str, Any]], None] | None = None,
    robustness: bool = False,
) -> SuiteResult:
    """Run every scenario (paths or mappings), `jobs` at a time, each in its own process."""
    results: list[dict[str, Any]] = []
    work = partial(run_case, robustness=robustness)
    if jobs <= 1:
        for item in scenarios:
            results.append(work(item))
            if progress:
                progress(results[-1])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(work, scenarios):
                results.append(result)
                if progress:
                    progress(result)
    ours = [scoring.Case(r["name"], r["truth"], [c["cause"] for c in r["ours"]], r["ours"]) for r in results]
    baro = [scoring.Case(r["name"], r["truth"], r["baro"]) for r in results]
    contrast = [scoring.Case(r["name"], r["truth"], r["contrast"]) for r in results]
    unchecked = [f"{r['name']}: {cause}" for r in results for cause in r["summaries_with_numbers_outside_evidence"]]
    perturbed: dict[str, list[scoring.Case]] = {}
    for r in results:
        for perturbation, causes in r["robustness"].items():
            case = scoring.Case(r["name"], r["truth"], [c["cause"] for c in causes], causes)
            perturbed.setdefault(perturbation, []).append(case)
    return SuiteResult(
        name,
        ours,
        baro,
        contrast,
        unchecked,
        [r["class"] for r in results],
        [r["slow_failures_fed_to_baselines"] for r in results],
        perturbed,
        [f"{r['name']}: {failure}" for r in results for failure in r["files_not_ingested"]],
    )


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


def generated_scenarios(count: int, seed: int = GENERATED_SEED, split: str = "dev") -> list[dict[str, Any]]:
    """`count` scenarios from `lab generate` with the fixed seed: the first of the dev or the test range."""
    from gpu_rca.lab.generate import TEST_FIRST, generate_scenarios

    return generate_scenarios(seed, count, first=TEST_FIRST if split == "test" else 0)


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
