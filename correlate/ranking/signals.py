"""Per-GPU signals: span-stamp features of failures against successes, BARO metric anomalies, kernel XIDs.

Everything here is an aggregate computed in DuckDB over `rk_spans` (see window.py), `metric_samples` and
`kernel_events`; Python only receives a few rows per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from gpu_rca.correlate.ranking.features import FEATURE_SQL
from gpu_rca.correlate.ranking.window import MINUTE_NS, SKEW_NS, SpanSet
from gpu_rca.correlate.store.query import one_row
from gpu_rca.schemas import metrics as m

#: Per-span features, materialised as `f_<name>` columns of rk_spans (see features.py).
FEATURES = {name: f"coalesce(f_{name}, false)" for name in FEATURE_SQL}


#: Per-span numbers whose medians compare failures with successes.
NUMBERS: dict[str, str] = {
    "temp_c": "temp_c",
    "slowdown_c": "slowdown_c",
    "clock_min_mhz": "clock_min_mhz",
    "clock_max_mhz": "clock_max_mhz",
    "util_pct": "util_pct",
    "power_w": "power_w",
    "power_limit_w": "power_limit_w",
    "mem_process_bytes": "mem_process_bytes",
    "other_bytes": "(mem_used_bytes - mem_process_bytes)",
    "queue_ms": "inference_queue_ms",
    "inflight": "gpu_inflight_max",
    "dur_ms": "dur_ms",
    "done_queue_ms": "CASE WHEN dur_ms IS NOT NULL THEN inference_queue_ms END",
    "gpu_ms": "gpu_ms",
    "other_ms": "other_ms",
    # What the OOM texts state (NULL for other spans).
    "oom_others_bytes": "oom_others_bytes",
    "oom_unallocated_bytes": "oom_unallocated_bytes",
}
FAMILIES = ("oom", "slow", "cuda", "lost", "app")
#: The fewest successes before a GPU's failures that make its own baseline (else all its successes).
MIN_GPU_BASELINE = 10


@dataclass
class Group:
    """Counts, feature counts and medians of one set of spans (a GPU's failures of one family, or successes)."""

    n: int = 0
    features: dict[str, int] = field(default_factory=dict)
    medians: dict[str, float | None] = field(default_factory=dict)
    first_ns: int | None = None
    onset_ns: int | None = None
    last_ns: int | None = None

    def share(self, feature: str) -> float:
        """Share of the group's spans with `feature`."""
        return self.features.get(feature, 0) / self.n if self.n else 0.0


@dataclass
class MetricAnomaly:
    """BARO's robust score of one metric on one GPU: baseline median/IQR before the GPU's failures."""

    metric: str
    baseline: float
    scale: float
    peak: float
    trough: float
    z_up: float
    z_down: float
    first_up_ns: int | None
    first_down_ns: int | None
    last_up_ns: int | None
    last_down_ns: int | None


@dataclass
class KernelXid:
    """XID events of one code on one GPU in the window (from the kernel log)."""

    xid: int
    count: int
    first_ns: int
    last_ns: int
    host: str | None
    #: "kernel" (the kernel log's NVRM lines) or "dcgm" (dcgm-exporter's last-XID gauge changing to the code).
    source: str = "kernel"


@dataclass
class GpuSignals:
    """Everything ranking knows about one GPU in the window."""

    gpu_uuid: str
    host: str | None
    name: str | None
    failed: dict[str, Group] = field(default_factory=dict)  # family -> failures
    ok: Group = field(default_factory=Group)
    pre: Group = field(default_factory=Group)  # successes before this GPU's failures began
    first_seen_ns: dict[str, int] = field(default_factory=dict)  # feature -> first span start with it
    metrics: dict[str, MetricAnomaly] = field(default_factory=dict)
    kernel: list[KernelXid] = field(default_factory=list)
    last_metric_ns: int | None = None
    spans_total: int = 0

    @property
    def n_failed(self) -> int:
        """Failures on this GPU, every family."""
        return sum(g.n for g in self.failed.values())

    @property
    def onset_ns(self) -> int | None:
        """When this GPU's failures began (robust to one stray early failure)."""
        # The dominant failure mode's onset: a stray background failure of another kind does not move it.
        groups = [g for g in self.failed.values() if g.onset_ns is not None]
        return max(groups, key=lambda g: g.n).onset_ns if groups else None

    @property
    def baseline(self) -> Group:
        """This GPU's successes to compare with: those before its failures began, if there are enough."""
        # A fault that outlasts most of the window would otherwise set its own "normal" (a capped power
        # limit, a co-tenant's memory): successes during the incident outnumber those before it.
        return self.pre if self.pre.n >= MIN_GPU_BASELINE else self.ok


def _group_select() -> str:
    parts = ["count(*)"]
    parts += [f"count(*) FILTER (WHERE {sql})" for sql in FEATURES.values()]
    parts += [f"median({sql})" for sql in NUMBERS.values()]
    parts += ["min(end_ns)", "quantile_disc(end_ns, 0.05)", "max(end_ns)"]
    return ", ".join(parts)


def _group(row: tuple[Any, ...]) -> Group:
    n_feat, n_num = len(FEATURES), len(NUMBERS)
    features = dict(zip(FEATURES, (int(v) for v in row[1 : 1 + n_feat])))
    medians = dict(zip(NUMBERS, (None if v is None else float(v) for v in row[1 + n_feat : 1 + n_feat + n_num])))
    first, onset, last = row[1 + n_feat + n_num :]
    return Group(int(row[0]), features, medians, first, onset, last)


@dataclass
class Signals:
    """Per-GPU signals plus the fleet-wide failures by family and the fleet-wide successes (the baseline)."""

    gpus: dict[str, GpuSignals]
    fleet_failed: dict[str, Group]
    fleet_ok: Group
    fleet_pre: Group  # successes before the failures began

    @property
    def baseline(self) -> Group:
        """The successes failures are compared with: those before the failures began, if there are enough."""
        return self.fleet_pre if self.fleet_pre.n >= 30 else self.fleet_ok


def gpu_signals(con: duckdb.DuckDBPyConnection, spans: SpanSet) -> Signals:
    """Signals for every GPU seen in the window, and the fleet-wide groups."""
    gpus: dict[str, GpuSignals] = {}
    key = "coalesce(gpu_uuid, '')"
    for row in con.execute(
        f"SELECT {key}, any_value(host), any_value(gpu_name), count(*),"
        + ", ".join(f"min(start_ns) FILTER (WHERE {sql})" for sql in FEATURES.values())
        + " FROM rk_spans GROUP BY ALL"
    ).fetchall():
        uuid, host, name, total = row[:4]
        firsts = {f: v for f, v in zip(FEATURES, row[4:]) if v is not None}
        gpus[uuid] = GpuSignals(uuid, host, name, first_seen_ns=firsts, spans_total=int(total))
    fleet_failed: dict[str, Group] = {}
    for row in con.execute(
        f"SELECT grouping({key}), {key}, family, {_group_select()} FROM rk_spans WHERE failed"
        f" GROUP BY GROUPING SETS (({key}, family), (family))"
    ).fetchall():
        if row[0]:
            fleet_failed[row[2]] = _group(row[3:])
        else:
            gpus[row[1]].failed[row[2]] = _group(row[3:])
    fleet = Group()
    rows = con.execute(
        f"SELECT grouping({key}), {key}, {_group_select()} FROM rk_spans WHERE NOT failed"
        f" GROUP BY GROUPING SETS (({key}), ())"
    ).fetchall()
    for row in rows:
        if row[0]:
            fleet = _group(row[2:])
        else:
            gpus[row[1]].ok = _group(row[2:])
    _gpu_pre_failure(con, gpus)
    onset_row = con.execute(
        "SELECT quantile_disc(end_ns, 0.05) FROM rk_spans WHERE failed GROUP BY family ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    onset = onset_row[0] if onset_row else None
    pre = Group()
    if onset is not None:
        pre = _group(
            one_row(con, f"SELECT {_group_select()} FROM rk_spans WHERE NOT failed AND end_ns < ?", [onset - SKEW_NS])
        )
    if spans.has_metrics:
        _metric_anomalies(con, spans, gpus)
    if spans.has_kernel_events:
        _kernel_xids(con, spans, gpus)
    if spans.has_metrics:
        _gauge_xids(con, spans, gpus)
    return Signals(gpus, fleet_failed, fleet, pre)


def _gpu_pre_failure(con: duckdb.DuckDBPyConnection, gpus: dict[str, GpuSignals]) -> None:
    """Each failing GPU's successes that ended before its failures began (its own pre-failure baseline)."""
    onsets = [(uuid, g.onset_ns) for uuid, g in gpus.items() if g.onset_ns is not None]
    if not onsets:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE rk_gpu_onsets (gpu_key VARCHAR, onset_ns BIGINT)")
    con.executemany("INSERT INTO rk_gpu_onsets VALUES (?, ?)", onsets)
    for row in con.execute(
        f"SELECT o.gpu_key, {_group_select()} FROM rk_spans s JOIN rk_gpu_onsets o"
        f" ON coalesce(s.gpu_uuid, '') = o.gpu_key WHERE NOT s.failed AND s.end_ns < o.onset_ns - {SKEW_NS}"
        " GROUP BY o.gpu_key"
    ).fetchall():
        gpus[row[0]].pre = _group(row[1:])


#: Metrics scored per GPU, with the smallest spread that counts as a real change (BARO's IQR floor).
METRIC_FLOORS: dict[str, float] = {
    m.GPU_TEMP: 2.0,
    m.SM_CLOCK: 50.0,
    m.GPU_UTIL: 5.0,
    m.FB_USED: 512.0,
    m.POWER_USAGE: 5.0,
    m.ENFORCED_POWER_LIMIT: 5.0,
    m.ECC_DBE_VOL_TOTAL: 1.0,
}


def _metric_anomalies(con: duckdb.DuckDBPyConnection, spans: SpanSet, gpus: dict[str, GpuSignals]) -> None:
    onsets = [(uuid, g.onset_ns) for uuid, g in gpus.items() if uuid and g.onset_ns is not None]
    start = spans.window.start_ns - 10 * MINUTE_NS
    end = spans.window.end_ns + MINUTE_NS
    for uuid, last in con.execute(
        "SELECT gpu_uuid, max(ts_ns) FROM metric_samples WHERE ts_ns BETWEEN ? AND ? GROUP BY gpu_uuid", [start, end]
    ).fetchall():
        if uuid in gpus:
            gpus[uuid].last_metric_ns = last
    if not onsets:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE rk_onsets (gpu_uuid VARCHAR, onset_ns BIGINT)")
    con.executemany("INSERT INTO rk_onsets VALUES (?, ?)", onsets)
    floors = " ".join(f"WHEN '{name}' THEN {floor}" for name, floor in METRIC_FLOORS.items())
    names = ", ".join(f"'{name}'" for name in METRIC_FLOORS)
    rows = con.execute(
        f"""
        WITH s AS (
          SELECT x.gpu_uuid, x.metric, x.ts_ns, x.value, o.onset_ns
          FROM metric_samples x JOIN rk_onsets o USING (gpu_uuid)
          WHERE x.metric IN ({names}) AND x.ts_ns BETWEEN {start} AND {end}),
        base AS (
          SELECT gpu_uuid, metric, median(value) AS med,
                 greatest(quantile_cont(value, 0.75) - quantile_cont(value, 0.25),
                          CASE metric {floors} ELSE 1 END, 0.01 * abs(median(value))) AS scale
          FROM s WHERE ts_ns < onset_ns - 2 * {MINUTE_NS} GROUP BY gpu_uuid, metric HAVING count(*) >= 3),
        z AS (
          SELECT s.*, b.med, b.scale, (s.value - b.med) / b.scale AS zu, (b.med - s.value) / b.scale AS zd
          FROM s JOIN base b USING (gpu_uuid, metric))
        SELECT gpu_uuid, metric, any_value(med), any_value(scale),
               max(value) FILTER (WHERE ts_ns >= onset_ns - 10 * {MINUTE_NS}),
               min(value) FILTER (WHERE ts_ns >= onset_ns - 10 * {MINUTE_NS}),
               max(zu) FILTER (WHERE ts_ns >= onset_ns - 10 * {MINUTE_NS}),
               max(zd) FILTER (WHERE ts_ns >= onset_ns - 10 * {MINUTE_NS}),
               min(ts_ns) FILTER (WHERE zu >= 3 AND ts_ns >= onset_ns - 10 * {MINUTE_NS}),
               min(ts_ns) FILTER (WHERE zd >= 3 AND ts_ns >= onset_ns - 10 * {MINUTE_NS}),
               max(ts_ns) FILTER (WHERE zu >= 3), max(ts_ns) FILTER (WHERE zd >= 3)
        FROM z GROUP BY gpu_uuid, metric
        """
    ).fetchall()
    for uuid, metric, med, scale, peak, trough, zu, zd, fu, fd, lu, ld in rows:
        if peak is None:
            continue
        gpus[uuid].metrics[metric] = MetricAnomaly(
            metric, float(med), float(scale), float(peak), float(trough), float(zu or 0), float(zd or 0), fu, fd, lu, ld
        )


def _kernel_xids(con: duckdb.DuckDBPyConnection, spans: SpanSet, gpus: dict[str, GpuSignals]) -> None:
    rows = con.execute(
        """
        SELECT coalesce(k.gpu_uuid, g.gpu_uuid) AS uuid, k.xid, count(*), min(k.ts_ns), max(k.ts_ns), any_value(k.host)
        FROM kernel_events k LEFT JOIN gpus g ON k.gpu_uuid IS NULL AND g.pci_bus_id = k.pci_bus_id AND g.host = k.host
        WHERE k.xid IS NOT NULL AND k.ts_ns BETWEEN ? AND ? GROUP BY ALL
        """,
        [spans.window.start_ns - 10 * MINUTE_NS, spans.window.end_ns + MINUTE_NS],
    ).fetchall()
    for uuid, xid, count, first, last, host in rows:
        if uuid is None:
            continue
        signals = gpus.get(uuid)
        if signals is None:
            signals = gpus[uuid] = GpuSignals(uuid, host, None)
        signals.kernel.append(KernelXid(int(xid), int(count), int(first), int(last), host))


def _gauge_xids(con: duckdb.DuckDBPyConnection, spans: SpanSet, gpus: dict[str, GpuSignals]) -> None:
    """XIDs read from dcgm-exporter's `DCGM_FI_DEV_XID_ERRORS` where the kernel log has none for the GPU.

    The gauge holds the code of the GPU's last XID, so an XID shows as the gauge changing to its code
    between two scrapes: repeats of the same code are invisible (count = changes seen), and a code the
    gauge already held before the window (an old XID) is not an event. It stands in for the kernel log
    that a team without node log shipping does not have.
    """
    rows = con.execute(
        f"""
        WITH s AS (
          SELECT gpu_uuid, ts_ns, value, lag(value) OVER (PARTITION BY gpu_uuid ORDER BY ts_ns) AS prev
          FROM metric_samples WHERE metric = '{m.XID_ERRORS}' AND ts_ns BETWEEN ? AND ?)
        SELECT gpu_uuid, CAST(value AS INTEGER), count(*), min(ts_ns), max(ts_ns)
        FROM s WHERE prev IS NOT NULL AND value <> prev AND value > 0 AND isfinite(value)
        GROUP BY ALL
        """,
        [spans.window.start_ns - 10 * MINUTE_NS, spans.window.end_ns + MINUTE_NS],
    ).fetchall()
    for uuid, xid, count, first, last in rows:
        signals = gpus.get(uuid)
        if signals is None or any(k.xid == xid and k.source == "kernel" for k in signals.kernel):
            continue
        signals.kernel.append(KernelXid(int(xid), int(count), int(first), int(last), signals.host, source="dcgm"))
