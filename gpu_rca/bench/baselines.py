"""The two baselines ranking is measured against, each mapped to cause ids through a published table.

- **metrics-only (BARO)**: RCAEval's RobustScorer on the GPU metric series of the window — for every
  (GPU, metric) fit median and IQR before the first failure, score the max |x − median| / IQR after it,
  rank; the top series map to causes through `METRIC_CAUSES`. The clock-event bitmask and the XID gauge
  are scored raw and named by their peak value (thermal bits, power cap, slowdown; XID 79, memory, fault).
- **attribute-contrast only (Elastic)**: failed-transaction correlations over span attributes, including
  `error.type` as the exception's text gives it but no GPU telemetry stamps; the most significant values map
  to causes through `ATTRIBUTE_CAUSES`, which is what a person reading a BubbleUp-style breakdown would
  conclude.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from gpu_rca.correlate.ranking.drivers import DriverRow, driver_rows, significant
from gpu_rca.correlate.ranking.signals import METRIC_FLOORS
from gpu_rca.schemas import metrics as m

#: (series, direction) -> cause. Series are canonical metric names; the two code-valued gauges (the clock-event
#: bitmask and the last XID) are scored raw, as BARO scores any series, and named by their peak value.
METRIC_CAUSES: dict[tuple[str, str], str] = {
    (m.GPU_TEMP, "up"): "thermal_throttling",
    ("reasons:thermal", "up"): "thermal_throttling",
    ("reasons:power_cap", "up"): "power_capping",
    (m.ENFORCED_POWER_LIMIT, "down"): "power_capping",
    ("reasons:slowdown", "up"): "hw_slowdown",
    (m.FB_USED, "up"): "gpu_memory_foreign_process",
    (m.GPU_UTIL, "up"): "compute_saturation",
    (m.ECC_DBE_VOL_TOTAL, "up"): "ecc_memory_errors",
    ("xid:ecc", "up"): "ecc_memory_errors",
    ("xid:79", "up"): "gpu_fallen_off_bus",
    ("xid:fault", "up"): "cuda_kernel_fault",
}
#: The causes the metrics-only baseline can name at all (its AC@1 is also reported on these alone).
METRIC_VISIBLE = frozenset(METRIC_CAUSES.values())

#: error.type (and where failures concentrate) -> cause, for the attribute-contrast baseline.
ATTRIBUTE_CAUSES: dict[tuple[str, str], str] = {
    ("gpu_lost", "any"): "gpu_fallen_off_bus",
    ("cuda_oom", "workload"): "gpu_oom_large_inputs",
    ("cuda_oom", "placement"): "gpu_memory_foreign_process",
    ("cuda_oom", "none"): "gpu_oom_large_inputs",
    ("cuda", "placement"): "cuda_kernel_fault",
    ("cuda", "none"): "cuda_kernel_fault",
    ("timeout", "placement"): "thermal_throttling",
    ("timeout", "none"): "compute_saturation",
    ("other", "any"): "application_error",
}
ATTRIBUTE_VISIBLE = frozenset(ATTRIBUTE_CAUSES.values())

_WORKLOAD = ("ddcolor.", "image.")
#: What an exception's text says when the application itself saw the GPU lost (the collector's patterns).
_LOST_TEXT = "GPU is lost|fallen off the bus|cudaErrorDevicesUnavailable|GpuIsLost"
_PLACEMENT = ("gpu.uuid", "gpu.name", "host.name", "k8s.node.name")
_SERIES_SQL = f"""
    SELECT gpu_uuid, metric AS series, ts_ns, value FROM metric_samples
    WHERE metric IN ('{m.GPU_TEMP}', '{m.ENFORCED_POWER_LIMIT}', '{m.FB_USED}', '{m.GPU_UTIL}', '{m.ECC_DBE_VOL_TOTAL}')
      AND ts_ns BETWEEN $start AND $end
    UNION ALL
    SELECT gpu_uuid, metric, ts_ns, value FROM metric_samples
    WHERE metric IN ('{m.CLOCKS_EVENT_REASONS}', '{m.XID_ERRORS}') AND ts_ns BETWEEN $start AND $end
