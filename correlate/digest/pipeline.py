"""From a store and a window to a stored digest: analysis, rendering, archive, notification.

Shared by `gpu-rca digest --db`, the demo, and `serve`'s triggers, so a digest looks the same
whichever way it was made.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from gpu_rca.correlate.digest import links, notify
from gpu_rca.correlate.digest.alertmanager import AlertedGpu
from gpu_rca.correlate.digest.build import build_digest
from gpu_rca.correlate.digest.model import Digest, Trigger
from gpu_rca.correlate.store.errors import first_line

#: The window a digest says it covers when the store could not be read and no window was asked for.
UNANALYSED_WINDOW_NS = 3600 * 1_000_000_000


@dataclass(frozen=True)
class DigestSettings:
    """Where links point and who is told: Grafana, the outgoing webhook, the page's public address."""

    grafana_url: str | None = None
    notify_url: str | None = None
    public_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **explicit: str | None) -> DigestSettings:
        """Settings from explicit values (CLI options), else `$GPU_RCA_GRAFANA_URL`, `…_NOTIFY_URL`, `…_PUBLIC_URL`."""

        def pick(key: str, env: str) -> str | None:
            value = explicit.get(key) or environ.get(env) or None
            return value.rstrip("/") if value else None

        settings = cls(
            grafana_url=pick("grafana_url", links.GRAFANA_URL_ENV),
            notify_url=pick("notify_url", notify.NOTIFY_URL_ENV),
            public_url=pick("public_url", links.PUBLIC_URL_ENV),
        )
        if settings.notify_url:
            notify.check_notify_url(settings.notify_url)
        return settings


def analyze_window(
    con: duckdb.DuckDBPyConnection, *, since_ns: int | None, until_ns: int | None, gpu: str | None = None
) -> dict[str, Any]:
    """The analysis (docs/contracts.md §3) of a window, ranked on an open connection."""
    from gpu_rca.correlate.ranking import analyze_connection

    return dict(analyze_connection(con, since_ns=since_ns, until_ns=until_ns, gpu=gpu))  # the digest's JSON document


def make_digest(
    con: duckdb.DuckDBPyConnection,
    *,
    trigger: Trigger,
    settings: DigestSettings,
    since_ns: int | None = None,
    until_ns: int | None = None,
    gpu: str | None = None,
    analysis: dict[str, Any] | None = None,
    now_ns: int | None = None,
    problems: Sequence[str] = (),
) -> Digest:
    """Analyse (unless given the analysis) and build the digest; nothing is stored yet.

    `problems` (Prometheus unreachable, GPUs the store lacks, …) and the trigger's GPUs that have no metric
    samples in the window lead the digest's `warnings`, so its reader learns what it was made without.
    """
    if analysis is None:
        try:
            analysis = analyze_window(con, since_ns=since_ns, until_ns=until_ns, gpu=gpu)
        except duckdb.Error as exc:
            # The reader of a digest made while the store failed learns that, rather than nothing at all.
            analysis = _unanalysed(since_ns, until_ns, now_ns, f"the store could not be read: {first_line(exc)}")
    try:
        missing = _gpus_without_metrics(con, trigger, analysis["window"])
    except duckdb.Error:
        missing = []  # the store's failure is said already, or will be by the digest's own reads
    found = [*problems, *missing]
    if found:
        analysis = {**analysis, "warnings": [*found, *[w for w in analysis["warnings"] if w not in found]]}
    return build_digest(con, analysis, trigger=trigger, grafana_url=settings.grafana_url, now_ns=now_ns)


def _unanalysed(since_ns: int | None, until_ns: int | None, now_ns: int | None, why: str) -> dict[str, Any]:
    """The analysis document of a window that could not be analysed: no spans, no causes, and why."""
    from gpu_rca.schemas.timefmt import rfc3339

    end_ns = until_ns if until_ns is not None else (now_ns if now_ns is not None else time.time_ns())
    start_ns = since_ns if since_ns is not None else end_ns - UNANALYSED_WINDOW_NS
    return {
        "window": {"start": rfc3339(start_ns), "end": rfc3339(end_ns)},
        "spans": {"total": 0, "failed": 0, "slow": 0},
        "warnings": [why],
        "causes": [],
    }


def _gpus_without_metrics(con: duckdb.DuckDBPyConnection, trigger: Trigger, window: dict[str, str]) -> list[str]:
    """A warning naming the trigger's GPUs that have no metric sample in the window, if any."""
    from gpu_rca.schemas.timefmt import parse_rfc3339_ns

    wanted = [g for g in dict.fromkeys(trigger.gpus) if g]
    if not wanted:
        return []
    start_ns, end_ns = parse_rfc3339_ns(window["start"]), parse_rfc3339_ns(window["end"])
    rows = con.execute(
        "SELECT DISTINCT gpu_uuid FROM metric_samples WHERE gpu_uuid IN (SELECT unnest(?)) AND ts_ns BETWEEN ? AND ?",
        [wanted, start_ns, end_ns],
    ).fetchall()
    have = {r[0] for r in rows}
    missing = [g for g in wanted if g not in have]
    if not missing:
        return []
    plural = len(missing) > 1
    return [
        f"no GPU metrics in the store for the {trigger.kind} trigger's GPU{'s' if plural else ''} "
        f"{', '.join(missing)} in this window: the ranking lacks metric evidence for {'them' if plural else 'it'}"
    ]


def resolve_gpus(con: duckdb.DuckDBPyConnection, alerted: Sequence[AlertedGpu]) -> tuple[list[str], list[str]]:
    """UUIDs of the GPUs an alert names (by UUID, else index on host via the inventory), and those not found."""
    found: list[str] = []
    missing: list[str] = []
    for gpu in alerted:
        if gpu.uuid:
            found.append(gpu.uuid)
            continue
        row = con.execute(
            "SELECT gpu_uuid FROM gpus WHERE gpu_index = ? AND host = ? ORDER BY gpu_uuid LIMIT 1",
            [gpu.index, gpu.host],
        ).fetchone()
        (found if row else missing).append(row[0] if row else gpu.describe())
    return list(dict.fromkeys(found)), missing


def deliver(digest: Digest, settings: DigestSettings) -> None:
    """Post the digest's summary to the notify URL, if one is set (NotifyError when it fails)."""
    if settings.notify_url:
        notify.post_summary(settings.notify_url, digest, links.digest_page_url(settings.public_url, digest.id))
