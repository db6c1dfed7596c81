"""`correlate.analyze` (docs/contracts.md §6): rank the root causes of failed inference spans in a window (the JSON of docs/contracts.md §3)."""

from __future__ import annotations

import os
from typing import TypedDict

from gpu_rca.correlate.ranking.explain import explain_connection
from gpu_rca.correlate.ranking.latency import detect_slow
from gpu_rca.correlate.ranking.run import DEFAULT_LOOKBACK_NS, analyze_connection
from gpu_rca.correlate.ranking.window import Filters, resolve_window
from gpu_rca.correlate.store import Store
from gpu_rca.schemas.errors import InputError, UsageError
from gpu_rca.schemas.results import AnalyzeResult, ExplainResult
from gpu_rca.schemas.timefmt import parse_duration_ns, parse_time_ns


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
    prometheus: str | None = None,
    warnings: list[str] | None = None,
) -> AnalyzeResult:
    """The same dict as `gpu-rca analyze --json`, from the store at `db_path` (default `$GPU_RCA_DB`).

    `since`/`until`: RFC 3339, epoch seconds, or a duration back from now (`2h`, `1h30m`). Filters: `service`, `host`,
    `gpu` (UUID); `slow`: `auto` (default: latency incidents are found against comparable requests before
    them), `off`, or a duration such as `5s` (slower inference spans count as failed); `lookback`
    (default `15m`: how far before the first failure the window starts); `prometheus` (a URL: pull the
    window's GPU metrics into the store first; unreachable means a warning, not an error).
    """
    options = resolve_options(since, until, slow, lookback)
    if prometheus is not None:
        from gpu_rca.correlate.prometheus.pull import check_prometheus_url

        check_prometheus_url(prometheus)  # a bad URL is a usage error before the store is opened for writing
    notes = list(warnings or [])
    with Store.open(db_path, read_only=prometheus is None) as store:
        if prometheus is not None:
            notes += pull_prometheus(store, prometheus, options, {"service": service, "host": host, "gpu": gpu})
        return analyze_connection(store.connection, service=service, host=host, gpu=gpu, warnings=notes, **options)


class AnalyzeOptions(TypedDict):
    """The window and slowness options of `analyze_connection`, in ns (its keyword arguments)."""

    since_ns: int | None
    until_ns: int | None
    slow_ns: int | None
    slow_auto: bool
    lookback_ns: int


class SlowOptions(TypedDict):
    """`--slow` as `analyze_connection` takes it: a fixed threshold, or latency detection on or off."""

    slow_ns: int | None
    slow_auto: bool


def resolve_options(
    since: str | int | float | None,
    until: str | int | float | None,
    slow: str | None,
    lookback: str | None,
    *,
    prefix: str = "--",
) -> AnalyzeOptions:
    """User-facing times and durations as the ns keyword arguments of `analyze_connection`.

    Errors name the value as `prefix` + its name: `--since` on the command line, `since` for query parameters.
    """
    since_ns = None if since is None else parse_time_ns(since, what=f"{prefix}since")
    until_ns = None if until is None else parse_time_ns(until, what=f"{prefix}until")
    if since_ns is not None and until_ns is not None and since_ns >= until_ns:
        raise UsageError(f"{prefix}since must be before {prefix}until")
    slow_options = parse_slow(slow, what=f"{prefix}slow")
    return {
        "since_ns": since_ns,
        "until_ns": until_ns,
        "slow_ns": slow_options["slow_ns"],
        "slow_auto": slow_options["slow_auto"],
        "lookback_ns": DEFAULT_LOOKBACK_NS if lookback is None else parse_duration_ns(lookback, f"{prefix}lookback"),
    }


def parse_slow(slow: str | None, what: str = "--slow") -> SlowOptions:
    """`--slow auto|off|DURATION` as `analyze_connection`'s `slow_ns` and `slow_auto`."""
    text = "auto" if slow is None else str(slow).strip().lower()
    if text in ("auto", "off"):
        return {"slow_ns": None, "slow_auto": text == "auto"}
    try:
        return {"slow_ns": parse_duration_ns(text, what), "slow_auto": False}
    except UsageError:
        raise UsageError(f"{what}: {slow!r} is not a duration, auto or off (use e.g. 5s or 1m30s)") from None


def explain(db_path: str | os.PathLike[str] | None, trace_id: str) -> ExplainResult:
    """The same dict as `gpu-rca explain TRACE_ID --json`: one request's stamps, metrics, logs and cause."""
    with Store.open(db_path, read_only=True) as store:
        return explain_connection(store.connection, trace_id)


def pull_prometheus(
    store: Store, prometheus_url: str, options: AnalyzeOptions, filters: dict[str, str | None]
) -> list[str]:
    """Pull the analysis window's GPU metrics from Prometheus into the store; warnings instead of failing."""
    from gpu_rca.correlate.prometheus import pull as prometheus

    url = prometheus.check_prometheus_url(prometheus_url)
    slow_ns = options.get("slow_ns")
    flt = Filters(
        service=filters.get("service"), host=filters.get("host"), gpu=filters.get("gpu"), slow_ns=options["slow_ns"]
    )
    since_ns, until_ns = options.get("since_ns"), options.get("until_ns")
    try:
        if options.get("slow_auto") and not slow_ns:
            found = detect_slow(store.connection, flt, since_ns, until_ns)
            flt = Filters(flt.service, flt.host, flt.gpu, slow_auto=found > 0)
        window, _ = resolve_window(
            store.connection,
            options["since_ns"],
            options["until_ns"],
            options["lookback_ns"],
            flt,
        )
    except InputError:
        return []
    try:
        summary = prometheus.pull_windows(store, url, [prometheus.PullWindow(window.start_ns, window.end_ns)])
    except prometheus.PrometheusUnavailable as exc:
        return [f"Prometheus unreachable ({exc}); analysis continues on the span stamps and stored metrics"]
    return list(summary.warnings)


__all__ = ["analyze", "explain", "parse_slow", "pull_prometheus", "resolve_options"]
