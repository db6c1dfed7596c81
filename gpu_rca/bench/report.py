"""The bench report as tables on stdout."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def print_report(document: dict[str, Any]) -> None:
    """One accuracy table per suite, calibration per confidence label, and the misses."""
    console = Console(width=140)
    for name, suite in document["suites"].items():
        ours, baro, contrast = suite["ours"], suite["baro_metrics_only"], suite["attribute_contrast_only"]
        table = Table(title=f"{name} suite ({ours['cases']} scenarios)")
        for column in ("method", "AC@1", "AC@3", "Avg@5", "AC@1 on its visible causes", "driver acc.", "also in top 3"):
            table.add_column(column, justify="left" if column == "method" else "right")
        table.add_row(
            "gpu-rca",
            _f(ours["ac1"]),
            _f(ours["ac3"]),
            _f(ours["avg5"]),
            "",
            _f(ours["driver_accuracy"]),
            _f(ours["also_recall_top3"]),
        )
        table.add_row(
            "BARO (metrics only)",
            _f(baro["ac1"]),
            _f(baro["ac3"]),
            _f(baro["avg5"]),
            f"{_f(baro['ac1_visible'])} of {baro['visible_cases']}",
            "",
            "",
        )
        table.add_row(
            "attribute contrast only",
            _f(contrast["ac1"]),
            _f(contrast["ac3"]),
            _f(contrast["avg5"]),
            f"{_f(contrast['ac1_visible'])} of {contrast['visible_cases']}",
            "",
            "",
        )
        console.print(table)
        console.print(f"AC@1 margin over the better baseline: {_f(suite['ac1_margin_over_best_baseline'])}")
        unchecked = suite["summaries_with_numbers_outside_evidence"]
        console.print(f"summaries quoting a number not in their evidence: {len(unchecked)} {unchecked or ''}")
        for label, numbers in ours["by_confidence"].items():
            console.print(
                f"  confidence {label}: {numbers['right']} of {numbers['cases']} right ({numbers['accuracy']:.2f})"
            )
        console.print(f"  `high` precision: {_f(ours.get('high_precision'))}")
        for failure in suite.get("files_not_ingested", []):
            console.print(f"  file not ingested: {failure}", highlight=False)
        _print_classes(console, name, suite.get("by_class", {}))
        _print_robustness(console, name, suite.get("robustness", {}), ours["ac1"])
        misses = [c for c in suite["cases"] if (c["ours"][:1] or [None])[0] != c["truth"]]
        for case in misses:
            console.print(
                f"  miss {case['name']} ({case.get('class')}): truth {case['truth']}, ranked {case['ours']}",
                highlight=False,
            )
        for case in suite["cases"]:
            if case["drivers_found"] is False:
                console.print(f"  truth drivers not all listed: {case['name']}", highlight=False)


def _print_classes(console: Console, suite: str, rows: dict[str, Any]) -> None:
    """Error incidents, latency incidents, moderate slowdowns and quiet windows as their own rows."""
    table = Table(title=f"{suite}: by class")
    for column in ("class", "cases", "gpu-rca AC@1", "AC@3", "drivers", "any cause", "false alarms",
                   "BARO AC@1", "AC@3", "contrast AC@1", "AC@3"):  # fmt: skip
        table.add_column(column, justify="left" if column == "class" else "right")
    for kind, row in rows.items():
        ours, baro, contrast = row["ours"], row["baro_metrics_only"], row["attribute_contrast_only"]
        quiet = kind == "quiet"
        table.add_row(
            kind,
            str(ours["cases"]),
            _f(ours["ac1"]),
            _f(ours["ac3"]),
            _f(ours["driver_accuracy"]),
            _f(ours["any_cause_reported"]),
            f"{ours['false_alarms']} / {baro['false_alarms']} / {contrast['false_alarms']}" if quiet else "",
            _f(baro["ac1"]),
            _f(baro["ac3"]),
            _f(contrast["ac1"]),
            _f(contrast["ac3"]),
        )
    console.print(table)


def _print_robustness(console: Console, suite: str, rows: dict[str, Any], clean_ac1: float | None) -> None:
    """AC@1 of ours under each perturbation of the files, beside the unperturbed run."""
    if not rows:
        return
    classes = sorted({k for row in rows.values() for k in row["ac1_by_class"]})
    table = Table(title=f"{suite}: robustness (gpu-rca, files perturbed before ingest)")
    for column in ("perturbation", "AC@1", "AC@3", *(f"AC@1 {k}" for k in classes), "high precision",
                   "false alarms"):  # fmt: skip
        table.add_column(column, justify="left" if column == "perturbation" else "right")
    table.add_row("none", _f(clean_ac1), "", *("" for _ in classes), "", "")
    for name, row in rows.items():
        table.add_row(
            name,
            _f(row["ac1"]),
            _f(row["ac3"]),
            *(_f(row["ac1_by_class"].get(k)) for k in classes),
            _f(row["high_precision"]),
            str(row["false_alarms"]),
        )
    console.print(table)
    for name, row in rows.items():
        for miss in row["misses"]:
            console.print(
                f"  {name} miss {miss['name']}: truth {miss['truth']}, ranked {miss['ranked']}", highlight=False
            )
