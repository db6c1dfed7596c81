"""Hypotheses compete for failed spans; the winners become the ranked causes of docs/contracts.md §3.

Each failed span goes to the hypothesis that explains it best (strength × how well its error family and
its own stamps fit), in one DuckDB join of failed spans with the small hypothesis table. Hypotheses of one
cause on several GPUs merge into one entry (each cause id appears once); a cause left with too few failures
is dropped unless it is a credible alternative for spans another cause took (then it ranks low).
"""

from __future__ import annotations

import math
from collections import defaultdict

import duckdb

from gpu_rca.correlate.ranking.causes import Hypothesis
from gpu_rca.correlate.ranking.drivers import DriverRow, driver_rows, significant
from gpu_rca.correlate.ranking.evidence import EvidenceList, short_uuid
from gpu_rca.correlate.ranking.signals import FEATURES
from gpu_rca.correlate.ranking.weights import (
    ALTERNATIVE_MIN_STRENGTH,
    ALTERNATIVE_SCORE,
    CONFLICT_FIT,
    HIGH_MAX_AMBIGUITY,
    HIGH_MIN_SHARE,
    HIGH_MIN_STRENGTH,
    MEDIUM_MAX_AMBIGUITY,
    MEDIUM_MIN_STRENGTH,
    MIN_SUPPORT,
    MIN_SUPPORT_SHARE,
    SCORE_BASE,
)
from gpu_rca.correlate.ranking.window import SpanSet
from gpu_rca.schemas.results import CauseResult, Confidence

EXAMPLE_TRACES = 5


def min_support(failed: int) -> int:
    """The fewest failures a cause must explain: `MIN_SUPPORT`, or `MIN_SUPPORT_SHARE` of the window's failures."""
    return max(MIN_SUPPORT, math.ceil(MIN_SUPPORT_SHARE * failed))


def assign(con: duckdb.DuckDBPyConnection, hyps: list[Hypothesis]) -> None:
    """`rk_fit(idx, h, fit)` for every (failed span, hypothesis) pair that fits; `rk_assign(idx, h, fit, second)`."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rk_hyp (h INTEGER, cause VARCHAR, gpu_uuid VARCHAR, host VARCHAR, family VARCHAR,"
        " weight DOUBLE, feature VARCHAR, off_feature DOUBLE, since_ns BIGINT)"
    )
    rows = [
        (i, h.cause, h.gpu_uuid, h.host, family, h.strength * h.timing * weight, h.feature, h.off_feature, h.since_ns)
        for i, h in enumerate(hyps)
        for family, weight in h.families.items()
    ]
    if rows:
        con.executemany("INSERT INTO rk_hyp VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    feature_case = " ".join(f"WHEN '{name}' THEN ({sql})" for name, sql in FEATURES.items())
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_fit AS
        SELECT s.idx, h.h, h.cause,
               h.weight * CASE WHEN h.feature IS NULL THEN 1.0
                               WHEN coalesce(CASE h.feature {feature_case} END, false) THEN 1.0
                               ELSE h.off_feature END AS fit
        FROM rk_spans s JOIN rk_hyp h ON s.family = h.family
        WHERE s.failed AND (h.gpu_uuid IS NULL OR h.gpu_uuid = s.gpu_uuid)
          -- a host-scoped hypothesis (no GPU, a host) claims the spans of that host only
          AND (h.gpu_uuid IS NOT NULL OR h.host IS NULL OR h.host = s.host)
          AND (h.since_ns IS NULL OR s.end_ns >= h.since_ns)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE rk_assign AS
        WITH best AS (SELECT idx, arg_max(h, fit) AS h, arg_max(cause, fit) AS cause, max(fit) AS fit
                      FROM rk_fit GROUP BY idx)
        SELECT b.idx, b.h, b.cause, b.fit,
               coalesce((SELECT max(f.fit) FROM rk_fit f WHERE f.idx = b.idx AND f.cause <> b.cause), 0) AS second
        FROM best b
        """
    )


