"""`gpu-rca bench ranking`: measured ranking accuracy on the public and generated suites, beside two baselines."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from gpu_rca.schemas.errors import UsageError


@click.group()
def bench() -> None:
    """Measure gpu-rca on lab scenarios."""


@bench.command()
@click.option(
    "--scenarios",
    "scenarios_dir",
    metavar="DIR",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder of scenario YAML files (default: the shipped public suite).",
)
@click.option(
    "--generated",
    metavar="N",
    default=0,
    show_default=True,
    type=click.IntRange(0, 10000),
    help="Also run N scenarios from `lab generate` with the fixed seed.",
)
@click.option("--seed", default=None, type=int, help="Seed for --generated (default: the fixed published seed).")
@click.option(
    "--split",
    type=click.Choice(["dev", "test", "both"]),
    default="dev",
    show_default=True,
    help="Which generated range --generated runs: development seeds, the held-out test range (only ever measured), or both.",
)
@click.option(
    "--robustness",
    is_flag=True,
    help="Also rank every scenario's files under each perturbation (missing and distorted signals).",
)
@click.option(
    "--jobs",
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    type=click.IntRange(1, 64),
    help="Scenarios run at once, each in its own process.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
def ranking(
    scenarios_dir: str | None,
    generated: int,
    seed: int | None,
    split: str,
    robustness: bool,
    jobs: int,
    as_json: bool,
) -> None:
    """AC@1, AC@3, Avg@5, driver accuracy and calibration, ours vs metrics-only and attribute-only baselines."""
    from gpu_rca.bench import ranking as bench_ranking
    from gpu_rca.bench.report import print_report

    paths = bench_ranking.public_scenarios(scenarios_dir)
    if scenarios_dir is not None and not paths:
        raise UsageError(f"no scenario YAML files in {scenarios_dir}")

    def progress(case: dict[str, Any]) -> None:
        top = case["ours"][0]["cause"] if case["ours"] else "none"
        truth = case["truth"].get("cause") or "none"
        click.echo(f"  {case['name']}: truth {truth}, ranked first {top}", err=True)

    suites = {}
    click.echo(f"public suite: {len(paths)} scenarios", err=True)
    suites["public"] = bench_ranking.run_suite("public", paths, jobs, progress, robustness).report()
    chosen = bench_ranking.GENERATED_SEED if seed is None else seed
    for part in bench_ranking.SPLITS if generated else ():
        if split not in (part, "both"):
            continue
        click.echo(f"generated suite: {generated} scenarios (seed {chosen}, {part} split)", err=True)
        items = bench_ranking.generated_scenarios(generated, chosen, part)
        name = "generated" if part == "dev" else "generated_test"
        suites[name] = bench_ranking.run_suite(name, items, jobs, progress, robustness).report()
        suites[name]["seed"] = chosen
        suites[name]["split"] = part
    document = {"name": "ranking", "suites": suites, "baseline_tables": bench_ranking.baseline_tables()}
    if as_json:
        click.echo(json.dumps(document, allow_nan=False, indent=2))
    else:
        print_report(document)
