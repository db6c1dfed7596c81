"""Incidents per GPU, read from the stored digests (docs/contracts.md §7 `digests`).

A digest is the incident record: each of its causes names the GPUs it blames (`gpus` in §3's cause).
Digests of the same GPU whose windows overlap (a burst digest and the alert's digest of the same failures)
are one incident. Identity is the GPU's UUID, never its host or index, so a GPU moved to another host keeps
its incidents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb

from gpu_rca.schemas import store as s


@dataclass
class Incident:
    """One incident on one GPU: its digests (ids), its window, and the causes that named the GPU."""

    digest_ids: list[str]
    start_ns: int
    end_ns: int
    causes: list[str] = field(default_factory=list)


def _digest_rows(
    con: duckdb.DuckDBPyConnection, since_ns: int | None, until_ns: int | None
) -> list[tuple[str, int, int, list[str] | None, list[str] | None]]:
    return con.execute(
        f"""
        SELECT id, window_start_ns, window_end_ns,
               json_extract_string(json, '$.causes[*].cause'), json_extract(json, '$.causes[*].gpus')
        FROM {s.DIGESTS}
        WHERE window_start_ns IS NOT NULL AND window_end_ns IS NOT NULL
          AND (?::BIGINT IS NULL OR window_end_ns >= ?::BIGINT)
          AND (?::BIGINT IS NULL OR window_start_ns <= ?::BIGINT)
        ORDER BY window_start_ns, id
        """,
        [since_ns, since_ns, until_ns, until_ns],
    ).fetchall()


def incidents_by_gpu(
    con: duckdb.DuckDBPyConnection, *, since_ns: int | None = None, until_ns: int | None = None
) -> dict[str, list[Incident]]:
    """GPU UUID -> its incidents, oldest first, from digests whose window reaches into [since, until]."""
    found: dict[str, list[Incident]] = {}
    for digest_id, start_ns, end_ns, causes, gpu_lists in _digest_rows(con, since_ns, until_ns):
        blamed: dict[str, list[str]] = {}
        for cause, gpus in zip(causes or [], gpu_lists or [], strict=False):
            for uuid in _uuids(gpus):
                if cause and cause not in blamed.setdefault(uuid, []):
                    blamed[uuid].append(cause)
        for uuid, named in blamed.items():
            incidents = found.setdefault(uuid, [])
            last = incidents[-1] if incidents else None
            if last is not None and start_ns <= last.end_ns:  # overlapping digests: the same incident
                last.digest_ids.append(digest_id)
                last.end_ns = max(last.end_ns, end_ns)
                last.causes.extend(c for c in named if c not in last.causes)
            else:
                incidents.append(Incident([digest_id], start_ns, end_ns, list(named)))
    return found


def earlier_incidents(
    con: duckdb.DuckDBPyConnection, gpu_uuid: str, *, start_ns: int, end_ns: int, days: int
) -> list[Incident]:
    """The GPU's incidents that ended before [start, end] began and within `days` before its end (not
    incidents whose digests overlap the window: those are this incident)."""
    since_ns = end_ns - days * 86_400 * 10**9
    incidents = incidents_by_gpu(con, since_ns=since_ns, until_ns=end_ns).get(gpu_uuid, [])
    return [i for i in incidents if i.end_ns < start_ns]


def _uuids(value: object) -> list[str]:
    """The GPU UUIDs of one cause's `gpus` (JSON text as DuckDB returns it)."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return []
    return [u for u in parsed if isinstance(u, str) and u] if isinstance(parsed, list) else []


__all__ = ["Incident", "earlier_incidents", "incidents_by_gpu"]
