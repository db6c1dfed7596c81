"""Readable renderings of `analyze` and `explain` results (rich tables), for people at a terminal."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from gpu_rca.schemas.causes import CAUSES_BY_ID
from gpu_rca.schemas.visible_text import cut, markup

#: Widest a table cell of traffic text gets before it is cut (at a safe point).
CELL_CHARS = 60


class _PipeConsole(Console):
    """A console whose closed pipe (`gpu-rca analyze | head`) reaches `gpu_rca.cli.main`, which exits quietly
    with 0 (rich itself would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console_for(out: TextIO) -> Console:
    probe = Console(file=out)
    return _PipeConsole(file=out, width=probe.width if probe.is_terminal else 140)


def short_id(uuid: str) -> str:
    return cut(uuid, 14)


def plain_cell(value: object) -> str:
    """A table cell of traffic text: visible, cut at a safe point, Rich markup escaped."""
    return markup(cut(value, CELL_CHARS))


def print_analysis(result: dict[str, Any], out: TextIO) -> None:
    """The ranked causes as a table, then each cause's summary, drivers and action."""
    console = console_for(out)
    spans = result["spans"]
    console.print(
        f"[bold]{spans['failed']}[/bold] of {spans['total']} inference requests failed "
        f"between {markup(result['window']['start'])} and {markup(result['window']['end'])}."
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
            plain_cell(cause["cause"]),
            f"{cause['score']:.2f}",
            plain_cell(cause["confidence"]),
            str(cause["failed_spans"]),
            markup(", ".join(short_id(u) for u in cause["gpus"][:2]))
            + (f" +{len(cause['gpus']) - 2}" if len(cause["gpus"]) > 2 else ""),
            plain_cell(", ".join(cause["hosts"][:3])),
            plain_cell(f"{driver['attribute']}={driver['value']}") if driver else "",
        )
    console.print(table)
    for rank, cause in enumerate(causes, 1):
        info = CAUSES_BY_ID.get(cause["cause"])
        title = markup(info.title if info else cause["cause"])
        console.print(f"\n[bold]{rank}. {title}[/bold] ({markup(cause['confidence'])})")
        console.print(markup(cause["summary"]), highlight=False)
        for driver in cause["drivers"][:5]:
            lift = f", lift {driver['lift']}" if driver["lift"] is not None else ""
            console.print(
                f"  driver {markup(driver['attribute'])}={markup(driver['value'])}: {100 * driver['failure_share']:.1f} % "
                f"of failures vs {100 * driver['baseline_share']:.1f} % of successes{lift}, "
                f"p={driver['p_value']:.2g}",
                highlight=False,
            )
        if info:
            console.print(f"  action: {markup(info.action)}", highlight=False)
        if cause["example_traces"]:
            console.print(f"  e.g. gpu-rca explain {markup(cause['example_traces'][0])}", highlight=False)


def describe_latency(latency: dict[str, Any]) -> str:
    """How slow a request was against comparable requests, and which part of its latency grew."""
    text = (
        f"{latency['duration_ms']:.0f} ms, ×{latency['factor']:g} the median of {latency['comparable_requests']} "
        "comparable requests before it (same service, model, input size and GPU model, "
        f"{latency['baseline_start']} .. {latency['baseline_end']}: median {latency['baseline_median_ms']:.0f} ms, "
        f"p99 {latency['baseline_p99_ms']:.0f} ms)"
    )
    told = []
    for part in latency["parts"]:
        change = f"{part['baseline_ms']:.0f} ms → {part['ms']:.0f} ms"
        if part["change"] == "unchanged":
            told.append(f"{part['part']} unchanged ({change})")
        else:
            told.append(f"{part['part']} {change} (×{part['factor']:g})")
    return text + ("; " + "; ".join(told) if told else "")


def print_story(result: dict[str, Any], out: TextIO) -> None:
    """One request: outcome, stamps, its GPU's metrics around it, logs and kernel events, cause."""
    console = console_for(out)
    span = result["span"]
    outcome = "was SLOW" if span["slow"] else "succeeded"
    if span["failed"] and not span["slow"]:
        outcome = f"FAILED ({span['error_type'] or span['status']})"
    console.print(
        f"[bold]{markup(span['name'])}[/bold] in trace {markup(span['trace_id'])} {markup(outcome)} after "
        f"{span['duration_ms']:.0f} ms on {markup(span['gpu_uuid'] or 'no GPU')} "
        f"({markup(span['host'] or 'unknown host')}), {markup(span['start'])} .. {markup(span['end'])}",
        highlight=False,
    )
    if result.get("latency"):
        label = "slow" if span["slow"] else "latency"
        console.print(f"[bold]{label}:[/bold] {markup(describe_latency(result['latency']))}", highlight=False)
    stamps = Table(title="GPU stamps", show_header=False)
    stamps.add_column("attribute")
    stamps.add_column("value")
    for key, value in span["stamps"].items():
        stamps.add_row(plain_cell(key), plain_cell(value))
    for key, value in span["attributes"].items():
        stamps.add_row(plain_cell(key), plain_cell(value))
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
            metrics.add_row(plain_cell(name), f"{min(values):g}", f"{max(values):g}", str(len(values)))
        console.print(metrics)
    for line in result["logs"]:
        console.print(
            markup(f"  {line['ts']} {line['kind']} {line['severity'] or ''} {line['message'][:200]}", layout=False),
            highlight=False,
        )
    cause = result["cause"]
    if cause:
        console.print(
            f"\n[bold]cause: {markup(cause['cause'])}[/bold] ({markup(cause['confidence'])}): {markup(cause['summary'])}",
            highlight=False,
        )
    elif span["failed"]:
        console.print("\nNo ranked cause explains this request.")
