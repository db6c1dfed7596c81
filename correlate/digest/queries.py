"""Store reads the digest needs beyond the analysis: failure times, metric windows, logs, kernel events.

Every function takes an open DuckDB connection on a store of docs/contracts.md §7 and a window in Unix ns; values
coming back are plain Python, ready for plotting or rendering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

#: A failed inference span: the ERROR status (docs/contracts.md §7) on a span that carries the GPU stamps.
FAILED = "is_inference AND status = 'ERROR'"


@dataclass(frozen=True)
class GpuInfo:
    """A GPU as the store's inventory knows it."""

    uuid: str
    host: str | None
    index: int | None
    name: str | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class Failure:
    """One failed inference span, reduced to what plots and headlines need."""

    end_ns: int
    gpu_uuid: str | None
    host: str | None
    error_type: str | None
    trace_id: str


def gpu_inventory(con: duckdb.DuckDBPyConnection) -> dict[str, GpuInfo]:
    """Every GPU the store knows, by UUID (the `gpus` table, completed from span stamps)."""
    rows = con.execute(
        """
        SELECT gpu_uuid, any_value(host), any_value(gpu_index), any_value(name), max(memory_total_bytes)
        FROM (
            SELECT gpu_uuid, host, gpu_index, name, memory_total_bytes FROM gpus
            UNION ALL
            SELECT DISTINCT gpu_uuid, host, gpu_index, gpu_name, gpu_memory_total FROM spans
            WHERE gpu_uuid IS NOT NULL
        ) WHERE gpu_uuid IS NOT NULL
        GROUP BY gpu_uuid ORDER BY 2, 3, 1
        """
    ).fetchall()
    return {r[0]: GpuInfo(r[0], r[1], None if r[2] is None else int(r[2]), r[3], r[4]) for r in rows}


def failures(con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int, gpus: Sequence[str] = ()) -> list[Failure]:
    """Failed inference spans ending in [start_ns, end_ns], oldest first, optionally on given GPUs only."""
    sql = f"SELECT end_ns, gpu_uuid, host, error_type, trace_id FROM spans WHERE {FAILED} AND end_ns BETWEEN ? AND ?"
    params: list[object] = [start_ns, end_ns]
    if gpus:
        sql += " AND list_contains(?, gpu_uuid)"
        params.append(list(gpus))
    rows = con.execute(sql + " ORDER BY end_ns", params).fetchall()
    return [Failure(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def requests_per_bucket(
    con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int, bucket_ns: int
) -> list[tuple[int, int, int]]:
    """(bucket start ns, inference spans, failed ones) per bucket of `bucket_ns`, by span end."""
    rows = con.execute(
        """
        SELECT (end_ns // ?) * ? AS bucket, count(*), count(*) FILTER (WHERE status = 'ERROR')
        FROM spans WHERE is_inference AND end_ns BETWEEN ? AND ?
        GROUP BY bucket ORDER BY bucket
        """,
        [bucket_ns, bucket_ns, start_ns, end_ns],
    ).fetchall()
    return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]


def metric_series(
    con: duckdb.DuckDBPyConnection, metric: str, gpus: Sequence[str], start_ns: int, end_ns: int
) -> dict[str, tuple[list[int], list[float]]]:
    """Samples of one canonical metric per GPU in the window: uuid -> (ts_ns list, value list)."""
    rows = con.execute(
        """
        SELECT gpu_uuid, ts_ns, value FROM metric_samples
        WHERE metric = ? AND list_contains(?, gpu_uuid) AND ts_ns BETWEEN ? AND ?
        ORDER BY gpu_uuid, ts_ns
        """,
        [metric, list(gpus), start_ns, end_ns],
    ).fetchall()
    series: dict[str, tuple[list[int], list[float]]] = {}
    for uuid, ts_ns, value in rows:
        if value is None:
            continue
        times, values = series.setdefault(uuid, ([], []))
        times.append(int(ts_ns))
        values.append(float(value))
    return series


def log_lines(
    con: duckdb.DuckDBPyConnection,
    *,
    trace_ids: Sequence[str],
    hosts: Sequence[str],
    start_ns: int,
    end_ns: int,
    limit: int = 8,
) -> list[tuple[int, str, str | None, str | None, str]]:
    """Log records of the given traces first, then WARNING-or-worse records on the hosts, in the window."""
    rows = con.execute(
        """
        SELECT ts_ns, coalesce(severity, ''), host, trace_id, coalesce(body, '') FROM logs
        WHERE ts_ns BETWEEN ? AND ?
          AND (list_contains(?, trace_id)
               OR (list_contains(?, host)
                   AND upper(coalesce(severity, '')) IN ('WARN', 'WARNING', 'ERROR', 'CRITICAL', 'FATAL')))
        ORDER BY list_contains(?, trace_id) DESC, ts_ns
        LIMIT ?
        """,
        [start_ns, end_ns, list(trace_ids), list(hosts), list(trace_ids), limit],
    ).fetchall()
    return [(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def kernel_events(
    con: duckdb.DuckDBPyConnection,
    *,
    gpus: Sequence[str],
    hosts: Sequence[str],
    start_ns: int,
    end_ns: int,
    limit: int = 8,
) -> list[tuple[int, str | None, str | None, int | None, str]]:
    """Kernel XID events on the given GPUs (or, when unmatched to a GPU, on the hosts) in the window."""
    rows = con.execute(
        """
        SELECT ts_ns, host, gpu_uuid, xid, coalesce(message, '') FROM kernel_events
        WHERE ts_ns BETWEEN ? AND ?
          AND (list_contains(?, gpu_uuid) OR (gpu_uuid IS NULL AND list_contains(?, host)))
        ORDER BY ts_ns LIMIT ?
        """,
        [start_ns, end_ns, list(gpus), list(hosts), limit],
    ).fetchall()
    return [(int(r[0]), r[1], r[2], None if r[3] is None else int(r[3]), r[4]) for r in rows]


def attribute_outcomes(
    con: duckdb.DuckDBPyConnection, attribute: str, start_ns: int, end_ns: int, error_type: str | None = None
) -> list[tuple[str, int, int]]:
    """(value, inference spans, failed ones) per value of a span attribute in the window.

    With `error_type`, only failures of that type count (an OOM cap should ignore unrelated timeouts).
    """
    failed = "status = 'ERROR'" + (" AND error_type = ?" if error_type else "")
    # Placeholders in SQL-text order: the FILTER clause's comes before the subquery's.
    params: list[object] = ([error_type] if error_type else []) + [f'$."{attribute}"', start_ns, end_ns]
    rows = con.execute(
        f"""
        SELECT value, count(*), count(*) FILTER (WHERE {failed}) FROM (
            SELECT json_extract_string(attributes, ?) AS value, status, error_type FROM spans
            WHERE is_inference AND end_ns BETWEEN ? AND ?
        ) WHERE value IS NOT NULL GROUP BY value
        """,
        params,
    ).fetchall()
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]
