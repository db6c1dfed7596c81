"""The action for each ranked cause: the catalog's action made concrete from the window's own data.

For an OOM on large inputs that means the largest input size that fitted, computed from the spans; for
a lowered power limit the limit to restore; for a bad release the version to roll back to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from gpu_rca.correlate.digest import queries
from gpu_rca.correlate.digest.queries import GpuInfo
from gpu_rca.correlate.ranking.stats import proportion_p_value
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as M
from gpu_rca.schemas.causes import CAUSES_BY_ID

#: A size "fits" when at most this share of its requests ran out of memory (one stray OOM is noise)...
FIT_OOM_SHARE = 0.01
#: ...or when its OOM share is not significantly above the smallest size's: small requests also fail once
#: large ones in flight have filled the GPU, and those collateral OOMs say nothing about their own size.
FIT_P_VALUE = 0.01
#: When even the smallest size runs out of memory this often, no size fits: the GPU is too small or shared.
MAX_SMALLEST_OOM_SHARE = 0.05


def gpu_label(uuid: str, inventory: dict[str, GpuInfo], *, brief: bool = False) -> str:
    """`node-a/0 (NVIDIA L4, GPU-1a2b3c4d…)` — how a person finds the GPU; `brief` gives `node-a/0`."""
    info = inventory.get(uuid)
    short = uuid if len(uuid) <= 16 else uuid[:13] + "…"
    if info is None or info.host is None:
        return short
    where = f"{info.host}/{info.index}" if info.index is not None else info.host
    if brief:
        return where
    return f"{where} ({info.name}, {short})" if info.name else f"{where} ({short})"


def action_for(
    con: duckdb.DuckDBPyConnection,
    cause: dict[str, Any],
    *,
    start_ns: int,
    end_ns: int,
    inventory: dict[str, GpuInfo],
) -> str:
    """The operator's action for one cause of docs/contracts.md §3, with GPUs, sizes and versions filled in."""
    cause_id = cause["cause"]
    catalog = CAUSES_BY_ID.get(cause_id)
    generic = catalog.action if catalog else "Investigate the failures listed below."
    gpus = ", ".join(gpu_label(u, inventory) for u in cause.get("gpus", ())[:4])
    on = f" on {gpus}" if gpus else ""
    if cause_id == "gpu_oom_large_inputs":
        return _input_cap(con, cause, start_ns, end_ns) or generic
    if cause_id == "power_capping":
        return _power_limit(con, cause, start_ns, end_ns, inventory) or generic
    if cause_id == "application_error":
        return _rollback(con, cause, start_ns, end_ns) or generic
    if cause_id == "gpu_memory_foreign_process":
        return (
            f"Find the other process{on} (`nvidia-smi --query-compute-apps=pid,process_name,used_memory "
            "--format=csv`) and move it off the GPU, or drain the GPU."
        )
    if cause_id == "thermal_throttling":
        return f"Check cooling{on} (fans, airflow, inlet temperature) and move load off the hot GPU until it cools."
    if cause_id in ("ecc_memory_errors", "gpu_fallen_off_bus", "hw_slowdown"):
        return f"Drain{on or ' the affected GPUs'}. " + generic
    return generic


def largest_fitting_size(rows: Sequence[tuple[str, int, int]]) -> tuple[float, int, int] | None:
    """From (size, requests, OOMs) rows: the largest size such that it and every smaller size fit (see above)."""
    numeric = sorted(((float(v), n, f) for v, n, f in rows if _is_number(v) and n > 0), key=lambda r: r[0])
    if not numeric:
        return None
    _, base_total, base_ooms = numeric[0]
    if base_ooms / base_total > MAX_SMALLEST_OOM_SHARE:
        return None
    best = None
    for size, total, ooms in numeric:
        if ooms / total > FIT_OOM_SHARE and proportion_p_value(ooms, total, base_ooms, base_total) < FIT_P_VALUE:
            break
        best = (size, total, ooms)
    return best


