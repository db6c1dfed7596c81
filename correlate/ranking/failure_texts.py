"""The OOM failures' own texts, parsed once per window into `rk_oom_text` (see error_text.py).

Read from the span's `exception` event (`exception.message`, kept whole by the collector), else from its
status message. Only OOM failures are read, at most `MAX_TEXTS` of them (a deterministic sample), so the
cost follows the failures, not the traffic.
"""

from __future__ import annotations

import duckdb

from gpu_rca.correlate.ranking.error_text import parse_oom
from gpu_rca.correlate.ranking.weights import MAX_OOM_TEXTS

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
