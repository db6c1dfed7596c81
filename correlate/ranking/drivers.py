"""Drivers: attribute values whose share among a group of failures differs from their share among successes.

Scored as Elastic's failed-transaction correlations score terms: a one-sided p-value per (attribute, value),
normalised onto 0..1, failure share against baseline share. Every span and resource attribute takes part;
numeric ones with at most 20 distinct values are categories (reported by exact value), others are cut into
quintile ranges. Successes are sampled (deterministically) when there are many, which only widens p-values.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from gpu_rca.correlate.ranking.stats import DRIVER_P_THRESHOLD, clean, normalized_score, proportion_p_value
from gpu_rca.correlate.store.query import scalar
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.results import Driver

#: A numeric attribute with at most this many distinct values is a category (docs/contracts.md §3).
MAX_CATEGORY_VALUES = 20
#: Successes used as the baseline; more only narrows p-values that are already tiny.
BASELINE_SAMPLE = 20_000
#: Span attributes that identify or measure rather than describe a request: never drivers.
EXCLUDED = frozenset(
    {s.attribute for s in a.STAMPS if s.attribute not in (a.GPU_UUID, a.GPU_NAME)}
    | {
        a.GPU_INDEX,
        a.GPU_PCI_BUS_ID,
        "telemetry.sdk.name",
        "telemetry.sdk.version",
        "telemetry.sdk.language",
        "exception.message",
        "exception.stacktrace",
        "exception.type",
        "otel.status_description",
    }
)
_NUMERIC = ("UBIGINT", "BIGINT", "DOUBLE", "INTEGER", "HUGEINT")


@dataclass(frozen=True)
class DriverRow:
    """One (group, attribute, value) with its counts and significance."""

    group: int
    attribute: str
    value: str | int | float
    failures: int
    group_total: int
    baseline: int
    baseline_total: int
    p_value: float

    @property
    def failure_share(self) -> float:
        """Share of the group's failures with this value."""
        return self.failures / self.group_total if self.group_total else 0.0

    @property
    def baseline_share(self) -> float:
        """Share of baseline successes with this value."""
        return self.baseline / self.baseline_total if self.baseline_total else 0.0

    @property
    def lift(self) -> float | None:
        """failure share / baseline share; None when the value never occurs among successes."""
        return self.failure_share / self.baseline_share if self.baseline_share else None

    @property
    def strength(self) -> float:
        """Elastic's normalised score of the p-value (0..1)."""
        return normalized_score(self.p_value)

    def as_driver(self) -> Driver:
        """The driver object of docs/contracts.md §3."""
        return {
            "attribute": self.attribute,
            "value": self.value,
            "failure_share": clean(self.failure_share, 4) or 0.0,
            "baseline_share": clean(self.baseline_share, 4) or 0.0,
            "lift": clean(self.lift, 3),
            "p_value": float(f"{self.p_value:.3g}"),
        }