def rank(con: duckdb.DuckDBPyConnection, spans: SpanSet, hyps: list[Hypothesis]) -> tuple[list[CauseResult], int]:
    """Ranked causes (docs/contracts.md §3) and the number of failed spans no cause explains."""
    if not hyps or not spans.failed:
        return [], spans.failed
    assign(con, hyps)
    assigned = dict(con.execute("SELECT h, count(*) FROM rk_assign GROUP BY h").fetchall())
    claimable = dict(con.execute("SELECT h, count(DISTINCT idx) FROM rk_fit GROUP BY h").fetchall())
    ambiguity = dict(con.execute("SELECT cause, avg(second / fit) FROM rk_assign GROUP BY cause").fetchall())
    rivals = _rivals(con, hyps)
    floor = min_support(spans.failed)

    by_cause: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hyps):
        by_cause[h.cause].append(i)
    primary: list[tuple[str, list[int]]] = []
    alternatives: list[tuple[str, list[int]]] = []
    for cause, members in by_cause.items():
        members = sorted(members, key=lambda i: -hyps[i].strength * hyps[i].timing)
        n = sum(assigned.get(i, 0) for i in members)
        if n >= floor:
            primary.append((cause, [i for i in members if assigned.get(i, 0)]))
        elif (
            max(claimable.get(i, 0) for i in members) >= floor and hyps[members[0]].strength >= ALTERNATIVE_MIN_STRENGTH
        ):
            alternatives.append((cause, members[:1]))

    slots = {cause: slot for slot, (cause, _) in enumerate(primary)}
    con.execute("CREATE OR REPLACE TEMP TABLE rk_groups AS SELECT idx, 0 AS grp FROM rk_assign WHERE false")
    for cause, slot in slots.items():
        con.execute("INSERT INTO rk_groups SELECT idx, ? FROM rk_assign WHERE cause = ?", [slot, cause])
    drivers_by_slot: dict[int, list[DriverRow]] = defaultdict(list)
    for row in driver_rows(con, "rk_groups"):
        drivers_by_slot[row.group].append(row)

    results: list[CauseResult] = []
    for cause, members in primary:
        n = sum(assigned[i] for i in members)
        lead = hyps[members[0]]
        score = lead.strength * lead.timing * (SCORE_BASE + (1 - SCORE_BASE) * math.sqrt(n / spans.failed))
        confidence = _confidence(lead, n / spans.failed, float(ambiguity.get(cause) or 0.0))
        ev = EvidenceList()
        summary = lead.describe(assigned[members[0]], ev)
        ev.extend(lead.evidence)
        rival = rivals.get(cause)
        if rival is not None:
            # Two explanations of the same failures whose footprints disagree: one local, one fleet-wide.
            if confidence == "high":
                confidence = "medium"
            rival_cause, ratio = rival
            r = ev.add("conflict", f"{rival_cause} fits these failures, relative to {cause}", round(ratio, 2), unit="x")
            summary += (
                f" Conflicting footprint: {rival_cause} explains the same failures {r} as well, but places them"
                f" {'on the whole fleet' if _local(hyps, cause) else 'on single GPUs'}."
            )
        for i in members[1:]:
            other = hyps[i]
            k = ev.add("count", "failed_spans", assigned[i], gpu_uuid=other.gpu_uuid, host=other.host)
            place = (
                f"host {other.host}"
                if other.gpu_uuid is None
                else f"GPU {short_uuid(other.gpu_uuid)} on {other.host or 'an unknown host'}"
            )
            summary += f" Also on {place} ({k} failed requests)."
            ev.extend(other.evidence)
        results.append(
            _result(
                con,
                cause,
                score,
                confidence,
                summary,
                ev,
                n,
                significant(drivers_by_slot[slots[cause]]),
                "rk_assign",
                cause,
            )
        )
    for cause, members in alternatives:
        lead = hyps[members[0]]
        n = claimable[members[0]]
        score = ALTERNATIVE_SCORE * lead.strength * lead.timing * math.sqrt(n / spans.failed)
        ev = EvidenceList()
        summary = "An alternative explanation for failures ranked above: " + lead.describe(n, ev)
        ev.extend(lead.evidence)
        con.execute("CREATE OR REPLACE TEMP TABLE rk_alt AS SELECT idx, h, cause FROM rk_fit WHERE h = ?", [members[0]])
        results.append(_result(con, cause, score, "low", summary, ev, n, [], "rk_alt", cause))
    results.sort(key=lambda r: (-r["score"], r["cause"]))
    explained = sum(assigned[i] for _, members in primary for i in members)
    return results, spans.failed - explained


