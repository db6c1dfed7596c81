"""The analysis window and the inference spans in it, loaded once into a temp table the ranking reads.

`rk_spans` holds one row per inference span in the window with a `failed` flag, an error family, the
stamps of docs/contracts.md §1, and — for spans whose collector did not stamp them (old collectors, no NVML) — the same
signals read from the GPU's metric samples through a bucketed equi-join (never a range join).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from gpu_rca.correlate.ranking.failure_texts import OOM_COLUMNS, load_oom_texts
from gpu_rca.correlate.ranking.features import FEATURE_SQL
from gpu_rca.correlate.store.query import one_row, scalar
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.attributes import STAMPS
from gpu_rca.schemas.errors import EmptyWindowError, InputError, UsageError
from gpu_rca.schemas.results import WindowResult
from gpu_rca.schemas.timefmt import rfc3339

MINUTE_NS = 60_000_000_000
#: Clock skew tolerated between hosts (spans, kernel logs and scrapes come from different clocks).
SKEW_NS = MINUTE_NS
#: Width of the time buckets that join spans to metric samples; wider than common scrape intervals.
BUCKET_NS = 30_000_000_000
MIB = 1024 * 1024
#: Successes kept in rk_spans as the baseline (every failure is kept). Shares and medians need no more;
#: beyond it only the cost grows.
SUCCESS_SAMPLE = 100_000

#: Store columns the ranking reads from `spans` besides the stamps; absent ones read as NULL.
_BASE_COLUMNS = (
    "trace_id",
    "span_id",
    "service_version",
    "host",
    "start_ns",
    "end_ns",
    "status",
    "status_message",
    "error_type",
    "is_inference",
    "attributes",
    "resource",
    "gpu_join",
)
#: Canonical metrics joined onto spans, with the span column they back up.
SPAN_METRICS: dict[str, str] = {
    m.GPU_TEMP: "m_temp_c",
    m.SM_CLOCK: "m_sm_clock_mhz",
    m.MAX_SM_CLOCK: "m_max_sm_clock_mhz",
    m.GPU_UTIL: "m_util_pct",
    m.FB_USED: "m_fb_used_mib",
    m.FB_FREE: "m_fb_free_mib",
    m.POWER_USAGE: "m_power_w",
    m.ENFORCED_POWER_LIMIT: "m_power_limit_w",
    m.SLOWDOWN_TEMP: "m_slowdown_c",
    m.CLOCKS_EVENT_REASONS: "m_reasons",
}


@dataclass(frozen=True)
class Filters:
    """Which inference spans to analyse: by service, host and GPU, and what counts as failed."""

    service: str | None = None
    host: str | None = None
    gpu: str | None = None
    slow_ns: int | None = None
    #: Latency detection (`--slow auto`): spans in the temp table `rk_slow` (latency.py) count as failed.
    slow_auto: bool = False


@dataclass(frozen=True)
class AnalysisWindow:
    """The analysed time range, in Unix ns."""

    start_ns: int
    end_ns: int

    def as_dict(self) -> WindowResult:
        """The window object of docs/contracts.md §3."""
        return {"start": rfc3339(self.start_ns) or "", "end": rfc3339(self.end_ns) or ""}


@dataclass
class SpanSet:
    """What `load_spans` found: counts, the window, and which optional inputs exist."""

    window: AnalysisWindow
    total: int
    failed: int
    first_failure_ns: int | None
    last_failure_ns: int | None
    has_metrics: bool
    has_kernel_events: bool
    has_logs: bool
    warnings: list[str] = field(default_factory=list)
    #: rk_spans keeps every failed span and one success in `success_stride` (all when 1).
    success_stride: int = 1
    #: Failed spans that did not error: slower than `--slow`, or found by latency detection.
    slow: int = 0


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """Column names of a store table (empty when the table does not exist)."""
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'"
        " AND table_catalog = current_database()",
        [table],
    ).fetchall()
    return {r[0] for r in rows}


def _failed_sql(filters: Filters) -> str:
    slow = f" OR (end_ns - start_ns) > {int(filters.slow_ns)}" if filters.slow_ns else ""
    if filters.slow_auto and not filters.slow_ns:
        slow = " OR EXISTS (SELECT 1 FROM rk_slow k WHERE k.trace_id = spans.trace_id AND k.span_id = spans.span_id)"
    return f"(status = 'ERROR'{slow})"


def filter_sql(filters: Filters, columns: set[str]) -> tuple[str, list[object]]:
    """SQL WHERE clause (and its parameters) selecting the inference spans the filters keep."""
    clauses: list[str] = ["is_inference"]
    params: list[object] = []
    if filters.service:
        clauses.append("service = ?")
        params.append(filters.service)
    if filters.host:
        clauses.append("host = ?")
        params.append(filters.host)
    if filters.gpu:
        clauses.append("gpu_uuid = ?")
        params.append(filters.gpu)
    if "is_inference" not in columns:
        raise InputError("the store's spans table has no is_inference column; is this a gpu-rca store?")
    return " AND ".join(clauses), params


def resolve_window(
    con: duckdb.DuckDBPyConnection,
    since_ns: int | None,
    until_ns: int | None,
    lookback_ns: int,
    filters: Filters,
) -> tuple[AnalysisWindow, int | None]:
    """The window of docs/contracts.md §3: [first failure − lookback, last failure + 1 min], clipped to --since/--until."""
    columns = table_columns(con, "spans")
    if not columns:
        raise InputError("the store has no spans table; run `gpu-rca ingest` first")
    where, params = filter_sql(filters, columns)
    bounds, bound_params = [], []
    if since_ns is not None:
        bounds.append("end_ns >= ?")
        bound_params.append(since_ns)
    if until_ns is not None:
        bounds.append("end_ns <= ?")
        bound_params.append(until_ns)
    bound_sql = "".join(f" AND {b}" for b in bounds)
    first, last, n_failed, latest = one_row(
        con,
        f"SELECT min(end_ns) FILTER (WHERE {_failed_sql(filters)}), max(end_ns) FILTER (WHERE {_failed_sql(filters)}),"
        f" count(*) FILTER (WHERE {_failed_sql(filters)}), max(end_ns)"
        f" FROM spans WHERE {where}{bound_sql}",
        params + bound_params,
    )
    if latest is None:
        check_filters(con, filters)
        raise EmptyWindowError(_empty_message(since_ns, until_ns))
    if n_failed:
        start = since_ns if since_ns is not None else first - lookback_ns
        end = until_ns if until_ns is not None else last + MINUTE_NS
    else:
        end = until_ns if until_ns is not None else latest
        start = since_ns if since_ns is not None else end - lookback_ns
    return AnalysisWindow(int(start), int(end)), (int(first) if n_failed else None)


#: filter -> (column, how a message names a span set it selects, plural noun of its values).
_FILTER_WORDS: dict[str, tuple[str, str, str]] = {
    "service": ("service", "of service", "services"),
    "host": ("host", "on host", "hosts"),
    "gpu": ("gpu_uuid", "on GPU", "GPUs"),
}
#: How many known values a filter message lists before it says how many more there are.
KNOWN_VALUES_SHOWN = 20

EMPTY_STORE_MESSAGE = "the store holds no inference spans yet: ingest files or point serve at it"


def check_filters(con: duckdb.DuckDBPyConnection, filters: Filters) -> None:
    """Why no inference span matched: an empty store, or a filter no span in the whole store matches.

    An empty store is an EmptyWindowError (exit 1); a --service/--host/--gpu value no inference span has
    is a UsageError (exit 2) naming the values the store knows. Returns when the filters do match spans
    (outside the window, then).
    """
    if scalar(con, "SELECT count(*) FROM (SELECT 1 FROM spans WHERE is_inference LIMIT 1)") == 0:
        raise EmptyWindowError(EMPTY_STORE_MESSAGE)
    given = {name: getattr(filters, name) for name in _FILTER_WORDS if getattr(filters, name)}
    for name, value in given.items():
        column, phrase, plural = _FILTER_WORDS[name]
        matched = scalar(
            con, f"SELECT count(*) FROM (SELECT 1 FROM spans WHERE is_inference AND {column} = ? LIMIT 1)", [value]
        )
        if not matched:
            raise UsageError(f"no inference spans {phrase} {value!r}; known {plural}: {_known_values(con, column)}")
    if len(given) > 1:
        where, params = filter_sql(filters, table_columns(con, "spans"))
        if scalar(con, f"SELECT count(*) FROM (SELECT 1 FROM spans WHERE {where} LIMIT 1)", params) == 0:
            named = " and ".join(f"{_FILTER_WORDS[n][1]} {v!r}" for n, v in given.items())
            raise UsageError(f"no inference spans {named} together; each matches spans alone")


def _known_values(con: duckdb.DuckDBPyConnection, column: str) -> str:
    rows = con.execute(
        f"SELECT DISTINCT {column} FROM spans WHERE is_inference AND {column} IS NOT NULL ORDER BY 1 LIMIT ?",
        [KNOWN_VALUES_SHOWN + 1],
    ).fetchall()
    values = [str(r[0]) for r in rows]
    if not values:
        return "none (no inference span names one)"
    if len(values) <= KNOWN_VALUES_SHOWN:
        return ", ".join(values)
    total = scalar(con, f"SELECT count(DISTINCT {column}) FROM spans WHERE is_inference AND {column} IS NOT NULL")
    return ", ".join(values[:KNOWN_VALUES_SHOWN]) + f" and {total - KNOWN_VALUES_SHOWN} more"


def _empty_message(since_ns: int | None, until_ns: int | None) -> str:
    if since_ns is None and until_ns is None:
        return EMPTY_STORE_MESSAGE
    return (
        f"no inference spans between {rfc3339(since_ns) or 'the beginning'} and {rfc3339(until_ns) or 'now'};"
        " widen --since/--until"
    )


#: The stamps ranking reads (the rest stay in the store).
_STAMPS_USED = (
    "gpu_uuid",
    "gpu_name",
    "gpu_telemetry_source",
    "gpu_temperature_max",
    "gpu_temperature_slowdown",
    "gpu_clock_sm_min",
    "gpu_clock_sm_max",
    "gpu_utilization_mean",
    "gpu_power_mean",
    "gpu_power_limit",
    "gpu_memory_used_max",
    "gpu_memory_total",
    "gpu_memory_process_max",
    "gpu_throttle_reasons",
    "gpu_xid",
    "gpu_ecc_uncorrected_delta",
    "gpu_inflight_max",
    "inference_queue_ms",
)


def _stamp_select(columns: set[str]) -> str:
    types = {s.column: s.sql_type for s in STAMPS}
    return ", ".join(
        f"{column}" if column in columns else f"CAST(NULL AS {types[column]}) AS {column}" for column in _STAMPS_USED
    )


def load_spans(con: duckdb.DuckDBPyConnection, window: AnalysisWindow, filters: Filters) -> SpanSet:
    """Create `rk_spans` (inference spans ending in the window) and `rk_gpu_buckets` (metrics per 30 s)."""
    columns = table_columns(con, "spans")
    where, params = filter_sql(filters, columns)
    base = ", ".join(c if c in columns else f"NULL AS {c}" for c in _BASE_COLUMNS if c != "is_inference")
    has_metrics = bool(table_columns(con, "metric_samples"))
    has_kernel = bool(table_columns(con, "kernel_events"))
    has_logs = bool(table_columns(con, "logs"))
    _build_metric_buckets(con, window, has_metrics, _metric_gpus_sql(filters, columns), params)
    bounds = [*params, window.start_ns, window.end_ns]
    total, failed, slow = one_row(
        con,
        f"SELECT count(*), count(*) FILTER (WHERE {_failed_sql(filters)}),"
        f" count(*) FILTER (WHERE status <> 'ERROR' AND {_failed_sql(filters)}) FROM spans"
        f" WHERE {where} AND end_ns BETWEEN ? AND ?",
        bounds,
    )
    if not total:
        raise EmptyWindowError(_empty_message(window.start_ns, window.end_ns))
    # A deterministic sample of successes: the same store and window always give the same answer.
    stride = max(1, -(-(total - failed) // SUCCESS_SAMPLE))
    keep = "" if stride == 1 else f" AND ({_failed_sql(filters)} OR hash(span_id) % {stride} = 0)"
    raw = (
        # idx follows the span key, not the scan order: the drivers' success sample and their quintile bins
        # read idx, and a parallel scan's order differs from run to run.
        f"SELECT row_number() OVER (ORDER BY trace_id, span_id) AS idx, {base}, {_stamp_select(columns)},"
        f" {_failed_sql(filters)} AS failed"
        f" FROM spans WHERE {where} AND end_ns BETWEEN ? AND ?{keep}"
    )
    # The OOM failures' own texts (exception.message, else the status message): memory others held, ours.
    oom_sql = (
        f"SELECT trace_id, span_id, status_message FROM spans WHERE {where} AND end_ns BETWEEN ? AND ?"
        f" AND status = 'ERROR' AND {OOM_SQL}"
    )
    load_oom_texts(con, oom_sql, bounds, bool(table_columns(con, "span_events")))
    _build_spans(con, raw, bounds)
    first, last = one_row(con, "SELECT min(end_ns), max(end_ns) FROM rk_spans WHERE failed")
    warnings: list[str] = []
    # Any sample of any GPU in the window (the join itself reads only the GPUs that need it).
    n_metric = 0
    if has_metrics:
        n_metric = scalar(
            con,
            "SELECT count(*) FROM (SELECT 1 FROM metric_samples WHERE ts_ns BETWEEN ? AND ? LIMIT 1)",
            [window.start_ns, window.end_ns],
        )
    if n_metric == 0:
        warnings.append("no GPU metric samples in the window; ranking uses the span stamps alone")
    stamped = scalar(con, "SELECT count(*) FROM rk_spans WHERE coalesce(gpu_telemetry_source, 'none') <> 'none'")
    if not stamped:
        warnings.append("no inference span carries GPU telemetry stamps (gpu.telemetry.source none or missing)")
    warnings.extend(join_warnings(con))
    kernel_count = 0
    if has_kernel:
        kernel_count = scalar(
            con,
            "SELECT count(*) FROM kernel_events WHERE ts_ns BETWEEN ? AND ?",
            [window.start_ns - 10 * MINUTE_NS, window.end_ns],
        )
    if not kernel_count:
        warnings.append("no kernel log events in the window; XIDs come from span stamps only")
    return SpanSet(
        window=window,
        total=int(total),
        failed=int(failed),
        first_failure_ns=first,
        last_failure_ns=last,
        has_metrics=n_metric > 0,
        has_kernel_events=kernel_count > 0,
        has_logs=has_logs,
        warnings=warnings,
        success_stride=stride,
        slow=int(slow),
    )


#: How each `gpu_join` value (docs/byo-spans.md) reads in a warning.
_JOIN_WORDS = {
    "pci_bus_id": "by gpu.pci_bus_id",
    "pod": "through their Kubernetes pod (k8s.pod.name matched to dcgm-exporter's pod labels)",
    "host_gpu": "as the only GPU of their host",
}


def join_warnings(con: duckdb.DuckDBPyConnection) -> list[str]:
    """What the summary says about inference spans that did not name their GPU: how they were joined to one,
    and those that could not be."""
    rows = con.execute(
        "SELECT gpu_join, count(*), count(DISTINCT host), count(*) FILTER (WHERE failed) FROM rk_spans"
        " WHERE gpu_join IS NOT NULL AND gpu_join <> 'uuid' GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    out = []
    for join, count, hosts, failed in rows:
        if join in _JOIN_WORDS:
            out.append(f"{count} inference spans named no GPU and were joined to one {_JOIN_WORDS[join]}")
        elif join == "host":
            out.append(
                f"{count} inference spans ({failed} failed) on {hosts} host(s) could not be told apart by GPU: "
                "no gpu.uuid, no pod that dcgm-exporter's labels name, and more than one GPU on the host; "
                "no GPU's metrics join them"
            )
        elif join == "none":
            out.append(f"{count} inference spans name neither a GPU nor a host; no GPU evidence joins them")
    return out


def _metric_gpus_sql(filters: Filters, columns: set[str]) -> str:
    """SQL: the GPUs whose spans need their metric samples — those with failures, or with spans lacking stamps.

    A GPU whose every span in the window succeeded with full stamps gains nothing from the join, and on a
    big fleet its samples are most of the cost.
    """
    where, _ = filter_sql(filters, columns)
    stamps = [
        c
        for c in (
            "gpu_temperature_max",
            "gpu_clock_sm_min",
            "gpu_utilization_mean",
            "gpu_throttle_reasons",
            "gpu_memory_used_max",
        )
        if c in columns
    ]
    unstamped = " OR ".join(f"{c} IS NULL" for c in stamps) or "true"
    return (
        f"SELECT DISTINCT gpu_uuid FROM spans WHERE {where} AND end_ns BETWEEN ? AND ?"
        f" AND gpu_uuid IS NOT NULL AND ({_failed_sql(filters)} OR {unstamped})"
    )


def _build_metric_buckets(
    con: duckdb.DuckDBPyConnection, window: AnalysisWindow, has_metrics: bool, gpus_sql: str, params: list[object]
) -> None:
    """One row per (GPU, 30 s bucket) with each joined metric's worst value in that bucket."""
    names = ", ".join(f"'{name}'" for name in SPAN_METRICS)
    aggregates = ", ".join(
        f"{_bucket_agg(name)} FILTER (WHERE metric = '{name}') AS {col}" for name, col in SPAN_METRICS.items()
    )
    source = (
        f"SELECT gpu_uuid, ts_ns, metric, value FROM metric_samples WHERE metric IN ({names})"
        f" AND ts_ns BETWEEN {window.start_ns - 10 * MINUTE_NS} AND {window.end_ns + MINUTE_NS}"
        f" AND gpu_uuid IN ({gpus_sql})"
        if has_metrics
        else "SELECT NULL::VARCHAR AS gpu_uuid, NULL::BIGINT AS ts_ns, NULL::VARCHAR AS metric, NULL::DOUBLE AS value"
        " WHERE false"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_gpu_buckets AS
        SELECT gpu_uuid, ts_ns // {BUCKET_NS} AS bucket, {aggregates}
        FROM ({source}) GROUP BY ALL
        """,
        [*params, window.start_ns, window.end_ns] if has_metrics else [],
    )


def _bucket_agg(metric: str) -> str:
    # The worst value in the bucket: clocks and free memory fall when something is wrong, the rest rise.
    # The reasons bitmask is OR-ed so a bit active at any scrape counts, as the span stamps do.
    if metric in (m.SM_CLOCK, m.FB_FREE, m.ENFORCED_POWER_LIMIT):
        return "min(value)"
    if metric == m.CLOCKS_EVENT_REASONS:
        return "bit_or(CAST(value AS BIGINT))"
    return "max(value)"


#: An OOM failure: the collector's `error.type`, or PyTorch's text where another instrumentation set none.
OOM_SQL = "(error_type = 'cuda_oom' OR status_message ILIKE '%CUDA out of memory%')"


def _build_spans(con: duckdb.DuckDBPyConnection, raw_sql: str, params: list[object]) -> None:
    """`rk_spans`: the window's spans + metric buckets (this and the previous one) + derived per-span signals."""
    metric_cols = ", ".join(f"coalesce(b0.{c}, b1.{c}) AS {c}" for c in SPAN_METRICS.values())
    oom_cols = ", ".join(f"t.{c}" for c in OOM_COLUMNS)
    features = ", ".join(f"{sql} AS f_{name}" for name, sql in FEATURE_SQL.items())
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_spans AS
        WITH raw AS MATERIALIZED ({raw_sql}),
        -- The time of the trace's other spans (preprocess, decode, upload): those that do not enclose it.
        others AS (
          SELECT r.idx, sum(c.end_ns - c.start_ns) / 1e6 AS other_ms
          FROM raw r JOIN spans c ON c.trace_id = r.trace_id AND NOT c.is_inference
           AND NOT (c.start_ns <= r.start_ns AND c.end_ns >= r.end_ns)
          GROUP BY r.idx),
        joined AS (
          SELECT s.*, o.other_ms, {metric_cols}, {oom_cols}
          FROM raw s
          LEFT JOIN others o ON o.idx = s.idx
          LEFT JOIN rk_oom_text t ON t.trace_id = s.trace_id AND t.span_id = s.span_id
          LEFT JOIN rk_gpu_buckets b0 ON b0.gpu_uuid = s.gpu_uuid AND b0.bucket = s.end_ns // {BUCKET_NS}
          LEFT JOIN rk_gpu_buckets b1 ON b1.gpu_uuid = s.gpu_uuid AND b1.bucket = s.end_ns // {BUCKET_NS} - 1),
        derived AS (
        SELECT idx, trace_id, span_id, service_version, host, start_ns, end_ns, status, status_message, error_type, failed,
          attributes, resource, gpu_join, gpu_uuid, gpu_name, gpu_telemetry_source, gpu_ecc_uncorrected_delta,
          gpu_inflight_max, inference_queue_ms, other_ms, {", ".join(OOM_COLUMNS)},
          -- Where a completed request's time went: queue (inference.queue_ms) and GPU time (the rest of the span).
          CASE WHEN status <> 'ERROR' THEN (end_ns - start_ns) / 1e6 END AS dur_ms,
          CASE WHEN status <> 'ERROR' THEN (end_ns - start_ns) / 1e6 - coalesce(inference_queue_ms, 0) END AS gpu_ms,
          CASE WHEN NOT failed THEN NULL
               WHEN {OOM_SQL} THEN 'oom'
               WHEN error_type = 'gpu_lost' THEN 'lost'
               WHEN error_type = 'timeout' OR status <> 'ERROR' THEN 'slow'
               WHEN error_type ILIKE 'cuda%' OR error_type ILIKE '%ecc%' OR error_type ILIKE '%xid%'
                    OR status_message ILIKE '%CUDA error%' OR status_message ILIKE '%CUDA failure%' THEN 'cuda'
               ELSE 'app' END AS family,
          coalesce(gpu_temperature_max, m_temp_c) AS temp_c,
          coalesce(gpu_temperature_slowdown, m_slowdown_c) AS slowdown_c,
          coalesce(gpu_clock_sm_min, m_sm_clock_mhz) AS clock_min_mhz,
          coalesce(gpu_clock_sm_max, m_max_sm_clock_mhz) AS clock_max_mhz,
          coalesce(gpu_utilization_mean, m_util_pct) AS util_pct,
          coalesce(gpu_power_mean, m_power_w) AS power_w,
          coalesce(gpu_power_limit, m_power_limit_w) AS power_limit_w,
          -- Where stamps and metrics are missing, what the OOM text states at the moment it failed.
          coalesce(gpu_memory_used_max, m_fb_used_mib * {MIB}, oom_total_bytes - oom_free_bytes) AS mem_used_bytes,
          coalesce(gpu_memory_total, (m_fb_used_mib + m_fb_free_mib) * {MIB}, oom_total_bytes) AS mem_total_bytes,
          coalesce(gpu_memory_process_max, oom_process_bytes) AS mem_process_bytes,
          gpu_memory_process_max AS stamp_process_bytes,
          coalesce(gpu_throttle_reasons, CASE WHEN m_reasons IS NULL THEN NULL ELSE list_filter([
              CASE WHEN (m_reasons::BIGINT & 4) <> 0 THEN 'sw_power_cap' END,
              CASE WHEN (m_reasons::BIGINT & 8) <> 0 THEN 'hw_slowdown' END,
              CASE WHEN (m_reasons::BIGINT & 32) <> 0 THEN 'sw_thermal' END,
              CASE WHEN (m_reasons::BIGINT & 64) <> 0 THEN 'hw_thermal' END,
              CASE WHEN (m_reasons::BIGINT & 128) <> 0 THEN 'hw_power_brake' END], lambda x: x IS NOT NULL) END)
            AS reasons,
          coalesce(gpu_xid, []) AS xids
        FROM joined)
        SELECT *, {features}
        FROM derived
        """,
        params,
    )
