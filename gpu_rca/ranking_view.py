"""Readable renderings of `analyze` and `explain` results (rich tables), for people at a terminal."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from gpu_rca.schemas.causes import CAUSES_BY_ID


class _PipeConsole(Console):
    """A console whose closed pipe (`gpu-rca analyze | head`) reaches `gpu_rca.cli.main`, which exits quietly
    with 0 (rich itself would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _console(out: TextIO) -> Console:
    probe = Console(file=out)
    return _PipeConsole(file=out, width=probe.width if probe.is_terminal else 140)


def _short(uuid: str) -> str:
    return uuid if len(uuid) <= 14 else uuid[:13] + "…"


def print_analysis(result: dict[str, Any], out: TextIO) -> None:
    """The ranked causes as a table, then each cause's summary, drivers and action."""
    console = _console(out)
    spans = result["spans"]
    console.print(
        f"[bold]{spans['failed']}[/bold] of {spans['total']} inference requests failed "
        f"between {result['window']['start']} and {result['window']['end']}."
    )
    causes = result["causes"]
    if not causes:
        console.print("No root cause stands out in this window.")
        return
    table = Table(show_lines=False)
    for column, justify in (
        ("#", "right"),
        ("cause", "left"),
        ("score", "right"),
        ("confidence", "left"),
        ("failed", "right"),
        ("GPUs", "left"),
        ("hosts", "left"),
        ("top driver", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column in ("cause", "GPUs"))  # type: ignore[arg-type]
    for rank, cause in enumerate(causes, 1):
        driver = cause["drivers"][0] if cause["drivers"] else None
        table.add_row(
            str(rank),
            cause["cause"],
            f"{cause['score']:.2f}",
            cause["confidence"],
            str(cause["failed_spans"]),
            ", ".join(_short(u) for u in cause["gpus"][:2])
            + (f" +{len(cause['gpus']) - 2}" if len(cause["gpus"]) > 2 else ""),
            ", ".join(cause["hosts"][:3]),
            f"{driver['attribute']}={driver['value']}" if driver else "",
        )
    console.print(table)
    for rank, cause in enumerate(causes, 1):
        info = CAUSES_BY_ID.get(cause["cause"])
        console.print(f"\n[bold]{rank}. {info.title if info else cause['cause']}[/bold] ({cause['confidence']})")
        console.print(cause["summary"], highlight=False)
        for driver in cause["drivers"][:5]:
            lift = f", lift {driver['lift']}" if driver["lift"] is not None else ""
            console.print(
                f"  driver {driver['attribute']}={driver['value']}: {100 * driver['failure_share']:.1f} % "
                f"of failures vs {100 * driver['baseline_share']:.1f} % of successes{lift}, "
                f"p={driver['p_value']:.2g}",
                highlight=False,
            )
        if info:
            console.print(f"  action: {info.action}", highlight=False)
        if cause["example_traces"]:
            console.print(f"  e.g. gpu-rca explain {cause['example_traces'][0]}", highlight=False)


def print_story(result: dict[str, Any], out: TextIO) -> None:
    """One request: outcome, stamps, its GPU's metrics around it, logs and kernel events, cause."""
    console = _console(out)
    span = result["span"]
    outcome = f"FAILED ({span['error_type'] or span['status']})" if span["failed"] else "succeeded"
    console.print(
        f"[bold]{span['name']}[/bold] in trace {span['trace_id']} {outcome} after "
        f"{span['duration_ms']:.0f} ms on {span['gpu_uuid'] or 'no GPU'} ({span['host'] or 'unknown host'}), "
        f"{span['start']} .. {span['end']}",
        highlight=False,
    )
    stamps = Table(title="GPU stamps", show_header=False)
    stamps.add_column("attribute")
    stamps.add_column("value")
    for key, value in span["stamps"].items():
        stamps.add_row(key, str(value))
    for key, value in span["attributes"].items():
        stamps.add_row(key, str(value))
    console.print(stamps)
    if result["metrics"]:
        metrics = Table(title="its GPU's metrics around it")
        metrics.add_column("metric")
        metrics.add_column("min", justify="right")
        metrics.add_column("max", justify="right")
        metrics.add_column("samples", justify="right")
        by_metric: dict[str, list[float]] = {}
        for point in result["metrics"]:
            by_metric.setdefault(point["metric"], []).append(point["value"])
        for name, values in by_metric.items():
            metrics.add_row(name, f"{min(values):g}", f"{max(values):g}", str(len(values)))
        console.print(metrics)
    for line in result["logs"]:
        console.print(
            f"  {line['ts']} {line['kind']} {line['severity'] or ''} {line['message'][:200]}", highlight=False
        )
    cause = result["cause"]
    if cause:
        console.print(
            f"\n[bold]cause: {cause['cause']}[/bold] ({cause['confidence']}): {cause['summary']}", highlight=False
        )
    elif span["failed"]:
        console.print("\nNo ranked cause explains this request.")
