"""Pull the GPU metrics of docs/contracts.md §2 from Prometheus for the windows around failed spans.

One `query_range` per window selects every canonical name and alias at once (`{__name__=~"A|B|…"}`), never
one query per span. Series become samples under canonical names (unit factors applied) through file ingest's
`samples_from_series`, and the store places each on its GPU: by UUID label, else PCI bus id + host.
An unreachable or slow Prometheus ends the pull within `timeout_s` with a `PrometheusUnavailable` error (nothing
answered) or warnings in the summary (some windows answered); it never hangs.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from gpu_rca.correlate.store.records import GpuRecord, IngestResult, MetricSample, PodRecord
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.errors import GpuRcaError, InputError, UsageError

DEFAULT_TIMEOUT_S = 10.0
#: Points per series in one window: the step grows with the window so a query stays small.
MAX_POINTS_PER_SERIES = 500
#: Default padding around a failed span: evidence before the failure counts most.
BEFORE_S = 300.0
AFTER_S = 60.0
_NS = 1_000_000_000


class PrometheusUnavailable(GpuRcaError):
    """Prometheus could not be reached or did not answer in time."""


class SampleSink(Protocol):
    """Where pulled samples go: a `Store`, or the server's single writer in front of one."""

    def ingest_metric_samples(
        self, samples: Iterable[MetricSample], gpus: Iterable[GpuRecord] = (), pods: Iterable[PodRecord] = ()
    ) -> IngestResult:
        """Store samples, the GPU inventory their labels name and the pods holding the GPUs."""
        ...