"""


def baro_ranking(con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int, detect_ns: int | None) -> list[str]:
    """Causes ranked by RCAEval's RobustScorer over the window's GPU metric series.

    The scale is the IQR as sklearn's RobustScaler fits it, floored as gpu-rca floors it (a minimum spread
    per metric, and 1 % of the median) so that a series flat before the failures cannot win on noise
    alone; a 0/1 series keeps sklearn's scale of 1.
    """
    if detect_ns is None:
        return []
    floors = " ".join(f"WHEN '{name}' THEN {floor}" for name, floor in METRIC_FLOORS.items())
    rows = con.execute(
        f"""
        WITH s AS ({_SERIES_SQL}),
        base AS (SELECT gpu_uuid, series, median(value) AS med,
                        greatest(quantile_cont(value, 0.75) - quantile_cont(value, 0.25),
                                 CASE series {floors} ELSE 0 END, 0.01 * abs(median(value))) AS scale
                 FROM s WHERE ts_ns < $detect GROUP BY gpu_uuid, series),
        scored AS (SELECT s.gpu_uuid, s.series,
                          max((s.value - b.med) / CASE WHEN b.scale > 0 THEN b.scale ELSE 1 END) AS up,
                          max((b.med - s.value) / CASE WHEN b.scale > 0 THEN b.scale ELSE 1 END) AS down
                   FROM s JOIN base b USING (gpu_uuid, series) WHERE s.ts_ns >= $detect GROUP BY ALL)
        SELECT s.series, s.up, s.down, (SELECT max(x.value) FROM s x WHERE x.gpu_uuid = s.gpu_uuid
                                         AND x.series = s.series AND x.ts_ns >= $detect) AS peak
        FROM scored s
        """,
        {"start": start_ns, "end": end_ns, "detect": detect_ns},
    ).fetchall()
    candidates: list[tuple[float, str]] = []
    for series, up, down, peak in rows:
        series = _decode(series, peak)
        for direction, score in (("up", up), ("down", down)):
            cause = METRIC_CAUSES.get((series, direction))
            if cause is not None and score is not None and score > 0:
                candidates.append((float(score), cause))
    return _dedupe(cause for _, cause in sorted(candidates, key=lambda c: (-c[0], c[1])))


def _decode(series: str, peak: float | None) -> str:
    """Gauges whose value is a code (the reasons bitmask, the last XID) name the series by what the peak says."""
    if peak is None:
        return series
    code = int(peak)
    if series == m.CLOCKS_EVENT_REASONS:
        if code & 0x60:
            return "reasons:thermal"
        if code & 0x88:
            return "reasons:slowdown"
        return "reasons:power_cap" if code & 0x4 else series
    if series == m.XID_ERRORS:
        if code == 79:
            return "xid:79"
        if code in (48, 63, 64, 94, 95):
            return "xid:ecc"
        return "xid:fault" if code in (13, 31, 43) else series
    return series


def contrast_ranking(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Causes ranked by Elastic's failed-transaction correlations over span attributes and error.type.

    Reads `rk_spans` and `rk_kv` as the ranking left them on `con` (the same window and attribute values).
    """
    # error.type as the exception's own text gives it: the collector calls a CUDA error on a GPU that NVML
    # reported lost `gpu_lost`, which is GPU telemetry this baseline must not see. Such a span counts as the
    # CUDA error its message names, unless the message itself says the GPU is lost.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE bl_groups AS
           SELECT idx, CASE WHEN error_type = 'gpu_lost'
                                 AND NOT regexp_matches(coalesce(status_message, ''), '{_LOST_TEXT}') THEN 'cuda'
                            WHEN error_type IN ('gpu_lost', 'cuda_oom', 'timeout') THEN error_type
                            WHEN family = 'cuda' THEN 'cuda' WHEN status <> 'ERROR' THEN 'timeout'
                            ELSE 'other' END AS kind
           FROM rk_spans WHERE failed"""
    )
    kinds = [
        k
        for k, _ in con.execute(
            "SELECT kind, count(*) AS n FROM bl_groups GROUP BY kind ORDER BY n DESC, kind"
        ).fetchall()
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE bl_kind_groups AS SELECT idx, list_position(?, kind) AS grp FROM bl_groups",
        [kinds],
    )
    by_kind: dict[str, list[DriverRow]] = {k: [] for k in kinds}
    for row in driver_rows(con, "bl_kind_groups"):
        by_kind[kinds[row.group - 1]].append(row)
    causes = []
    for kind in kinds:
        top = significant(by_kind[kind], limit=1)
        where = "none"
        if top and top[0].attribute.startswith(_WORKLOAD):
            where = "workload"
        elif top and top[0].attribute in _PLACEMENT:
            where = "placement"
        cause = ATTRIBUTE_CAUSES.get((kind, "any")) or ATTRIBUTE_CAUSES.get((kind, where))
        if cause is None:
            cause = ATTRIBUTE_CAUSES[(kind, "none")]
        causes.append(cause)
    return _dedupe(causes)


def _dedupe(causes: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(causes))
