"""`explain`: one request's story — its stamps, its latency against comparable requests, its GPU's metrics around
it, its logs and kernel events, its cause."""

from __future__ import annotations

import json
import re
from typing import Any

import duckdb

from gpu_rca.correlate.ranking.comparable import comparable_latency
from gpu_rca.correlate.ranking.run import DEFAULT_LOOKBACK_NS, analyze_connection
from gpu_rca.correlate.ranking.window import MINUTE_NS, table_columns
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.attributes import STAMPS
from gpu_rca.schemas.errors import InputError, UsageError
from gpu_rca.schemas.results import CauseResult, ExplainResult, LogLine, MetricPoint, SpanStory
from gpu_rca.schemas.timefmt import rfc3339
from gpu_rca.schemas.xid import xid_info

#: Metrics shown around the request, in the order a person reads them.
STORY_METRICS = (
    m.GPU_UTIL,
    m.GPU_TEMP,
    m.SM_CLOCK,
    m.POWER_USAGE,
    m.ENFORCED_POWER_LIMIT,
    m.FB_USED,
    m.CLOCKS_EVENT_REASONS,
)
BEFORE_NS = 5 * MINUTE_NS
AFTER_NS = MINUTE_NS
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def explain_connection(con: duckdb.DuckDBPyConnection, trace_id: str) -> ExplainResult:
    """The story of the request in trace `trace_id` (32 hex digits).

    Its inference span when it has one; otherwise (a request refused or failed before it reached a GPU)
    its first span, with a warning that says so, and no cause.
    """
    trace_id = trace_id.strip().lower()
    if not _TRACE_ID.match(trace_id):
        raise UsageError(f"not a trace id: {trace_id!r} (expected 32 hex digits)")
    columns = table_columns(con, "spans")
    if not columns:
        raise InputError("the store has no spans table; run `gpu-rca ingest` first")
    stamp_cols = [s for s in STAMPS if s.column in columns]
    select = ", ".join(
        [
            "trace_id",
            "span_id",
            "name",
            "service",
            "host",
            "start_ns",
            "end_ns",
            "status",
            "is_inference",
            "attributes",
            "resource",
        ]
        + [s.column for s in stamp_cols]
    )
    rows = con.execute(
        f"SELECT {select} FROM spans WHERE trace_id = ?"
        " ORDER BY is_inference DESC, coalesce(parent_span_id, '') = '' DESC, start_ns LIMIT 1",
        [trace_id],
    ).fetchall()
    if not rows:
        raise InputError(f"unknown trace id {trace_id}: no span of it is in the store")
    row = dict(zip([c.strip() for c in select.split(",")], rows[0]))
    reached_gpu = bool(row["is_inference"])
    stamps = {s.attribute: _plain(row[s.column]) for s in stamp_cols if row[s.column] is not None}
    failed = row["status"] == "ERROR"
    span: SpanStory = {
        "trace_id": trace_id,
        "span_id": row["span_id"],
        "name": row["name"],
        "service": row["service"],
        "host": row["host"],
        "gpu_uuid": row.get("gpu_uuid"),
        "start": rfc3339(row["start_ns"]) or "",
        "end": rfc3339(row["end_ns"]) or "",
        "duration_ms": round((row["end_ns"] - row["start_ns"]) / 1e6, 3),
        "status": row["status"],
        "error_type": row.get("error_type"),
        "failed": failed,
        "slow": False,
        "stamps": stamps,
        "attributes": _json(row["attributes"]) | _json(row["resource"]),
    }
    warnings: list[str] = []
    if not reached_gpu:
        warnings.append(
            f"the request never reached a GPU: trace {trace_id} has no inference span (no span"
            f" carries gpu.telemetry.source); this is its root span, {row['name']!r}"
        )
    metrics = _metrics(con, row) if row.get("gpu_uuid") else []
    if row.get("gpu_uuid") and not metrics:
        warnings.append("no metric samples of this GPU around the request")
    logs = _logs(con, row)
    cause = None
    latency = None
    if reached_gpu:
        cause, slow = _cause(con, row, warnings, failed)
        if slow:
            span["failed"] = True
            span["slow"] = True
            warnings.insert(0, "a slow request: far slower than comparable requests were before (latency detection)")
        # After _cause: its ranking leaves latency detection's incident onsets on this connection.
        latency = comparable_latency(con, trace_id, row["span_id"])
    return {
        "trace_id": trace_id,
        "span": span,
        "latency": latency,
        "metrics": metrics,
        "logs": logs,
        "cause": cause,
        "warnings": warnings,
    }