def _local(hyps: list[Hypothesis], cause: str) -> bool:
    """Whether a cause's hypotheses are each confined to a GPU or a host (else fleet-wide)."""
    return all(h.gpu_uuid is not None or h.host is not None for h in hyps if h.cause == cause)


def _rivals(con: duckdb.DuckDBPyConnection, hyps: list[Hypothesis]) -> dict[str, tuple[str, float]]:
    """Per cause, the strongest other cause fitting its spans with a conflicting footprint (local vs fleet-wide)."""
    rows = con.execute(
        "WITH n AS (SELECT cause, count(*) AS n FROM rk_assign GROUP BY cause),"
        " f AS (SELECT idx, cause, max(fit) AS fit FROM rk_fit GROUP BY ALL),"
        " r AS (SELECT a.cause, f.cause AS other, sum(f.fit / a.fit) AS s"
        "       FROM rk_assign a JOIN f ON f.idx = a.idx AND f.cause <> a.cause GROUP BY ALL)"
        " SELECT r.cause, r.other, r.s / n.n FROM r JOIN n USING (cause) ORDER BY 3 DESC, 1, 2"
    ).fetchall()
    out: dict[str, tuple[str, float]] = {}
    for cause, other, ratio in rows:
        if cause in out or ratio < CONFLICT_FIT or _local(hyps, cause) == _local(hyps, other):
            continue
        out[cause] = (other, float(ratio))
    return out


def _confidence(lead: Hypothesis, share: float, ambiguity: float) -> Confidence:
    if (
        lead.strength >= HIGH_MIN_STRENGTH
        and lead.precedes is not False
        and ambiguity <= HIGH_MAX_AMBIGUITY
        and share >= HIGH_MIN_SHARE
    ):
        return "high"
    if lead.strength >= MEDIUM_MIN_STRENGTH and ambiguity <= MEDIUM_MAX_AMBIGUITY:
        return "medium"
    return "low"


def _result(
    con: duckdb.DuckDBPyConnection,
    cause: str,
    score: float,
    confidence: Confidence,
    summary: str,
    ev: EvidenceList,
    n: int,
    drivers: list[DriverRow],
    table: str,
    key: str,
) -> CauseResult:
    gpus = [
        r[0]
        for r in con.execute(
            f"SELECT s.gpu_uuid FROM {table} a JOIN rk_spans s USING (idx) WHERE a.cause = ? AND s.gpu_uuid IS NOT NULL"
            " GROUP BY ALL ORDER BY count(*) DESC, s.gpu_uuid",
            [key],
        ).fetchall()
    ]
    hosts = [
        r[0]
        for r in con.execute(
            f"SELECT s.host FROM {table} a JOIN rk_spans s USING (idx) WHERE a.cause = ? AND s.host IS NOT NULL"
            " GROUP BY ALL ORDER BY count(*) DESC, s.host",
            [key],
        ).fetchall()
    ]
    traces = [
        r[0]
        for r in con.execute(
            f"SELECT s.trace_id FROM {table} a JOIN rk_spans s USING (idx) WHERE a.cause = ?"
            f" GROUP BY s.trace_id ORDER BY min(s.end_ns), s.trace_id LIMIT {EXAMPLE_TRACES}",
            [key],
        ).fetchall()
    ]
    return {
        "cause": cause,
        "score": round(min(1.0, max(0.0, score)), 3),
        "confidence": confidence,
        "summary": summary,
        "drivers": [d.as_driver() for d in drivers],
        "evidence": ev.items,
        "failed_spans": int(n),
        "gpus": gpus,
        "hosts": hosts,
        "example_traces": traces,
    }
