"""The ranking pipeline on an open store connection: window → spans → signals → hypotheses → ranked causes."""

from __future__ import annotations

import duckdb

from gpu_rca.correlate.ranking import causes
from gpu_rca.correlate.ranking import drivers as drv
from gpu_rca.correlate.ranking.failure_texts import cuda_errors
from gpu_rca.correlate.ranking.footprint import footprints
from gpu_rca.correlate.ranking.latency import detect_slow
from gpu_rca.correlate.ranking.rank import rank
from gpu_rca.correlate.ranking.signals import Group, gpu_signals
from gpu_rca.correlate.ranking.window import MINUTE_NS, Filters, SpanSet, load_spans, resolve_window
from gpu_rca.correlate.store.query import one_row
from gpu_rca.schemas.results import AnalyzeResult, CauseResult

DEFAULT_LOOKBACK_NS = 15 * MINUTE_NS


def analyze_connection(
    con: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    service: str | None = None,
    host: str | None = None,
    gpu: str | None = None,
    slow_ns: int | None = None,
    slow_auto: bool = True,
    lookback_ns: int = DEFAULT_LOOKBACK_NS,
    warnings: list[str] | None = None,
) -> AnalyzeResult:
    """The `analyze --json` document (docs/contracts.md §3) for the store behind `con` (a connection or a cursor).

    `slow_ns` counts spans slower than it as failed; else, with `slow_auto`, latency detection (latency.py)
    finds the spans far slower than comparable requests were before. Temp tables prefixed `rk_` are created
    on `con`; give it a cursor of its own when it is shared.
    """
    flt = Filters(service=service, host=host, gpu=gpu, slow_ns=slow_ns)
    if slow_auto and not slow_ns:
        # Only a window with slow spans pays for looking them up in every later scan.
        flt = Filters(service=service, host=host, gpu=gpu, slow_auto=detect_slow(con, flt, since_ns, until_ns) > 0)
    window, _ = resolve_window(con, since_ns, until_ns, lookback_ns, flt)
    spans = load_spans(con, window, flt)
    notes = list(warnings or []) + spans.warnings
    causes: list[CauseResult] = []
    if spans.failed:
        causes, unexplained = _rank(con, spans)
        if unexplained:
            notes.append(f"{unexplained} of {spans.failed} failed spans match no cause (background errors)")
        if not causes:
            notes.append("failures look like background noise: no cause stands out")
    else:
        notes.append("no failed inference spans in the window")
    return {
        "window": window.as_dict(),
        "spans": {"total": spans.total, "failed": spans.failed, "slow": spans.slow},
        "warnings": notes,
        "causes": causes,
    }


def _rank(con: duckdb.DuckDBPyConnection, spans: SpanSet) -> tuple[list[CauseResult], int]:
    sig = gpu_signals(con, spans)
    drv.build_attribute_values(con)
    families = sorted(sig.fleet_failed)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rk_family_groups AS SELECT idx, list_position(?, family) AS grp"
        " FROM rk_spans WHERE failed",
        [families],
    )
    family_drivers: dict[str, list[drv.DriverRow]] = {f: [] for f in families}
    for row in drv.driver_rows(con, "rk_family_groups"):
        family_drivers[families[row.group - 1]].append(row)
    traffic = _traffic(con, spans, sig.fleet_failed.get("slow"))
    hyps = causes.build(sig, family_drivers, spans, traffic, footprints(con, spans, sig), cuda_errors(con))
    return rank(con, spans, hyps)


def _traffic(con: duckdb.DuckDBPyConnection, spans: SpanSet, slow: Group | None) -> tuple[float, float] | None:
    """Requests per minute around the slow failures' onset, and before it."""
    if slow is None or slow.onset_ns is None:
        return None
    onset = slow.onset_ns
    lead = 5 * MINUTE_NS
    before_minutes = (onset - lead - spans.window.start_ns) / MINUTE_NS
    if before_minutes < 2:
        return None
    # rk_spans keeps one success in `success_stride`: weigh them back to estimate the request rate.
    during, before = one_row(
        con,
        "SELECT sum(CASE WHEN failed THEN 1 ELSE $stride END) FILTER (WHERE start_ns >= $lo AND start_ns < $hi),"
        " sum(CASE WHEN failed THEN 1 ELSE $stride END) FILTER (WHERE start_ns < $lo) FROM rk_spans",
        {"stride": spans.success_stride, "lo": onset - lead, "hi": onset + lead},
    )
    during, before = during or 0, before or 0
    return during / 10.0, before / before_minutes