@dataclass(frozen=True)
class PullWindow:
    """A time range to pull (Unix ns) and the GPUs it concerns (empty: every GPU Prometheus knows)."""

    start_ns: int
    end_ns: int
    gpu_uuids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PullSummary:
    """What one pull did: queries sent, series and samples read, samples stored, and what went wrong."""

    windows: int
    queries: int
    series: int
    samples: int  # valid samples handed to the store (new or already there)
    stored: int  # of which new
    rejected: int  # samples the store could not place on a GPU
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def check_prometheus_url(url: str) -> str:
    """`url` without a trailing slash if it is an http(s) URL with a host; UsageError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise UsageError(f"--prometheus must be an http(s) URL such as http://127.0.0.1:9090, got {url!r}")
    return url.rstrip("/")


def metric_selector(names: Iterable[str] | None = None) -> str:
    """A selector for every canonical metric and alias (or `names`): one query fetches them all."""
    wanted = sorted(set(names) if names is not None else {x.name for x in m.METRICS} | {x.name for x in m.ALIASES})
    return '{__name__=~"' + "|".join(wanted) + '"}'


def merge_windows(windows: Iterable[PullWindow]) -> list[PullWindow]:
    """Overlapping or touching windows as one (their GPU sets joined; an empty set means every GPU)."""
    merged: list[PullWindow] = []
    for window in sorted(windows, key=lambda w: (w.start_ns, w.end_ns)):
        if window.end_ns <= window.start_ns:
            continue
        if merged and window.start_ns <= merged[-1].end_ns:
            last = merged[-1]
            every = not last.gpu_uuids or not window.gpu_uuids
            gpus = frozenset() if every else last.gpu_uuids | window.gpu_uuids
            merged[-1] = PullWindow(last.start_ns, max(last.end_ns, window.end_ns), gpus)
        else:
            merged.append(window)
    return merged


def windows_around_failures(
    connection: Any,
    *,
    after_ns: int | None = None,
    until_ns: int | None = None,
    before_s: float = BEFORE_S,
    after_s: float = AFTER_S,
) -> list[PullWindow]:
    """Merged windows [start − before_s, end + after_s] around failed inference spans that ended in (after, until]."""
    sql = "SELECT start_ns, end_ns, gpu_uuid FROM spans WHERE is_inference AND status = 'ERROR'"
    params: list[int] = []
    if after_ns is not None:
        sql += " AND end_ns > ?"
        params.append(after_ns)
    if until_ns is not None:
        sql += " AND end_ns <= ?"
        params.append(until_ns)
    rows = connection.execute(sql, params).fetchall()
    return merge_windows(
        PullWindow(start - int(before_s * _NS), end + int(after_s * _NS), frozenset({uuid}) if uuid else frozenset())
        for start, end, uuid in rows
    )


def step_seconds(window: PullWindow) -> int:
    """The query step for a window: whole seconds, at most MAX_POINTS_PER_SERIES points per series."""
    return max(1, math.ceil((window.end_ns - window.start_ns) / _NS / MAX_POINTS_PER_SERIES))


def pull_windows(
    store: SampleSink,
    prometheus_url: str,
    windows: Sequence[PullWindow],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> PullSummary:
    """Pull every metric of docs/contracts.md §2 for each (merged) window and store the samples under canonical names."""
    from prometheus_api_client import PrometheusConnect
    from prometheus_api_client.exceptions import PrometheusApiClientException
    from requests import RequestException
    from urllib3.util.retry import Retry

    from gpu_rca.correlate.prometheus.files import samples_from_series

    url = check_prometheus_url(prometheus_url)
    # No retries: the caller's deadline is the whole budget, and a retry loop is how pulls hang.
    prom = PrometheusConnect(url=url, retry=Retry(total=0, connect=0, read=0, status=0), timeout=timeout_s)
    selector = metric_selector()
    deadline = time.monotonic() + timeout_s
    merged = merge_windows(windows)
    queries = series_count = samples = stored = rejected = 0
    skipped: Counter[str] = Counter()
    warnings: list[str] = []
    answered = 0
    for position, window in enumerate(merged):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            warnings.append(
                f"Prometheus pull stopped at its {timeout_s:g} s limit: "
                f"{len(merged) - position} of {len(merged)} windows not pulled"
            )
            break
        start = datetime.fromtimestamp(window.start_ns // _NS, tz=UTC)
        end = datetime.fromtimestamp(-(-window.end_ns // _NS), tz=UTC)
        queries += 1
        try:
            series = prom.custom_query_range(
                selector, start_time=start, end_time=end, step=f"{step_seconds(window)}s", timeout=remaining
            )
        except RequestException as exc:
            problem = unreachable_reason(url, exc, timeout_s)
            if answered == 0:
                raise PrometheusUnavailable(problem) from exc
            warnings.append(problem)
            break
        except (PrometheusApiClientException, ValueError) as exc:
            warnings.append(f"Prometheus at {url} refused the query for window {position + 1}: {str(exc)[:200]}")
            continue
        answered += 1
        kept = _for_window(series, window)
        try:
            batch = samples_from_series(kept, source="prometheus")
        except InputError as exc:
            warnings.append(f"Prometheus answer for window {position + 1} unreadable: {exc}")
            continue
        result = store.ingest_metric_samples(batch.samples, batch.gpus, batch.pods)
        series_count += len(kept)
        samples += result.accepted
        stored += result.stored
        rejected += result.rejected
        skipped.update(batch.skipped)
    if merged and answered == 0 and warnings and queries == len(merged):
        raise PrometheusUnavailable("; ".join(warnings[:3]))
    return PullSummary(len(merged), queries, series_count, samples, stored, rejected, dict(skipped), tuple(warnings))


def unreachable_reason(url: str, exc: Exception, timeout_s: float) -> str:
    """Why Prometheus gave no answer, in the right words: refused (nothing listens) or timed out (no answer)."""
    from requests import ConnectionError as RequestsConnectionError
    from requests import Timeout

    if isinstance(exc, Timeout):
        return f"Prometheus at {url} timed out: no answer within {timeout_s:g} s"
    text = str(exc).lower()
    if isinstance(exc, RequestsConnectionError) and ("refused" in text or "errno 111" in text):
        return f"Prometheus at {url} refused the connection (is it running there?)"
    if isinstance(exc, RequestsConnectionError) and ("timed out" in text or "timeout" in text):
        return f"Prometheus at {url} timed out: no answer within {timeout_s:g} s"
    return f"Prometheus at {url} could not be reached ({type(exc).__name__})"


def _for_window(series: list[dict[str, Any]], window: PullWindow) -> list[dict[str, Any]]:
    """Series of the window's GPUs; series with no UUID label stay, for the store to place by PCI bus id + host."""
    if not window.gpu_uuids:
        return series
    kept = []
    for item in series:
        labels = item.get("metric", {})
        uuid = next((labels[name] for name in m.UUID_LABELS if labels.get(name)), None)
        if uuid is None or uuid in window.gpu_uuids:
            kept.append(item)
    return kept


__all__ = [
    "AFTER_S",
    "BEFORE_S",
    "DEFAULT_TIMEOUT_S",
    "PrometheusUnavailable",
    "PullSummary",
    "PullWindow",
    "SampleSink",
    "check_prometheus_url",
    "merge_windows",
    "metric_selector",
    "pull_windows",
    "step_seconds",
    "windows_around_failures",
]
