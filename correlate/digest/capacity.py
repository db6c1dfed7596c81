"""Capacity questions answered from stored spans and samples: busiest hours, memory cost, idle GPUs."""

from __future__ import annotations

from typing import Any

import duckdb

from gpu_rca.correlate.digest import memory_fit, pools
from gpu_rca.correlate.digest.actions import gpu_label
from gpu_rca.correlate.digest.queries import GpuInfo
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as M
from gpu_rca.schemas.timefmt import rfc3339

_HOUR_NS = 3600 * 10**9
_GIB = 1024**3
#: Memory kept free on every GPU when sizing concurrency (the admission advisor's default headroom).
HEADROOM_FRACTION = 0.05
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
        "request_memory": request_memory(con, since_ns, end_ns, inventory),
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


def request_memory(
    con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int, inventory: dict[str, GpuInfo]
) -> dict[str, Any]:
    """Per-request GPU memory by model and input size from the fit, how many fit on each GPU model, and pools."""
    fit = memory_fit.fit_request_memory(con, start_ns, end_ns)
    counts = con.execute(
        """
        SELECT ddcolor_model, ddcolor_input_size, count(*), count(*) FILTER (WHERE error_type = ?),
               string_agg(DISTINCT ddcolor_task_type, ', ' ORDER BY ddcolor_task_type)
        FROM spans WHERE is_inference AND start_ns BETWEEN ? AND ? AND ddcolor_input_size IS NOT NULL
        GROUP BY ALL ORDER BY 2, 1 NULLS LAST
        """,
        [A.ERROR_CUDA_OOM, start_ns, end_ns],
    ).fetchall()
    if fit is None:
        return {"fit": None, "rows": [], "gpus": [], "pools": []}
    gpus = _gpu_models(inventory, fit)
    rows = []
    for model, size, n, oom, tasks in counts:
        need = fit.request_bytes(model, size)
        rows.append(
            {
                "model": model,
                "input_size": _int_if_whole(size),
                "task_types": tasks or "",
                "requests": int(n),
                "oom": int(oom),
                "memory_gib": None if need is None else round(need / _GIB, 2),
                "per_gpu": {g["gpu_name"]: _fits(g, need) for g in gpus},
            }
        )
    return {
        "fit": {
            "formula": "memory = base + bytes_per_pixel[model] * input_size^2",
            "source": fit.source,
            "points": fit.points,
            "r2": None if fit.r2 is None else round(fit.r2, 3),
            "rms_gib": round(fit.rms_bytes / _GIB, 2),
            "gib_per_megapixel": {str(m): round(k * 1e6 / _GIB, 3) for m, k in fit.bytes_per_pixel.items()},
        },
        "rows": rows,
        "gpus": gpus,
        "pools": pools.pool_advice(rows, gpus, task_oom=_task_oom(con, start_ns, end_ns)),
    }


def _gpu_models(inventory: dict[str, GpuInfo], fit: memory_fit.MemoryFit) -> list[dict[str, Any]]:
    """Each GPU model in the fleet: total memory, the serving process's base there, and what is left."""
    totals: dict[str, int] = {}
    for info in inventory.values():
        if info.name and info.memory_total_bytes:
            totals[info.name] = min(totals.get(info.name, info.memory_total_bytes), info.memory_total_bytes)
    out = []
    for name, total in sorted(totals.items()):
        base = fit.base_bytes.get(name, min(fit.base_bytes.values(), default=0))
        usable = total * (1 - HEADROOM_FRACTION) - base
        out.append(
            {
                "gpu_name": name,
                "memory_total_gib": round(total / _GIB, 1),
                "base_gib": round(base / _GIB, 2),
                "usable_gib": round(max(usable, 0) / _GIB, 2),
            }
        )
    return out


def _fits(gpu: dict[str, Any], need: float | None) -> int | None:
    """Requests of this size that fit on the GPU at once: (total less headroom less base) / per request."""
    if need is None or need <= 0:
        return None
    return int(gpu["usable_gib"] * _GIB // need)


def _task_oom(con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int) -> list[tuple[str, int, int]]:
    rows = con.execute(
        """
        SELECT ddcolor_task_type, count(*), count(*) FILTER (WHERE error_type = ?)
        FROM spans WHERE is_inference AND start_ns BETWEEN ? AND ? AND ddcolor_task_type IS NOT NULL
        GROUP BY 1 ORDER BY 1
        """,
        [A.ERROR_CUDA_OOM, start_ns, end_ns],
    ).fetchall()
    return [(str(t), int(n), int(o)) for t, n, o in rows]


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
