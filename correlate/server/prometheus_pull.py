"""With `gpu-rca serve --prometheus URL`: pull GPU metrics around failed spans as they arrive.

Every `pull_interval_s` the server finds failed inference spans that ended since the last pull (and at least
`AFTER_S` ago, so the window after them exists in Prometheus), pulls their windows, and stores the samples
through the single writer. A Prometheus that is down is retried at the next interval; it never blocks ingest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from gpu_rca.correlate.prometheus.pull import (
    AFTER_S,
    PrometheusUnavailable,
    PullWindow,
    pull_windows,
    windows_around_failures,
)
from gpu_rca.correlate.server.state import ServerState
from gpu_rca.correlate.server.writer import Writer
from gpu_rca.correlate.store.records import GpuRecord, IngestResult, MetricSample, PodRecord

log = logging.getLogger("gpu_rca.serve")
_NS = 1_000_000_000
#: On start, look this far back for failures not pulled yet.
FIRST_LOOKBACK_S = 3600.0


class WriterSink:
    """A SampleSink that stores through the server's writer thread (the only code that writes the store)."""

    def __init__(self, writer: Writer, timeout_s: float) -> None:
        self._writer = writer
        self._timeout_s = timeout_s

    def ingest_metric_samples(
        self, samples: Iterable[MetricSample], gpus: Iterable[GpuRecord] = (), pods: Iterable[PodRecord] = ()
    ) -> IngestResult:
        """Queue the samples on the writer and wait for the commit."""
        rows, inventory, held = list(samples), list(gpus), list(pods)
        return self._writer.call(
            lambda store: store.ingest_metric_samples(rows, inventory, held), timeout_s=self._timeout_s
        )


def _failure_windows(state: ServerState, after_ns: int, until_ns: int) -> list[PullWindow]:
    cursor = state.store.cursor()
    try:
        return windows_around_failures(cursor, after_ns=after_ns, until_ns=until_ns)
    finally:
        cursor.close()


async def pull_loop(state: ServerState, stop: asyncio.Event) -> None:
    """Pull windows around new failures every interval until `stop` is set."""
    config = state.config
    assert config.prometheus_url is not None
    sink = WriterSink(state.writer, timeout_s=config.pull_timeout_s * 3)
    watermark_ns = time.time_ns() - int(FIRST_LOOKBACK_S * _NS)
    last_problem = ""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=config.pull_interval_s)
            return
        except TimeoutError:
            pass
        until_ns = time.time_ns() - int(AFTER_S * _NS)
        try:
            windows = await asyncio.to_thread(_failure_windows, state, watermark_ns, until_ns)
            if windows:
                summary = await asyncio.to_thread(
                    pull_windows, sink, config.prometheus_url, windows, config.pull_timeout_s
                )
                state.counters.prometheus_samples.inc(summary.samples)
                for warning in summary.warnings:
                    log.warning("prometheus pull: %s", warning)
        except PrometheusUnavailable as exc:
            state.problems["prometheus"] = f"GPU metrics are not being pulled: {exc}"
            if str(exc) != last_problem:  # say it once per distinct problem, not every interval
                log.warning("prometheus pull: %s; retrying every %g s", exc, config.pull_interval_s)
                last_problem = str(exc)
            continue  # keep the watermark: these failures are pulled once Prometheus answers
        except Exception as exc:
            log.warning("prometheus pull failed: %s: %s", type(exc).__name__, exc)
            continue
        last_problem = ""
        state.problems.pop("prometheus", None)
        watermark_ns = until_ns


__all__ = ["WriterSink", "pull_loop"]
