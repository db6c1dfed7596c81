"""Latency incidents without a threshold: inference spans far slower than comparable requests were before.

Comparable requests form a **stratum**: same service, `ddcolor.model`, `ddcolor.input_size` and GPU model
(`gpu.name`). A request's latency is judged only against its stratum, so a 1536 px request is not slow
next to a 512 px one, nor a T4's next to an H100's. Everything runs in DuckDB over the store's successful
inference spans (errored ones already count as failed); the outcome is `rk_slow(trace_id, span_id)`.

1. **Cells**: per (stratum, GPU, minute) the p90 of latency; its **rolling p90** is the median of the cell
   and its two neighbouring minutes, so one noisy minute never decides.
2. **Onset** (screening): a stratum's first minute whose rolling p90, on some GPU, is at least
   `RATIO`× the stratum's lower-quartile cell p90, once the stratum has `BASELINE_MIN_SPANS` earlier spans.
3. **Baseline**: the stratum's spans in the `BASELINE_NS` before that onset — their median, p90 and p99.
4. **Slow**: a request from the onset on whose GPU's rolling p90 in its minute is at least `RATIO`× the
   baseline p90 (the stratum is in an incident there, not in its ordinary tail) and whose own latency
   exceeds max(`P99_FACTOR` × baseline p99, `MEDIAN_FACTOR` × baseline median).

This is the robust-baseline scoring of BARO (Pham et al., FSE 2024: median and quantiles of the period
before the anomaly, not the mean and standard deviation) applied to per-stratum latency, with the onset
taken as the first sustained quantile shift.
"""

from __future__ import annotations

import duckdb

from gpu_rca.correlate.ranking.window import MINUTE_NS, Filters, filter_sql, table_columns

#: A stratum's rolling p90 must reach this multiple of its baseline p90 for its requests to count as slow.
RATIO = 2.0
#: A slow request is slower than this multiple of its stratum's baseline p99 …
P99_FACTOR = 1.5
#: … and than this multiple of its baseline median.
MEDIAN_FACTOR = 2.5
#: The fewest spans before the onset that make a stratum's baseline (fewer: the stratum is not judged).
BASELINE_MIN_SPANS = 20
#: How far before the onset the baseline reaches.
BASELINE_NS = 60 * MINUTE_NS
#: The fewest spans in a (stratum, GPU, minute) cell for its p90 to count.
CELL_MIN_SPANS = 3


def detect_slow(con: duckdb.DuckDBPyConnection, filters: Filters, since_ns: int | None, until_ns: int | None) -> None:
    """Create `rk_slow(trace_id, span_id)`: the inference spans that count as slow failures (see module doc)."""
    columns = table_columns(con, "spans")
    where, params = filter_sql(filters, columns)
    bounds = ""
    if since_ns is not None:
        bounds += f" AND end_ns >= {int(since_ns) - BASELINE_NS}"
    if until_ns is not None:
        bounds += f" AND end_ns <= {int(until_ns)}"

    def col(name: str) -> str:
        return name if name in columns else "NULL"

    stratum = (
        f"hash(service, {col('ddcolor_model')}, {col('ddcolor_input_size')}, {col('gpu_name')})"
        if "service" in columns
        else "0"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_slow AS
        WITH lat AS (
          SELECT trace_id, span_id, {stratum} AS stratum, coalesce({col("gpu_uuid")}, '') AS gpu,
                 end_ns // {MINUTE_NS} AS minute, (end_ns - start_ns)::DOUBLE AS dur
          FROM spans WHERE {where} AND status <> 'ERROR'{bounds}),
        cells AS (
          SELECT stratum, gpu, minute, quantile_cont(dur, 0.9) AS p90, count(*) AS n
          FROM lat GROUP BY ALL),
        roll AS (
          SELECT stratum, gpu, minute,
                 median(p90) OVER (PARTITION BY stratum, gpu ORDER BY minute
                                   RANGE BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS rp90
          FROM cells WHERE n >= {CELL_MIN_SPANS}),
        screen AS (
          SELECT stratum, quantile_cont(p90, 0.25) AS q FROM cells WHERE n >= {CELL_MIN_SPANS} GROUP BY stratum),
        per_minute AS (
          SELECT stratum, minute, sum(n) AS n FROM cells GROUP BY ALL),
        cumulative AS (
          SELECT stratum, minute,
                 sum(n) OVER (PARTITION BY stratum ORDER BY minute ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                   AS before
          FROM per_minute),
        onset AS (
          SELECT r.stratum, min(r.minute) AS onset
          FROM roll r JOIN screen s USING (stratum) JOIN cumulative c USING (stratum, minute)
          WHERE r.rp90 >= {RATIO} * s.q AND coalesce(c.before, 0) >= {BASELINE_MIN_SPANS}
          GROUP BY r.stratum),
        base AS (
          SELECT l.stratum, o.onset, quantile_cont(l.dur, [0.5, 0.9, 0.99]) AS q
          FROM lat l JOIN onset o USING (stratum)
          WHERE l.minute < o.onset AND l.minute >= o.onset - {BASELINE_NS // MINUTE_NS}
          GROUP BY l.stratum, o.onset HAVING count(*) >= {BASELINE_MIN_SPANS}),
        hot AS (
          SELECT r.stratum, r.gpu, r.minute, greatest({P99_FACTOR} * b.q[3], {MEDIAN_FACTOR} * b.q[1]) AS limit_ns
          FROM roll r JOIN base b USING (stratum)
          WHERE r.minute >= b.onset AND r.rp90 >= {RATIO} * b.q[2])
        SELECT l.trace_id, l.span_id
        FROM lat l JOIN hot h USING (stratum, gpu, minute)
        WHERE l.dur > h.limit_ns
        """,
        params,
    )
