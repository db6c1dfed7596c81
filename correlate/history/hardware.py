"""Each GPU's hardware and failure record over a period, from the store's own tables (docs/contracts.md §7).

XIDs come from `kernel_events` (one row per driver line), ECC and time above the slowdown temperature from
`metric_samples` (dcgm-exporter's counters and gauges), the thermal-throttle share and failure rate from the
inference spans' stamps, and the hosts a GPU was seen on from spans, kernel lines and, where neither names
one, its metric labels. Everything is keyed by GPU UUID.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from gpu_rca.schemas import metrics as M
from gpu_rca.schemas import store as s
from gpu_rca.schemas.throttle import THERMAL_REASONS

#: A gap between two temperature samples longer than this counts only this long (a scrape outage is not heat).
MAX_SAMPLE_GAP_NS = 60 * 10**9
DAY_NS = 86_400 * 10**9


@dataclass
class XidDay:
    """How many times one XID code was logged on one UTC day."""

    day: str
    xid: int
    count: int


@dataclass
class HostSeen:
    """A host the GPU was seen on, first and last (Unix ns)."""

    host: str
    first_ns: int
    last_ns: int


@dataclass
class Hardware:
    """One GPU's hardware record over the period (None: the store holds no such data for it)."""

    xid_days: list[XidDay] = field(default_factory=list)
    ecc_uncorrected: int | None = None
    row_remap_failure: bool = False
    seconds_above_slowdown: float | None = None
    throttled_spans: int = 0
    inference_spans: int = 0
    failed_spans: int = 0
    hosts: list[HostSeen] = field(default_factory=list)
    name: str | None = None

    def xid_counts(self) -> dict[int, int]:
        """XID code -> how many times it was logged in the period."""
        counts: dict[int, int] = {}
        for day in self.xid_days:
            counts[day.xid] = counts.get(day.xid, 0) + day.count
        return counts


#: `of(uuid)`: the GPU's record, made on first use.
_Of = Callable[[str], Hardware]


def hardware_by_gpu(con: duckdb.DuckDBPyConnection, since_ns: int, until_ns: int) -> dict[str, Hardware]:
    """GPU UUID -> its hardware record in [since, until]."""
    found: dict[str, Hardware] = {}

    def of(uuid: str) -> Hardware:
        return found.setdefault(uuid, Hardware())

    window = [since_ns, until_ns]
    for uuid, day, xid, count in con.execute(
        f"""SELECT gpu_uuid, strftime(make_timestamp(ts_ns // 1000), '%Y-%m-%d') AS day, xid, count(*)
            FROM {s.KERNEL_EVENTS} WHERE gpu_uuid IS NOT NULL AND xid IS NOT NULL AND ts_ns BETWEEN ? AND ?
            GROUP BY ALL ORDER BY 1, 2, 3""",
        window,
    ).fetchall():
        of(uuid).xid_days.append(XidDay(day, int(xid), int(count)))
    for uuid, increase in con.execute(
        f"""SELECT gpu_uuid, sum(greatest(value - prev, 0)) FROM (
              SELECT gpu_uuid, value, lag(value) OVER (PARTITION BY gpu_uuid ORDER BY ts_ns) AS prev
              FROM {s.METRIC_SAMPLES} WHERE metric = ? AND ts_ns BETWEEN ? AND ?)
            GROUP BY 1""",
        [M.ECC_DBE_VOL_TOTAL, *window],
    ).fetchall():
        of(uuid).ecc_uncorrected = int(increase or 0)
    for (uuid,) in con.execute(
        f"""SELECT DISTINCT gpu_uuid FROM {s.METRIC_SAMPLES} WHERE metric = ? AND value > 0 AND ts_ns BETWEEN ? AND ?""",
        [M.ROW_REMAP_FAILURE, *window],
    ).fetchall():
        of(uuid).row_remap_failure = True
    _thermal(con, window, of)
    _spans(con, window, of)
    _hosts(con, window, found, of)
    for uuid, name in con.execute(f"SELECT gpu_uuid, name FROM {s.GPUS}").fetchall():
        if uuid in found:
            found[uuid].name = name
    return found


