"""The server's own metrics, in a private Prometheus registry (served at GET /metrics)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gpu_rca.correlate.otlp.rows import SpanBatch
from gpu_rca.correlate.store.records import traces_without_inference_message
from gpu_rca.schemas import metrics as m

log = logging.getLogger("gpu_rca.serve")
#: The traces-without-inference warning is logged at most once per this many seconds.
WARN_INTERVAL_S = 60.0


class ServeCounters:
    """Counters for one server instance; a fresh registry each, so tests and embedded servers never collide."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            m.SERVE_REQUESTS, "HTTP requests answered, by route and status code.", ("route", "code"), registry=r
        )
        self.request_bytes = Counter(
            m.SERVE_REQUEST_BYTES, "Request body bytes received on the wire, by route.", ("route",), registry=r
        )
        self.spans_ingested = Counter(m.SERVE_SPANS_INGESTED, "Valid spans committed to the store.", registry=r)
        self.spans_rejected = Counter(
            m.SERVE_SPANS_REJECTED, "Spans rejected as invalid (partial success).", registry=r
        )
        self.traces_without_inference = Counter(
            m.SERVE_TRACES_WITHOUT_INFERENCE,
            "Traces (judged when their root span arrives) in which no span carries gpu.telemetry.source.",
            registry=r,
        )
        self._unlogged_traces = 0
        self._last_warning = float("-inf")
        self._warn_lock = threading.Lock()
        self.logs_ingested = Counter(m.SERVE_LOGS_INGESTED, "Valid log records committed to the store.", registry=r)
        self.logs_rejected = Counter(
            m.SERVE_LOGS_REJECTED, "Log records rejected as invalid (partial success).", registry=r
        )
        self.prometheus_samples = Counter(
            m.SERVE_PROMETHEUS_SAMPLES, "Metric samples pulled from Prometheus.", registry=r
        )
        self.spans_dropped = Counter(
            m.SERVE_SPANS_DROPPED,
            "Decoded spans refused without storing them, by reason (the client is told to retry).",
            ("reason",),
            registry=r,
        )
        self.logs_dropped = Counter(
            m.SERVE_LOGS_DROPPED,
            "Decoded log records refused without storing them, by reason.",
            ("reason",),
            registry=r,
        )
        self.metric_points_stored = Counter(
            m.SERVE_METRIC_POINTS_STORED, "OTLP GPU metric data points committed to the store as samples.", registry=r
        )
        self.metric_points_rejected = Counter(
            m.SERVE_METRIC_POINTS_REJECTED,
            "GPU metric data points whose GPU the store could not place (partial success).",
            registry=r,
        )
        self.metric_points_ignored = Counter(
            m.SERVE_METRIC_POINTS_IGNORED,
            "OTLP metric data points acknowledged but not stored, by reason (not a GPU metric, no GPU named, ...).",
            ("reason",),
            registry=r,
        )
        self.metric_points_dropped = Counter(
            m.SERVE_METRIC_POINTS_DROPPED,
            "Decoded metric data points refused without storing them, by reason.",
            ("reason",),
            registry=r,
        )
        self.retention_deleted = Counter(
            m.SERVE_RETENTION_DELETED, "Rows deleted for being older than --retention.", ("table",), registry=r
        )
        self.loaded_records = Counter(
            m.SERVE_LOG_LOADED, "Logged requests the loader stored (a retried request counts each time).", registry=r
        )
        self.requests_refused = Counter(
            m.SERVE_REQUESTS_REFUSED,
            "Trace and log requests answered 503 before their body was read, by reason "
            "(log_full, log_unavailable, lag, busy).",
            ("reason",),
            registry=r,
        )
        self.connections_dropped = Counter(
            m.SERVE_CONNECTIONS_DROPPED,
            "Requests dropped before their body was read whole, by reason "
            "(head_timeout, body_timeout, client_disconnected).",
            ("reason",),
            registry=r,
        )
        self.queue_depth = Gauge(m.SERVE_QUEUE_DEPTH, "Write jobs waiting for the store writer.", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.write_seconds = Histogram(
            m.SERVE_WRITE_SECONDS,
            "Time the writer spent per committed transaction.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        #: Set when a stored span batch held a failed inference span; the burst watcher waits on it.
        self.failures_stored = threading.Event()

    def watch_log(self, read: Mapping[str, Callable[[], float]]) -> None:
        """Gauges of the ingest log, each read by `read[name]`: its size, how far the loader is behind, what was
        replayed on start."""
        texts = {
            m.SERVE_LOG_BYTES: "Acknowledged request bytes in the ingest log not yet stored.",
            m.SERVE_LOG_MAX_BYTES: "Bytes the ingest log holds before requests get a 503.",
            m.SERVE_LOG_LAG_RECORDS: "Logged requests not yet stored.",
            m.SERVE_LOG_LAG_SECONDS: "Age of the oldest logged request not yet stored.",
            m.SERVE_LOG_REPLAYED: "Requests found in the ingest log past its checkpoint on start.",
            m.SERVE_LOG_CORRUPT: "Torn or corrupt ingest log records cut off on start.",
        }
        for name, text in texts.items():
            Gauge(name, text, registry=self.registry).set_function(read[name])

    def watch_in_flight(self, read: Callable[[], float]) -> None:
        """The gauge of trace and log requests being read, checked and logged now."""
        Gauge(
            m.SERVE_REQUESTS_IN_FLIGHT, "Trace and log requests being read, checked and logged.", registry=self.registry
        ).set_function(read)

    def note_stored_spans(self, batch: SpanBatch) -> None:
        """After `batch` was stored: wake the burst watcher when it holds a failed inference span."""
        spans = batch.spans
        if spans.num_rows and pc.any(pc.and_(spans["is_inference"], pc.equal(spans["status"], "ERROR"))).as_py():
            self.failures_stored.set()

    def count_traces_without_inference(self, count: int, now: float | None = None) -> None:
        """Count traces with no inference span; log how many arrived, at most once per WARN_INTERVAL_S."""
        if count <= 0:
            return
        self.traces_without_inference.inc(count)
        now = time.monotonic() if now is None else now
        with self._warn_lock:
            self._unlogged_traces += count
            if now - self._last_warning < WARN_INTERVAL_S:
                return
            pending, self._unlogged_traces, self._last_warning = self._unlogged_traces, 0, now
        log.warning("%s", traces_without_inference_message(pending))


__all__ = ["ServeCounters"]