def _input_cap(con: duckdb.DuckDBPyConnection, cause: dict[str, Any], start_ns: int, end_ns: int) -> str | None:
    attribute = next(
        (
            d["attribute"]
            for d in cause.get("drivers", ())
            if d["attribute"] in A.WORKLOAD_ATTRIBUTES and isinstance(d["value"], int | float)
        ),
        A.DDCOLOR_INPUT_SIZE,
    )
    rows = queries.attribute_outcomes(con, attribute, start_ns, end_ns, error_type=A.ERROR_CUDA_OOM)
    numeric = sorted(((float(v), n, f) for v, n, f in rows if _is_number(v) and n > 0), key=lambda r: r[0])
    if not numeric:
        return None
    fit = largest_fitting_size(rows)
    smallest, small_total, small_ooms = numeric[0]
    if fit is None:
        return (
            f"Even the smallest `{attribute}` seen ({_num(smallest)}) ran out of memory in {small_ooms} of "
            f"{small_total} requests: lower per-GPU concurrency, find what else holds the GPU's memory, "
            "or move this workload to GPUs with more memory."
        )
    size, total, ooms = fit
    larger = [r for r in numeric if r[0] > size]
    worst = "; ".join(f"{_num(s)} ran out of memory in {f} of {n}" for s, n, f in larger[:3])
    if ooms == 0:
        why = f"the largest size that fitted (0 OOM in {total} requests)"
    else:
        why = (
            f"the largest size that ran out of memory no more often than the smallest ({ooms} of {total}; "
            f"{_num(smallest)}: {small_ooms} of {small_total}, when larger requests had filled the GPU)"
        )
    return (
        f"Cap `{attribute}` at {_num(size)}, {why}"
        + (f"; {worst}." if worst else ".")
        + " Resize larger inputs down to it, or lower per-GPU concurrency for large inputs."
    )


def _power_limit(
    con: duckdb.DuckDBPyConnection, cause: dict[str, Any], start_ns: int, end_ns: int, inventory: dict[str, GpuInfo]
) -> str | None:
    gpus = list(cause.get("gpus", ()))
    if not gpus:
        return None
    series = queries.metric_series(con, M.ENFORCED_POWER_LIMIT, gpus, start_ns - 3600 * 10**9, end_ns)
    steps = []
    for uuid, (_, values) in series.items():
        if values and max(values) > min(values):
            info = inventory.get(uuid)
            index = f"-i {info.index} " if info and info.index is not None else ""
            steps.append(
                f"on {gpu_label(uuid, inventory)} it fell from {max(values):.0f} W to {min(values):.0f} W "
                f"(`nvidia-smi {index}-pl {max(values):.0f}`)"
            )
    if not steps:
        return None
    return "Restore the power limit: " + "; ".join(steps) + ". Then find what lowered it (power policy, BMC)."


def _rollback(con: duckdb.DuckDBPyConnection, cause: dict[str, Any], start_ns: int, end_ns: int) -> str | None:
    version_driver = next((d for d in cause.get("drivers", ()) if d["attribute"] == A.SERVICE_VERSION), None)
    if version_driver is None:
        model = next((d for d in cause.get("drivers", ()) if d["attribute"] == A.DDCOLOR_MODEL), None)
        if model is None:
            return None
        return (
            f"Failures concentrate on `{A.DDCOLOR_MODEL}={model['value']}`: stop routing to that model and fix "
            "its code path (see the log lines below)."
        )
    bad = str(version_driver["value"])
    rows = con.execute(
        f"""
        SELECT service_version, count(*) AS n, count(*) FILTER (WHERE {queries.FAILED}) AS failed
        FROM spans WHERE is_inference AND end_ns <= ? AND service_version IS NOT NULL AND service_version <> ?
        GROUP BY service_version ORDER BY failed::DOUBLE / n, n DESC LIMIT 1
        """,
        [end_ns, bad],
    ).fetchall()
    if not rows:
        return f"Roll back `{A.SERVICE_VERSION}={bad}` to the previous release."
    good, n, failed = rows[0]
    return f"Roll back `{A.SERVICE_VERSION}` from {bad} to {good} ({failed} failures in {n} requests on {good})."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
