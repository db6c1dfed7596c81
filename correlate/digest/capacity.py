"""Capacity questions answered from stored spans and samples: busiest hours, memory cost, idle GPUs."""

from __future__ import annotations

from typing import Any

import duckdb

from gpu_rca.correlate.digest.actions import gpu_label
from gpu_rca.correlate.digest.queries import GpuInfo
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as M
from gpu_rca.schemas.timefmt import rfc3339

_HOUR_NS = 3600 * 10**9
_MIB = 1024 * 1024
#: A GPU whose mean utilization stays under this, or that served no request, sat idle.
IDLE_UTILIZATION_PCT = 5.0


def capacity(
    con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int, inventory: dict[str, GpuInfo]
) -> dict[str, Any]:
    """The capacity section: over the 24 h ending at `end_ns` (or the analysis window, if longer)."""
    since_ns = min(start_ns, end_ns - 24 * _HOUR_NS)
    return {
        "window": {"start": rfc3339(since_ns), "end": rfc3339(end_ns)},
        "busiest_hours": busiest_hours(con, since_ns, end_ns),
        "memory_by_workload": memory_by_workload(con, since_ns, end_ns),
        "gpus": gpu_usage(con, since_ns, end_ns, inventory),
    }


def busiest_hours(con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int, top: int = 5) -> list[dict[str, Any]]:
    """The hours with the most inference requests: requests, failures, peak per minute, p95 latency."""
    rows = con.execute(
        """
        WITH s AS (
            SELECT start_ns // ? * ? AS hour_ns, start_ns // 60000000000 AS minute, status,
                   (end_ns - start_ns) / 1e6 AS latency_ms
            FROM spans WHERE is_inference AND start_ns BETWEEN ? AND ?
        ), per_minute AS (SELECT hour_ns, minute, count(*) AS n FROM s GROUP BY ALL)
        SELECT s.hour_ns, count(*), count(*) FILTER (WHERE status = 'ERROR'),
               quantile_cont(latency_ms, 0.95),
               (SELECT max(n) FROM per_minute p WHERE p.hour_ns = s.hour_ns)
        FROM s GROUP BY s.hour_ns ORDER BY 2 DESC, 1 LIMIT ?
        """,
        [_HOUR_NS, _HOUR_NS, start_ns, end_ns, top],
    ).fetchall()
    return [
        {
            "hour": rfc3339(int(h)),
            "requests": int(n),
            "failed": int(f),
            "p95_latency_ms": None if p95 is None else round(float(p95), 1),
            "peak_per_minute": int(peak or 0),
        }
        for h, n, f, p95, peak in rows
    ]


def memory_by_workload(con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """GPU memory a request costs by task type and input size (the process's own peak, MiB), and its OOMs."""
    rows = con.execute(
        f"""
        WITH s AS (
            SELECT json_extract_string(attributes, ?) AS task_type,
                   TRY_CAST(json_extract_string(attributes, ?) AS DOUBLE) AS input_size,
                   gpu_memory_process_max / {_MIB} AS mib, error_type
            FROM spans WHERE is_inference AND start_ns BETWEEN ? AND ?
        )
        SELECT task_type, input_size, count(*), median(mib), quantile_cont(mib, 0.95), max(mib),
               count(*) FILTER (WHERE error_type = ?)
        FROM s GROUP BY ALL ORDER BY input_size NULLS LAST, task_type NULLS LAST
        """,
        [f'$."{A.DDCOLOR_TASK_TYPE}"', f'$."{A.DDCOLOR_INPUT_SIZE}"', start_ns, end_ns, A.ERROR_CUDA_OOM],
    ).fetchall()
    return [
        {
            "task_type": task,
            "input_size": None if size is None else _int_if_whole(size),
            "requests": int(n),
            "memory_median_mib": _round(med),
            "memory_p95_mib": _round(p95),
            "memory_max_mib": _round(top),
            "oom": int(oom),
        }
        for task, size, n, med, p95, top, oom in rows
    ]


def gpu_usage(
    con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int, inventory: dict[str, GpuInfo]
) -> list[dict[str, Any]]:
    """Every known GPU with its requests and mean utilization; `idle` marks those that sat idle."""
    requests = dict(
        con.execute(
            "SELECT gpu_uuid, count(*) FROM spans WHERE is_inference AND start_ns BETWEEN ? AND ? GROUP BY 1",
            [start_ns, end_ns],
        ).fetchall()
    )
    utilization = dict(
        con.execute(
            "SELECT gpu_uuid, avg(value) FROM metric_samples WHERE metric = ? AND ts_ns BETWEEN ? AND ? GROUP BY 1",
            [M.GPU_UTIL, start_ns, end_ns],
        ).fetchall()
    )
    result = []
    for uuid in sorted(set(inventory) | set(utilization) | {u for u in requests if u}, key=str):
        util = utilization.get(uuid)
        served = int(requests.get(uuid, 0))
        result.append(
            {
                "gpu_uuid": uuid,
                "gpu": gpu_label(uuid, inventory),
                "host": inventory[uuid].host if uuid in inventory else None,
                "requests": served,
                "utilization_mean_pct": _round(util),
                "idle": served == 0 or (util is not None and util < IDLE_UTILIZATION_PCT),
            }
        )
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)
