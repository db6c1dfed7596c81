"""The OOM failures' own texts, parsed once per window into `rk_oom_text` (see error_text.py).

Read from the span's `exception` event (`exception.message`, kept whole by the collector), else from its
status message. Only OOM failures are read, at most `MAX_TEXTS` of them (a deterministic sample), so the
cost follows the failures, not the traffic.
"""

from __future__ import annotations

from collections import Counter

import duckdb

from gpu_rca.correlate.ranking.error_text import parse_cuda_error, parse_oom
from gpu_rca.correlate.ranking.weights import MAX_ERROR_TEXTS, MAX_OOM_TEXTS

_COLUMNS = (
    ("trace_id", "VARCHAR"),
    ("span_id", "VARCHAR"),
    ("oom_requested_bytes", "DOUBLE"),
    ("oom_total_bytes", "DOUBLE"),
    ("oom_free_bytes", "DOUBLE"),
    ("oom_others_bytes", "DOUBLE"),
    ("oom_process_bytes", "DOUBLE"),
    ("oom_allocated_bytes", "DOUBLE"),
    ("oom_unallocated_bytes", "DOUBLE"),
)
#: rk_spans columns filled from the OOM text (NULL for other spans).
OOM_COLUMNS = tuple(name for name, _ in _COLUMNS[2:])


def load_oom_texts(con: duckdb.DuckDBPyConnection, spans_sql: str, params: list[object], has_events: bool) -> int:
    """Create `rk_oom_text` from the OOM failures `spans_sql` selects (trace_id, span_id, status_message)."""
    con.execute("CREATE OR REPLACE TEMP TABLE rk_oom_text (" + ", ".join(f"{n} {t}" for n, t in _COLUMNS) + ")")
    event = (
        "(SELECT any_value(json_extract_string(e.attributes, '$.\"exception.message\"'))"
        " FROM span_events e WHERE e.trace_id = s.trace_id AND e.span_id = s.span_id AND e.name = 'exception')"
        if has_events
        else "NULL"
    )
    rows = con.execute(
        f"SELECT s.trace_id, s.span_id, coalesce({event}, s.status_message) FROM ({spans_sql}) s"
        f" ORDER BY hash(s.span_id) LIMIT {MAX_OOM_TEXTS}",
        params,
    ).fetchall()
    out = []
    for trace_id, span_id, text in rows:
        oom = parse_oom(text)
        if oom is None:
            continue
        out.append(
            (
                trace_id,
                span_id,
                oom.requested,
                oom.total,
                oom.free,
                oom.others_total,
                oom.process,
                oom.allocated,
                oom.unallocated,
            )
        )
    if out:
        con.executemany(f"INSERT INTO rk_oom_text VALUES ({', '.join('?' * len(_COLUMNS))})", out)
    return len(out)


def cuda_errors(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, int]]]:
    """Per GPU, the CUDA error strings its CUDA and lost-GPU failures state (`an illegal memory access was
    encountered`, an NCCL watchdog's too), most frequent first; from `rk_spans`' status messages."""
    rows = con.execute(
        "SELECT coalesce(gpu_uuid, ''), status_message FROM rk_spans WHERE failed AND family IN ('cuda', 'lost')"
        f" AND status_message IS NOT NULL ORDER BY hash(span_id) LIMIT {MAX_ERROR_TEXTS}"
    ).fetchall()
    counts: dict[str, Counter[str]] = {}
    for gpu, text in rows:
        found = parse_cuda_error(text)
        if found is not None:
            counts.setdefault(gpu, Counter())[found.error] += 1
    return {gpu: c.most_common() for gpu, c in counts.items()}
