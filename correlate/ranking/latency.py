"""Latency incidents without a threshold: inference spans far slower than comparable requests were before.

Comparable requests form a **stratum**: same service, `ddcolor.model`, `ddcolor.input_size` and GPU model
(`gpu.name`). A request's latency is judged only against its stratum, so a 1536 px request is not slow
next to a 512 px one, nor a T4's next to an H100's. Everything runs in DuckDB over the store's successful
inference spans (errored ones already count as failed); the outcome is `rk_slow(trace_id, span_id)`.

1. **Cells**: per (stratum, GPU, minute) the p90 of latency; its **rolling p90** is the median of the cell
   and its two neighbouring minutes, so one noisy minute never decides. Where traffic is thin (a small
   stratum, or traces tail-sampled to a tenth), a (stratum, GPU)'s cells widen to as many minutes as it
   takes to expect `CELL_TARGET_SPANS` spans, at most `MAX_CELL_MINUTES`; a wide cell's rolling p90 is
   the median over it and its neighbouring cells, and it stands for each of its minutes.
2. **Onset** (screening): a stratum's first minute whose rolling p90, on some GPU, is at least
   `RATIO`× the stratum's lower-quartile cell p90, once the stratum has `BASELINE_MIN_SPANS` earlier spans.
3. **Baseline**: the stratum's spans in the `BASELINE_NS` before that onset — their median, p90 and p99.
4. **Slow**: a request from the onset on whose GPU's rolling p90 in its minute is at least `RATIO`× the
   baseline p90 (the stratum is in an incident there, not in its ordinary tail) and whose own latency
   exceeds max(`P99_FACTOR` × baseline p99, `MEDIAN_FACTOR` × baseline median).
5. **An incident moves the p99**: the slow requests must be at least `MIN_SLOW_SHARE` of the successful
   requests from the first onset on (every stratum and GPU in scope), else none counts. Fewer is a handful
   of requests caught behind a momentary queue at a traffic peak — the ordinary tail of a busy hour, not a
   latency incident ("p99 of comparable requests up several-fold for minutes").

This is the robust-baseline scoring of BARO (Pham et al., FSE 2024: median and quantiles of the period
before the anomaly, not the mean and standard deviation) applied to per-stratum latency, with the onset
taken as the first sustained quantile shift.
"""

from __future__ import annotations

import duckdb

from gpu_rca.correlate.ranking.window import MINUTE_NS, Filters, filter_sql, table_columns
from gpu_rca.correlate.store.query import one_row, scalar

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
#: Slow requests must be at least this share of the requests from the first onset on (p99 moved), else none is.
MIN_SLOW_SHARE = 0.01
#: Spans a cell should expect: a (stratum, GPU) with fewer a minute gets cells of several minutes …
CELL_TARGET_SPANS = 6
#: … at most this many (wider would blur an incident's onset by more than a fault takes to show).
MAX_CELL_MINUTES = 5


def _col(columns: set[str], name: str) -> str:
    return name if name in columns else "NULL"


def stratum_sql(columns: set[str]) -> str:
    """SQL naming a span's stratum of comparable requests: service, model, input size and GPU model."""
    parts = ", ".join(_col(columns, c) for c in ("service", "ddcolor_model", "ddcolor_input_size", "gpu_name"))
    return f"hash({parts})"


