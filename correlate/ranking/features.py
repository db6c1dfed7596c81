"""Per-span features: boolean SQL expressions over a span's stamps (or its GPU's metrics) that point at a cause.

They are evaluated once, when `rk_spans` is built, into `f_<name>` columns.
"""

from __future__ import annotations

from gpu_rca.correlate.ranking.weights import FOREIGN_MEMORY_SHARE, FRAGMENTED_MIN_SHARE

#: name -> SQL over the derived span columns (temp_c, reasons, xids, …).
FEATURE_SQL: dict[str, str] = {
    "thermal": "(list_has_any(reasons, ['sw_thermal', 'hw_thermal'])"
    " OR (temp_c IS NOT NULL AND slowdown_c IS NOT NULL AND temp_c >= slowdown_c - 1))",
    # sw_power_cap is set at idle too, harmlessly: it counts only while the GPU is busy.
    "power_cap": "(list_contains(reasons, 'sw_power_cap') AND coalesce(util_pct, 100) >= 50)",
    "slowdown": "(list_contains(reasons, 'hw_power_brake') OR (list_contains(reasons, 'hw_slowdown')"
    " AND NOT list_has_any(reasons, ['hw_thermal', 'sw_thermal'])))",
    "clock_low": "(clock_min_mhz IS NOT NULL AND clock_max_mhz > 0 AND clock_min_mhz < 0.8 * clock_max_mhz)",
    "mem_high": "(mem_used_bytes IS NOT NULL AND mem_total_bytes > 0 AND mem_used_bytes >= 0.95 * mem_total_bytes)",
    "util_high": "(util_pct >= 90)",
    "ecc": "(coalesce(gpu_ecc_uncorrected_delta, 0) > 0 OR list_has_any(xids, [48, 63, 64, 92, 94, 95, 140]))",
    "xid_lost": "(list_contains(xids, 79) OR error_type = 'gpu_lost')",
    "xid_fault": "list_has_any(xids, [13, 31, 43, 45, 109, 119, 120])",
    # Memory held by others than this service: the foreign-process signature (gpu.memory.process.max, or
    # the OOM text's own account: each other process it names, and this one's).
    "foreign_mem": f"((mem_process_bytes IS NOT NULL AND mem_total_bytes > 0"
    f" AND mem_used_bytes - mem_process_bytes >= {FOREIGN_MEMORY_SHARE} * mem_total_bytes)"
    f" OR oom_others_bytes >= {FOREIGN_MEMORY_SHARE} * coalesce(oom_total_bytes, mem_total_bytes))",
    # The OOM text: reserved-but-unallocated memory (stranded in partly used segments) would have held the
    # allocation it tried — fragmentation of the caching allocator.
    "fragmented": f"(oom_unallocated_bytes >= oom_requested_bytes"
    f" AND oom_unallocated_bytes >= {FRAGMENTED_MIN_SHARE} * coalesce(oom_total_bytes, mem_total_bytes))",
}
_THROTTLED = " OR ".join(FEATURE_SQL[f] for f in ("thermal", "power_cap", "slowdown", "clock_low"))
# Busy with nothing else wrong: what saturation looks like from one span.
FEATURE_SQL["saturated"] = f"(util_pct >= 90 AND NOT coalesce({_THROTTLED}, false))"
FEATURE_SQL["own_mem"] = f"(NOT coalesce({FEATURE_SQL['foreign_mem']}, false))"