def _thermal(con: duckdb.DuckDBPyConnection, window: list[int], of: _Of) -> None:
    """Seconds each GPU's temperature sat at or above its slowdown threshold (the inventory's, else the metric's)."""
    rows = con.execute(
        f"""
        WITH slowdown AS (
          SELECT gpu_uuid, max(slowdown_temp_c)::DOUBLE AS limit_c FROM {s.GPUS} WHERE slowdown_temp_c > 0 GROUP BY 1
          UNION ALL
          SELECT gpu_uuid, max(value) FROM {s.METRIC_SAMPLES}
          WHERE metric = ? AND value > 0 AND gpu_uuid NOT IN (SELECT gpu_uuid FROM {s.GPUS} WHERE slowdown_temp_c > 0)
          GROUP BY 1),
        temps AS (
          SELECT gpu_uuid, ts_ns, value, lead(ts_ns) OVER (PARTITION BY gpu_uuid ORDER BY ts_ns) AS next_ns
          FROM {s.METRIC_SAMPLES} WHERE metric = ? AND ts_ns BETWEEN ? AND ?)
        SELECT t.gpu_uuid,
               sum(CASE WHEN t.value >= l.limit_c THEN least(coalesce(t.next_ns - t.ts_ns, 0), ?) ELSE 0 END) / 1e9
        FROM temps t JOIN slowdown l USING (gpu_uuid) GROUP BY 1
        """,
        [M.SLOWDOWN_TEMP, M.GPU_TEMP, *window, MAX_SAMPLE_GAP_NS],
    ).fetchall()
    for uuid, seconds in rows:
        of(uuid).seconds_above_slowdown = float(seconds or 0.0)


def _spans(con: duckdb.DuckDBPyConnection, window: list[int], of: _Of) -> None:
    """Inference spans per GPU: how many, how many errored, how many ran thermally throttled."""
    rows = con.execute(
        f"""SELECT gpu_uuid, count(*), count(*) FILTER (WHERE status = 'ERROR'),
                   count(*) FILTER (WHERE list_has_any(gpu_throttle_reasons, ?))
            FROM {s.SPANS} WHERE is_inference AND gpu_uuid IS NOT NULL AND start_ns BETWEEN ? AND ?
            GROUP BY 1""",
        [sorted(THERMAL_REASONS), *window],
    ).fetchall()
    for uuid, total, failed, throttled in rows:
        record = of(uuid)
        record.inference_spans, record.failed_spans, record.throttled_spans = int(total), int(failed), int(throttled)


def _hosts(con: duckdb.DuckDBPyConnection, window: list[int], found: dict[str, Hardware], of: _Of) -> None:
    """The hosts each GPU was seen on: spans and kernel lines; metric labels only for a GPU neither names."""
    seen: dict[str, dict[str, HostSeen]] = {}
    rows = con.execute(
        f"""SELECT gpu_uuid, host, min(start_ns), max(end_ns) FROM {s.SPANS}
            WHERE gpu_uuid IS NOT NULL AND host IS NOT NULL AND start_ns BETWEEN ? AND ? GROUP BY 1, 2
            UNION ALL
            SELECT gpu_uuid, host, min(ts_ns), max(ts_ns) FROM {s.KERNEL_EVENTS}
            WHERE gpu_uuid IS NOT NULL AND host IS NOT NULL AND ts_ns BETWEEN ? AND ? GROUP BY 1, 2""",
        [*window, *window],
    ).fetchall()
    _merge_hosts(seen, rows)
    unnamed = [u for u in found if u not in seen]
    if unnamed:
        _merge_hosts(
            seen,
            con.execute(
                f"""SELECT gpu_uuid, host, min(ts_ns), max(ts_ns) FROM {s.METRIC_SAMPLES}
                    WHERE host IS NOT NULL AND ts_ns BETWEEN ? AND ? AND list_contains(?, gpu_uuid) GROUP BY 1, 2""",
                [*window, unnamed],
            ).fetchall(),
        )
    for uuid, hosts in seen.items():
        of(uuid).hosts = sorted(hosts.values(), key=lambda h: (h.first_ns, h.host))


def _merge_hosts(seen: dict[str, dict[str, HostSeen]], rows: list[tuple[str, str, int, int]]) -> None:
    for uuid, host, first, last in rows:
        old = seen.setdefault(uuid, {}).get(host)
        seen[uuid][host] = HostSeen(
            host, min(first, old.first_ns) if old else first, max(last, old.last_ns) if old else last
        )


__all__ = ["DAY_NS", "Hardware", "HostSeen", "XidDay", "hardware_by_gpu"]