def detect_slow(con: duckdb.DuckDBPyConnection, filters: Filters, since_ns: int | None, until_ns: int | None) -> int:
    """Create `rk_slow(trace_id, span_id, end_ns)`: the spans that count as slow failures; return their number.

    Two scans of the span columns the strata need (no span ids until the last, filtered, one); the
    tables in between hold one row per (stratum, GPU, minute) at most.
    """
    columns = table_columns(con, "spans")
    where, params = filter_sql(filters, columns)
    where += " AND status <> 'ERROR'"
    if since_ns is not None:
        where += f" AND end_ns >= {int(since_ns) - BASELINE_NS}"
    if until_ns is not None:
        where += f" AND end_ns <= {int(until_ns)}"

    stratum = stratum_sql(columns)
    gpu = f"coalesce({_col(columns, 'gpu_uuid')}, '')"
    minute = f"end_ns // {MINUTE_NS}"
    dur = "(end_ns - start_ns)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_slow_minutes AS
        SELECT {stratum} AS stratum, {gpu} AS gpu, {minute} AS minute, quantile_disc({dur}, 0.9) AS p90,
               count(*) AS n
        FROM spans WHERE {where} GROUP BY ALL
        """,
        params,
    )
    # A (stratum, GPU) with thin traffic gets cells of several minutes (width); one minute otherwise.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_slow_widths AS
        SELECT stratum, gpu,
               least({MAX_CELL_MINUTES}, greatest(1, ceil({CELL_TARGET_SPANS} * (max(minute) - min(minute) + 1)
                                                         / sum(n))))::BIGINT AS width
        FROM rk_slow_minutes GROUP BY ALL
        """
    )
    wide_cells = ""
    if scalar(con, "SELECT count(*) FROM rk_slow_widths WHERE width > 1"):
        # Only the thin (stratum, GPU)s are read again, into cells of `width` minutes.
        wide_cells = f"""
          UNION ALL
          SELECT l.stratum, l.gpu, min(l.minute) AS minute, quantile_disc(l.dur, 0.9) AS p90, count(*) AS n,
                 w.width, l.minute // w.width AS idx
          FROM (SELECT {stratum} AS stratum, {gpu} AS gpu, {minute} AS minute, {dur} AS dur
                FROM spans WHERE {where}) l
          JOIN rk_slow_widths w USING (stratum, gpu) WHERE w.width > 1
          GROUP BY l.stratum, l.gpu, w.width, idx"""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_slow_cells AS
        WITH cells AS MATERIALIZED (
          SELECT m.stratum, m.gpu, m.minute, m.p90, m.n, 1::BIGINT AS width, m.minute AS idx
          FROM rk_slow_minutes m JOIN rk_slow_widths w USING (stratum, gpu) WHERE w.width = 1
          {wide_cells}),
        roll AS (
          SELECT stratum, gpu, minute, width, idx,
                 median(p90) OVER (PARTITION BY stratum, gpu ORDER BY idx
                                   RANGE BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS rp90
          FROM cells WHERE n >= {CELL_MIN_SPANS}),
        screen AS (
          SELECT stratum, quantile_cont(p90, 0.25) AS q FROM cells WHERE n >= {CELL_MIN_SPANS} GROUP BY stratum),
        per_minute AS (SELECT stratum, minute, sum(n) AS n FROM rk_slow_minutes GROUP BY ALL),
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
        spread AS (  -- a wide cell stands for each of its minutes
          SELECT stratum, gpu, unnest(CASE WHEN width = 1 THEN [minute] ELSE range(idx * width, (idx + 1) * width) END)
                   AS minute, rp90
          FROM roll)
        SELECT r.stratum, r.gpu, r.minute, r.rp90, o.onset
        FROM spread r JOIN onset o USING (stratum) WHERE r.minute >= o.onset
        """,
        params if wide_cells else [],
    )
    if not scalar(con, "SELECT count(*) FROM rk_slow_cells"):
        con.execute("CREATE OR REPLACE TEMP TABLE rk_slow (trace_id VARCHAR, span_id VARCHAR, end_ns BIGINT)")
        return 0
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_slow_base AS
        WITH onset AS (SELECT DISTINCT stratum, onset FROM rk_slow_cells),
        lat AS (SELECT {stratum} AS stratum, {minute} AS minute, {dur} AS dur FROM spans WHERE {where})
        SELECT l.stratum, quantile_cont(l.dur, [0.5, 0.9, 0.99]) AS q
        FROM lat l JOIN onset o USING (stratum)
        WHERE l.minute < o.onset AND l.minute >= o.onset - {BASELINE_NS // MINUTE_NS}
        GROUP BY l.stratum HAVING count(*) >= {BASELINE_MIN_SPANS}
        """,
        params,
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_slow_hot AS
        SELECT c.stratum, c.gpu, c.minute, greatest({P99_FACTOR} * b.q[3], {MEDIAN_FACTOR} * b.q[1]) AS limit_ns
        FROM rk_slow_cells c JOIN rk_slow_base b USING (stratum) WHERE c.rp90 >= {RATIO} * b.q[2]
        """
    )
    low, lo_min, hi_min = one_row(con, "SELECT min(limit_ns), min(minute), max(minute) FROM rk_slow_hot")
    if low is None:
        con.execute("CREATE OR REPLACE TEMP TABLE rk_slow (trace_id VARCHAR, span_id VARCHAR, end_ns BIGINT)")
        return 0
    # Only spans slower than the lowest limit, in the hot minutes, reach the join (a pushed-down filter).
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_slow AS
        WITH cand AS (
          SELECT trace_id, span_id, end_ns, {dur} AS dur, {stratum} AS stratum, {gpu} AS gpu, {minute} AS minute
          FROM spans WHERE {where} AND {dur} > {int(low)}
            AND end_ns >= {int(lo_min) * MINUTE_NS} AND end_ns < {(int(hi_min) + 1) * MINUTE_NS})
        SELECT c.trace_id, c.span_id, c.end_ns FROM cand c JOIN rk_slow_hot h USING (stratum, gpu, minute)
        WHERE c.dur > h.limit_ns
        """,
        params,
    )
    found = int(scalar(con, "SELECT count(*) FROM rk_slow"))
    first = scalar(con, "SELECT min(onset) FROM rk_slow_cells")
    since_onset = one_row(
        con, f"SELECT count(*) FROM spans WHERE {where} AND end_ns >= ?", [*params, int(first) * MINUTE_NS]
    )
    if found < MIN_SLOW_SHARE * int(since_onset[0] or 0):
        con.execute("DELETE FROM rk_slow_cells")  # no incident: `explain` takes the hour before a request instead
        con.execute("CREATE OR REPLACE TEMP TABLE rk_slow (trace_id VARCHAR, span_id VARCHAR, end_ns BIGINT)")
        return 0
    return found
