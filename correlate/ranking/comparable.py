"""How slow one request was against comparable requests, and which part of its latency grew (for `explain`).

Comparable requests are its stratum (latency.py: same service, model, input size and GPU model). The
baseline is the one latency detection uses: the stratum's successful inference spans in the hour before
its onset when the stratum is in a latency incident, else the hour before the request. A request's
latency is split as the ranking splits it (causes/base.py `LATENCY_PARTS`): queue time
(`inference.queue_ms`), GPU time (the rest of the inference span), and the time of the trace's other
spans that do not enclose it (preprocess, decode).
"""

from __future__ import annotations

import duckdb

from gpu_rca.correlate.ranking.causes.base import LATENCY_PARTS
from gpu_rca.correlate.ranking.latency import BASELINE_MIN_SPANS, BASELINE_NS, stratum_sql
from gpu_rca.correlate.ranking.weights import UNCHANGED
from gpu_rca.correlate.ranking.window import MINUTE_NS, table_columns
from gpu_rca.schemas.results import LatencyPart, RequestLatency
from gpu_rca.schemas.timefmt import rfc3339

_LABELS = dict(LATENCY_PARTS)
#: The parts in the order they are told, with the SQL of each over `dur_ms`, `queue_ms` and `other_ms`.
_PARTS = (
    (_LABELS["done_queue_ms"], "queue_ms"),
    (_LABELS["gpu_ms"], "dur_ms - coalesce(queue_ms, 0)"),
    (_LABELS["other_ms"], "other_ms"),
)


def _onset_ns(con: duckdb.DuckDBPyConnection, stratum: int, minute: int) -> int | None:
    """The start of the stratum's latency incident as detection found it on this connection, if any."""
    known = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = 'rk_slow_cells'"
    ).fetchone()
    if not known or not known[0]:
        return None
    row = con.execute(
        "SELECT min(onset) FROM rk_slow_cells WHERE stratum = ? AND onset <= ?", [stratum, minute]
    ).fetchone()
    return int(row[0]) * MINUTE_NS if row and row[0] is not None else None


def _requests(stratum: str, queue: str, where: str) -> str:
    """SQL of the successful inference spans matching `where`: stratum, times, and the parts of their latency."""
    return f"""
      WITH s AS (
        SELECT {stratum} AS stratum, trace_id, start_ns, end_ns, (end_ns - start_ns) / 1e6 AS dur_ms,
               {queue} AS queue_ms
        FROM spans WHERE is_inference AND status <> 'ERROR' AND {where})
      SELECT s.*, (SELECT sum(c.end_ns - c.start_ns) / 1e6 FROM spans c
                   WHERE c.trace_id = s.trace_id AND NOT c.is_inference
                     AND NOT (c.start_ns <= s.start_ns AND c.end_ns >= s.end_ns)) AS other_ms
      FROM s"""


def comparable_latency(con: duckdb.DuckDBPyConnection, trace_id: str, span_id: str) -> RequestLatency | None:
    """The request's latency against its stratum's baseline; None when it errored or has too few comparables."""
    columns = table_columns(con, "spans")
    stratum = stratum_sql(columns)
    queue = "inference_queue_ms" if "inference_queue_ms" in columns else "NULL"
    parts_sql = ", ".join(sql for _, sql in _PARTS)
    row = con.execute(
        f"SELECT stratum, end_ns, dur_ms, {parts_sql} FROM ({_requests(stratum, queue, 'trace_id = ? AND span_id = ?')})",
        [trace_id, span_id],
    ).fetchone()
    if row is None:
        return None
    key, end_ns, dur_ms, *mine = row
    onset = _onset_ns(con, key, end_ns // MINUTE_NS)
    until = onset if onset is not None else end_ns - int(dur_ms * 1e6)
    medians = ", ".join(f"median({sql})" for _, sql in _PARTS)
    base = con.execute(
        f"SELECT count(*), min(end_ns), max(end_ns), median(dur_ms), quantile_cont(dur_ms, 0.99), {medians}"
        f" FROM ({_requests(stratum, queue, f'{stratum} = ? AND end_ns >= ? AND end_ns < ?')})",
        [key, until - BASELINE_NS, until],
    ).fetchone()
    if base is None or base[0] < BASELINE_MIN_SPANS or not base[3]:
        return None
    count, first_ns, last_ns, median, p99, *before = base
    parts: list[LatencyPart] = []
    for (label, _), now, then in zip(_PARTS, mine, before):
        if now is None or then is None:
            continue
        factor = max(now, 1.0) / max(then, 1.0)
        change = "grew" if factor > UNCHANGED else "shrank" if factor < 1 / UNCHANGED else "unchanged"
        parts.append(
            {
                "part": label,
                "ms": round(now, 1),
                "baseline_ms": round(then, 1),
                "factor": round(factor, 2),
                "change": change,
            }
        )
    return {
        "duration_ms": round(dur_ms, 1),
        "baseline_median_ms": round(median, 1),
        "baseline_p99_ms": round(p99, 1),
        "factor": round(dur_ms / median, 2),
        "comparable_requests": int(count),
        "baseline_start": rfc3339(first_ns) or "",
        "baseline_end": rfc3339(last_ns) or "",
        "grew": [p["part"] for p in parts if p["change"] == "grew"],
        "parts": parts,
    }


__all__ = ["comparable_latency"]
