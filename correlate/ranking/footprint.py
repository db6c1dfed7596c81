"""Footprints: where failures fall, compared within strata of the same inputs, and the service's memory climb.

A workload cause (large inputs, a model) must explain why the same inputs did not fail elsewhere. For each
GPU with OOMs, its OOMs are compared with what the *other* GPUs' failure rate for the same inputs predicts:
within each stratum (same values of the request's categorical workload attributes: input size, model,
task type), expected = the GPU's requests × the other GPUs' OOM rate in that stratum, summed over the
strata (the expectation under "the inputs decide", as in a Cochran–Mantel–Haenszel comparison). OOMs the
same inputs elsewhere do not predict are local to the GPU: its memory, not the request's.

The climb: per GPU, the service's own GPU memory (`gpu.memory.process.max`, else the device's used memory)
minute by minute; a leak raises it minute after minute and only a restart brings it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from gpu_rca.correlate.ranking.signals import Signals
from gpu_rca.correlate.ranking.weights import CLIMB_STEP, STRATUM_MIN_OTHERS
from gpu_rca.correlate.ranking.window import MINUTE_NS, SKEW_NS, SpanSet
from gpu_rca.schemas import attributes as a

#: A categorical workload attribute has at most this many values in the window (else it is not a stratum key).
MAX_STRATUM_VALUES = 20


@dataclass(frozen=True)
class LocalFit:
    """One GPU's OOMs against what the other GPUs' rates for the same inputs predict."""

    observed: int  # its OOMs in comparable strata
    expected: float  # what the other GPUs' per-stratum OOM rates predict for its requests

    @property
    def local_share(self) -> float:
        """Share of its OOMs the same inputs elsewhere do not explain (0: the inputs decide; 1: local)."""
        return 1.0 - min(1.0, self.expected / self.observed) if self.observed else 0.0


@dataclass(frozen=True)
class Climb:
    """Minute-to-minute changes of the service's own GPU memory on one GPU."""

    rises: int
    falls: int
    minutes: int

    @property
    def share(self) -> float:
        """Rising minutes among the minute-to-minute steps observed (a leak rises minute after minute)."""
        return self.rises / (self.minutes - 1) if self.minutes > 1 else 0.0


@dataclass
class Footprints:
    """The OOMs' footprint across GPUs (within strata) and each GPU's memory climb."""

    local: dict[str, LocalFit] = field(default_factory=dict)
    climbs: dict[str, Climb] = field(default_factory=dict)
    strata: tuple[str, ...] = ()

    @property
    def local_share(self) -> float | None:
        """Share of all comparable OOMs that are local to their GPU (None: nothing to compare with)."""
        observed = sum(f.observed for f in self.local.values())
        if not observed:
            return None
        local = sum(f.observed - min(f.expected, f.observed) for f in self.local.values())
        return local / observed


def _stratum_keys(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    found = []
    for name in a.WORKLOAD_ATTRIBUTES:
        path = f"'$.\"{name}\"'"
        row = con.execute(f"SELECT count(DISTINCT json_extract_string(attributes, {path})) FROM rk_spans").fetchone()
        n = int(row[0]) if row else 0
        if 1 <= n <= MAX_STRATUM_VALUES:
            found.append(name)
    return tuple(found)


def footprints(con: duckdb.DuckDBPyConnection, spans: SpanSet, sig: Signals) -> Footprints:
    """The OOMs' within-strata footprint and each failing GPU's memory climb."""
    out = Footprints()
    oom = sig.fleet_failed.get("oom")
    if oom is not None and oom.n and oom.onset_ns is not None and oom.last_ns is not None:
        keys = _stratum_keys(con)
        out.strata = keys
        stratum = (
            "concat_ws('|', " + ", ".join(f"json_extract_string(attributes, '$.\"{k}\"')" for k in keys) + ")"
            if keys
            else "''"
        )
        rows = con.execute(
            f"""
            WITH s AS (
              SELECT coalesce(gpu_uuid, '') AS g, {stratum} AS k, family = 'oom' AS oom,
                     CASE WHEN failed THEN 1 ELSE {spans.success_stride} END AS w
              FROM rk_spans WHERE end_ns BETWEEN ? AND ?),
            c AS (SELECT g, k, sum(w) AS n, count(*) FILTER (WHERE coalesce(oom, false)) AS f FROM s GROUP BY g, k),
            t AS (SELECT k, sum(n) AS n, sum(f) AS f FROM c GROUP BY k)
            SELECT c.g, sum(c.f), sum(c.n * (t.f - c.f) / (t.n - c.n))
            FROM c JOIN t USING (k) WHERE t.n - c.n >= {STRATUM_MIN_OTHERS} AND c.f > 0
            GROUP BY c.g
            """,
            [oom.onset_ns - SKEW_NS, oom.last_ns],
        ).fetchall()
        out.local = {g: LocalFit(int(observed), float(expected or 0.0)) for g, observed, expected in rows}
    for g, rises, falls, minutes in con.execute(
        f"""
        WITH m AS (
          SELECT coalesce(gpu_uuid, '') AS g, end_ns // {MINUTE_NS} AS minute,
                 -- without the process stamp, the device's used memory (the service's, plus any other's)
                 max(coalesce(stamp_process_bytes, mem_used_bytes)) AS v, max(mem_total_bytes) AS total
          FROM rk_spans WHERE coalesce(stamp_process_bytes, mem_used_bytes) IS NOT NULL GROUP BY ALL),
        d AS (SELECT g, v - lag(v) OVER (PARTITION BY g ORDER BY minute) AS dv, total FROM m)
        SELECT g, count(*) FILTER (WHERE dv > {CLIMB_STEP} * total), count(*) FILTER (WHERE dv < -{CLIMB_STEP} * total),
               count(*)
        FROM d GROUP BY g
        """
    ).fetchall():
        out.climbs[g] = Climb(int(rises), int(falls), int(minutes))
    return out