def _plain(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _json(text: str | None) -> dict[str, object]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _metrics(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> list[MetricPoint]:
    if not table_columns(con, "metric_samples"):
        return []
    names = ", ".join(f"'{name}'" for name in STORY_METRICS)
    points = con.execute(
        f"SELECT metric, ts_ns, value FROM metric_samples WHERE gpu_uuid = ? AND metric IN ({names})"
        " AND ts_ns BETWEEN ? AND ? ORDER BY metric, ts_ns",
        [row["gpu_uuid"], row["start_ns"] - BEFORE_NS, row["end_ns"] + AFTER_NS],
    ).fetchall()
    return [{"metric": metric, "ts": rfc3339(ts) or "", "value": value} for metric, ts, value in points]


def _logs(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> list[LogLine]:
    lines: list[tuple[int, LogLine]] = []
    if table_columns(con, "logs"):
        for ts, severity, body in con.execute(
            "SELECT ts_ns, severity, body FROM logs WHERE trace_id = ? ORDER BY ts_ns LIMIT 200", [row["trace_id"]]
        ).fetchall():
            lines.append((ts, {"ts": rfc3339(ts) or "", "kind": "log", "severity": severity, "message": body or ""}))
    if row.get("gpu_uuid") and table_columns(con, "kernel_events"):
        for ts, xid, message in con.execute(
            "SELECT ts_ns, xid, message FROM kernel_events WHERE gpu_uuid = ? AND ts_ns BETWEEN ? AND ?"
            " ORDER BY ts_ns LIMIT 200",
            [row["gpu_uuid"], row["start_ns"] - 2 * BEFORE_NS, row["end_ns"] + AFTER_NS],
        ).fetchall():
            text = f"XID {xid} ({xid_info(xid).meaning}): {message}" if xid is not None else (message or "")
            lines.append((ts, {"ts": rfc3339(ts) or "", "kind": "kernel", "severity": None, "message": text}))
    return [line for _, line in sorted(lines, key=lambda item: item[0])]


def _cause(
    con: duckdb.DuckDBPyConnection, row: dict[str, Any], warnings: list[str], errored: bool
) -> tuple[CauseResult | None, bool]:
    """The cause `analyze` gives this request, ranking the window around it as `analyze` would; and whether
    latency detection counted it as a slow failure (it did not error)."""
    result = analyze_connection(
        con, since_ns=row["end_ns"] - 2 * DEFAULT_LOOKBACK_NS, until_ns=row["end_ns"] + DEFAULT_LOOKBACK_NS
    )
    key = [row["trace_id"], row["span_id"]]
    flagged = con.execute("SELECT failed FROM rk_spans WHERE trace_id = ? AND span_id = ?", key).fetchone()
    slow = not errored and bool(flagged and flagged[0])
    if not (errored or slow):
        return None, False
    hit = (
        con.execute(
            "SELECT a.cause FROM rk_assign a JOIN rk_spans s USING (idx) WHERE s.trace_id = ? AND s.span_id = ?", key
        ).fetchone()
        if result["causes"]
        else None
    )
    if hit is None:
        warnings.append("no ranked cause explains this request (a background error?)")
        return None, slow
    return next((c for c in result["causes"] if c["cause"] == hit[0]), None), slow


__all__ = ["explain_connection"]
