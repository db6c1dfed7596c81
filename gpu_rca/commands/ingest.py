"""`gpu-rca ingest [--db PATH] PATH...`: telemetry files and folders into the store, format detected by content."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from gpu_rca.commands.unit_option import parse_units, unit_option
from gpu_rca.schemas.errors import InputError, UsageError
from gpu_rca.schemas.timefmt import parse_instant_ns

if TYPE_CHECKING:
    from gpu_rca.correlate.ingest import IngestSummary


def _boot_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    ns = parse_instant_ns(value, "--boot-time")
    try:
        return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(microsecond=ns // 1000 % 1_000_000)
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"--boot-time: {value!r} is out of range") from None


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--db",
    "db_path",
    metavar="PATH",
    default=None,
    help="Store to write (default: $GPU_RCA_DB, else ./gpu-rca.duckdb).",
)
@click.option(
    "--host", default=None, help="Host of raw/`dmesg -T` kernel logs (journal and syslog lines name their own)."
)
@click.option(
    "--boot-time",
    default=None,
    metavar="T",
    help="Boot time (RFC 3339 or epoch seconds) for raw dmesg seconds-since-boot; needs --host.",
)
@click.option(
    "--tz", default=None, metavar="ZONE", help="IANA zone of kernel log times printed without one (default UTC)."
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Refuse a file that decompresses to more than N bytes (default 16 GiB).",
)
@click.option("--init", is_flag=True, help="Create the store in --db even if that file exists and is empty (0 bytes).")
@unit_option
@click.option(
    "--strict",
    is_flag=True,
    help="A JSON-lines file whose last line is cut off fails (nothing of it stored) instead of a warning.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON summary on stdout (the table still goes to stderr)."
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr (default: on a terminal, for large inputs)."
)
def ingest(
    paths: tuple[str, ...],
    db_path: str | None,
    host: str | None,
    boot_time: str | None,
    tz: str | None,
    max_bytes: int | None,
    strict: bool,
    as_json: bool,
    init: bool,
    progress: bool | None,
    units: tuple[str, ...],
) -> None:
    """Store telemetry files (OTLP JSON/protobuf, Prometheus, loguru, kernel logs; .gz/.zst) in the store."""
    from gpu_rca.correlate.ingest import IngestOptions, ingest_paths
    from gpu_rca.correlate.kernel_log.parse import resolve_tz
    from gpu_rca.correlate.readers.opening import DEFAULT_MAX_BYTES
    from gpu_rca.correlate.store import Store

    if tz is not None:
        resolve_tz(tz)  # a bad zone is a usage error before anything is read
    if boot_time is not None and host is None:
        raise UsageError("--boot-time needs --host (raw dmesg lines do not name their machine)")
    options = IngestOptions(
        host=host, boot_time=_boot_time(boot_time), tz=tz, max_bytes=max_bytes or DEFAULT_MAX_BYTES, strict=strict
    )
    rules = parse_units(units)
    with Store.open(db_path, init=init, units=rules) as store:
        summary = ingest_paths(store, paths, options, progress=progress)
    _print_summary(summary, store.path)
    if as_json:
        from gpu_rca.commands.analyze import dump

        dump(summary.as_dict(store.path))
    if summary.failed:
        count = len(summary.failed)
        raise InputError(
            f"{count} file{'s' if count > 1 else ''} could not be read; nothing of {'them' if count > 1 else 'it'} "
            "was stored (the other files were)"
        )


def _print_summary(summary: IngestSummary, db_path: str) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from gpu_rca.schemas.visible_text import visible

    # Off a terminal rich assumes 80 columns; a log file reads better with the whole row on one line.
    console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
    table = Table(title=Text(f"gpu-rca ingest → {visible(db_path)}"), title_justify="left")
    for column in ("file", "format", "result", "skipped / why"):
        table.add_column(column, overflow="fold")
    for report in summary.files:
        fmt = report.format or ""
        if report.compression:
            fmt = f"{fmt} ({report.compression})" if fmt else report.compression
        if report.status == "ingested":
            result = f"{report.stored} {report.kind} new, {report.duplicates} already stored"
            if report.rejected:
                result += f", {report.rejected} rejected"
            detail = "; ".join([f"{n} {why}" for why, n in report.skipped.items()] + list(report.notes[:3]))
            style = ""
        else:
            result, detail = report.status, report.reason
            style = "red" if report.status == "failed" else "dim"
        # Text cells: paths and reasons may hold brackets that rich would read as markup, and reasons quote
        # lines of the file, escape sequences included.
        table.add_row(*(Text(visible(cell, layout=False)) for cell in (report.path, fmt, result, detail)), style=style)
    console.print(table)
    totals: dict[str, int] = {
        kind: 0 for kind in ("spans", "logs", "samples", "kernel events") if any(r.kind == kind for r in summary.files)
    }
    for report in summary.files:
        if report.status == "ingested":
            totals[report.kind] = totals.get(report.kind, 0) + report.stored
    by_status = {s: sum(1 for f in summary.files if f.status == s) for s in ("ingested", "skipped", "failed")}
    stored = ", ".join(f"{n} {kind}" for kind, n in totals.items()) or "nothing new"
    console.print(
        f"{by_status['ingested']} ingested ({stored}), {by_status['skipped']} skipped, {by_status['failed']} failed",
        markup=False,
    )
    for report in summary.files:
        for warning in report.warnings:
            console.print(f"warning: {report.path}: {warning}", markup=False, soft_wrap=True)
    if summary.traces_without_inference:
        from gpu_rca.correlate.store.records import traces_without_inference_message

        console.print(
            f"warning: {traces_without_inference_message(summary.traces_without_inference)}",
            markup=False,
            soft_wrap=True,
        )
    for report in summary.failed:
        console.print(visible(f"{report.path}: {report.reason}", layout=False), markup=False, soft_wrap=True)