def build_attribute_values(con: duckdb.DuckDBPyConnection) -> None:
    """`rk_kv(idx, attribute, value)`: each failed span's and sampled success's attribute values, binned."""
    excluded = ", ".join(f"'{name}'" for name in sorted(EXCLUDED))
    total_ok = scalar(con, "SELECT count(*) FROM rk_spans WHERE NOT failed")
    modulus = max(1, -(-total_ok // BASELINE_SAMPLE))
    keep = f"(failed OR hash(idx) % {modulus} = 0)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_kv_raw AS
        WITH picked AS (SELECT idx, failed, attributes, resource, gpu_uuid, gpu_name, host, service_version
                        FROM rk_spans WHERE {keep})
        SELECT DISTINCT idx, failed, attribute, raw, jtype FROM (
          SELECT idx, failed, e.key AS attribute, e.value::VARCHAR AS raw, e.type AS jtype
            FROM picked, json_each(picked.attributes) AS e
          UNION ALL
          SELECT idx, failed, e.key, e.value::VARCHAR, e.type FROM picked, json_each(picked.resource) AS e
          UNION ALL SELECT idx, failed, '{a.GPU_UUID}', to_json(gpu_uuid)::VARCHAR, 'VARCHAR'
            FROM picked WHERE gpu_uuid IS NOT NULL
          UNION ALL SELECT idx, failed, '{a.GPU_NAME}', to_json(gpu_name)::VARCHAR, 'VARCHAR'
            FROM picked WHERE gpu_name IS NOT NULL
          UNION ALL SELECT idx, failed, '{a.HOST_NAME}', to_json(host)::VARCHAR, 'VARCHAR' FROM picked WHERE host IS NOT NULL
          UNION ALL SELECT idx, failed, '{a.SERVICE_VERSION}', to_json(service_version)::VARCHAR, 'VARCHAR'
            FROM picked WHERE service_version IS NOT NULL
        ) WHERE jtype NOT IN ('ARRAY', 'OBJECT', 'NULL') AND attribute NOT IN ({excluded})
        """
    )
    numeric = ", ".join(f"'{t}'" for t in _NUMERIC)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rk_kv AS
        WITH kinds AS (
          SELECT attribute, bool_and(jtype IN ({numeric})) AS is_numeric, count(DISTINCT raw) AS n_values
          FROM rk_kv_raw GROUP BY attribute),
        ranged AS (
          SELECT k.idx, k.failed, k.attribute, CAST(k.raw AS DOUBLE) AS x,
                 ntile(5) OVER (PARTITION BY k.attribute ORDER BY CAST(k.raw AS DOUBLE), k.idx) AS bin
          FROM rk_kv_raw k JOIN kinds USING (attribute)
          WHERE kinds.is_numeric AND kinds.n_values > {MAX_CATEGORY_VALUES}),
        bins AS (SELECT attribute, bin, min(x) AS lo, max(x) AS hi FROM ranged GROUP BY ALL)
        SELECT k.idx, k.failed, k.attribute,
               CASE WHEN kinds.is_numeric THEN 'num' ELSE 'str' END AS kind,
               CASE WHEN kinds.is_numeric THEN NULL ELSE json_extract_string(k.raw, '$') END AS text,
               CASE WHEN kinds.is_numeric THEN CAST(k.raw AS DOUBLE) END AS number
        FROM rk_kv_raw k JOIN kinds USING (attribute)
        WHERE NOT kinds.is_numeric OR kinds.n_values <= {MAX_CATEGORY_VALUES}
        UNION ALL
        SELECT r.idx, r.failed, r.attribute, 'range',
               printf('%s..%s', {_number_text("b.lo")}, {_number_text("b.hi")}), NULL
        FROM ranged r JOIN bins b USING (attribute, bin)
        """
    )
    con.execute("DROP TABLE rk_kv_raw")


def _number_text(column: str) -> str:
    """SQL: a number as text, without a trailing `.0` for whole numbers."""
    return (
        f"CASE WHEN {column} = floor({column}) THEN CAST(CAST({column} AS BIGINT) AS VARCHAR)"
        f" ELSE CAST(round({column}, 3) AS VARCHAR) END"
    )


def driver_rows(con: duckdb.DuckDBPyConnection, groups_table: str) -> list[DriverRow]:
    """Every (group, attribute, value) over failed spans grouped by `groups_table(idx, grp)` vs successes."""
    rows = con.execute(
        f"""
        WITH group_sizes AS (SELECT grp, count(*) AS n FROM {groups_table} GROUP BY grp),
        fail_counts AS (
          SELECT g.grp, k.attribute, k.kind, k.text, k.number, count(*) AS n
          FROM rk_kv k JOIN {groups_table} g USING (idx) GROUP BY ALL),
        ok_counts AS (
          SELECT k.attribute, k.kind, k.text, k.number, count(*) AS n
          FROM rk_kv k WHERE NOT k.failed GROUP BY ALL)
        SELECT f.grp, f.attribute, f.kind, f.text, f.number, f.n, gs.n, coalesce(o.n, 0),
               (SELECT count(DISTINCT idx) FROM rk_kv WHERE NOT failed)
        FROM fail_counts f JOIN group_sizes gs USING (grp)
        LEFT JOIN ok_counts o ON o.attribute = f.attribute AND o.kind = f.kind
             AND o.text IS NOT DISTINCT FROM f.text AND o.number IS NOT DISTINCT FROM f.number
        """
    ).fetchall()
    result = []
    for grp, attribute, kind, text, number, n_fail, n_group, n_ok, n_ok_total in rows:
        p = proportion_p_value(n_fail, n_group, n_ok, n_ok_total)
        result.append(
            DriverRow(grp, attribute, _driver_value(kind, text, number), n_fail, n_group, n_ok, n_ok_total, p)
        )
    return result


def _driver_value(kind: str, text: str, number: float) -> str | int | float:
    """The attribute's value as recorded: text, or a number (whole numbers as int, as the span had them)."""
    if kind != "num":
        return text
    return int(number) if float(number).is_integer() else float(number)


def significant(rows: list[DriverRow], limit: int = 10) -> list[DriverRow]:
    """The rows that concentrate failures (p < 0.02, failure share above baseline), strongest first."""
    kept = [r for r in rows if r.p_value < DRIVER_P_THRESHOLD and r.failure_share > r.baseline_share]
    kept.sort(key=lambda r: (-r.strength, -(r.failure_share - r.baseline_share), r.attribute, str(r.value)))
    return kept[:limit]
