"""`correlate.analyze` (Contract 6): rank the root causes of failed inference spans in a window (Contract 3's JSON)."""

from __future__ import annotations

import os

from schemas.errors import UsageError
from schemas.results import AnalyzeResult

from correlate.ranking import DEFAULT_LOOKBACK_NS, analyze_connection
from correlate.ranking.timefmt import parse_duration_ns, parse_time_ns
from correlate.store import Store


def analyze(
    db_path: str | os.PathLike[str] | None = None,
    since: str | int | float | None = None,
    until: str | int | float | None = None,
    *,
    service: str | None = None,
    host: str | None = None,
    gpu: str | None = None,
    slow: str | None = None,
    lookback: str | None = None,
    warnings: list[str] | None = None,
) -> AnalyzeResult:
    """The same dict as `gpu-rca analyze --json`, from the store at `db_path` (default `$GPU_RCA_DB`).

    `since`/`until`: RFC 3339, epoch seconds, or a duration back from now (`2h`). Filters: `service`, `host`,
    `gpu` (UUID); `slow` (a duration such as `5s`: slower inference spans count as failed); `lookback`
    (default `15m`: how far before the first failure the window starts).
    """
    options = resolve_options(since, until, slow, lookback)
    with Store.open(db_path, read_only=True) as store:
        return analyze_connection(
            store.connection, service=service, host=host, gpu=gpu, warnings=warnings, **options
        )


def resolve_options(
    since: str | int | float | None, until: str | int | float | None, slow: str | None, lookback: str | None
) -> dict[str, int | None]:
    """User-facing times and durations as the ns keyword arguments of `analyze_connection`."""
    since_ns = None if since is None else parse_time_ns(since)
    until_ns = None if until is None else parse_time_ns(until)
    if since_ns is not None and until_ns is not None and since_ns >= until_ns:
        raise UsageError("--since must be before --until")
    return {
        "since_ns": since_ns,
        "until_ns": until_ns,
        "slow_ns": None if slow is None else parse_duration_ns(slow),
        "lookback_ns": DEFAULT_LOOKBACK_NS if lookback is None else parse_duration_ns(lookback),
    }


__all__ = ["analyze", "resolve_options"]
