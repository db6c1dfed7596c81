"""The loader: one thread that reads the ingest log behind the writer, builds the rows of many requests at once
and stores them through the store's writer in large batches, then moves the log's checkpoint.

Storing is idempotent: a request logged twice (an exporter's retry) is built once per batch (the same bytes:
records are compared only where their lengths match, so no body is hashed), and a span already stored (a retry in an earlier batch, or a replay of a batch stored just before a
crash) is left out by the store's key. While the store refuses writes (a full disk), the records stay in
the log and the loader tries again; `failure` says why meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from gpu_rca.correlate.otlp.decode import add_logs, add_spans
from gpu_rca.correlate.otlp.rows import LogRows, SpanRows
from gpu_rca.correlate.server.counters import ServeCounters
from gpu_rca.correlate.server.wal import CONTENT_TYPES, IngestLog, Record
from gpu_rca.correlate.server.writer import Writer
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.records import IngestResult
from gpu_rca.schemas.errors import InputError
from gpu_rca.schemas.otlp_json import message_from_json

log = logging.getLogger("gpu_rca.serve")
_JSON = CONTENT_TYPES[1]
#: Log bytes read per batch: tens of thousands of spans in one insert.
BATCH_BYTES = 16 * 1024 * 1024
#: Pause before storing again after the store refused a batch.
RETRY_S = 1.0


@dataclass
class _Rows:
    spans: SpanRows
    logs: LogRows
    records: int = 0


class Loader:
    """Moves records from `ingest_log` into the store, in batches of about `batch_bytes`."""

    def __init__(
        self, ingest_log: IngestLog, writer: Writer, counters: ServeCounters, *, batch_bytes: int = BATCH_BYTES
    ) -> None:
        self.log = ingest_log
        self.writer = writer
        self.counters = counters
        self.batch_bytes = batch_bytes
        self.position = ingest_log.checkpoint
        self.failure: str | None = None
        self.oldest_unloaded_ns: int | None = None  # append time of the first record not yet stored
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="gpu-rca-loader", daemon=True)

    def start(self) -> None:
        """Start the thread (the store writer must be running)."""
        self._thread.start()

    def close(self) -> None:
        """Store every durable record, then stop (the writer must still be running)."""
        self._stop.set()
        self._thread.join()

    @property
    def lag_s(self) -> float:
        """Seconds since the oldest record not yet stored was logged; 0 when nothing waits."""
        oldest = self.oldest_unloaded_ns
        if oldest is None and self.log.durable > self.position:
            return 0.0
        return 0.0 if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9)

    @property
    def lag_records(self) -> int:
        """Logged requests not yet stored."""
        log_ = self.log
        return max(0, log_.replayed_records + log_.records_appended - log_.records_loaded)

    def catch_up(self, timeout_s: float) -> bool:
        """Wait until every record durable now is stored (a read then sees every acknowledged request); False
        after `timeout_s`."""
        target = self.log.durable
        with self._done:
            return self._done.wait_for(lambda: self.log.next_position(self.position) >= target, timeout_s)

    # --- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self.position = self.log.next_position(self.position)
            records = self.log.read(self.position, self.batch_bytes)
            if not records:
                self.oldest_unloaded_ns = None
                with self._done:
                    self._done.notify_all()
                if self._stop.is_set():
                    return
                self.log.wait(self.position, 0.2)
                continue
            self.oldest_unloaded_ns = records[0].appended_ns
            try:
                self._store(records)
            except Exception as exc:  # the store refused (disk full, I/O): the records stay in the log
                if self.failure is None:
                    log.warning("gpu-rca serve: the store refused a batch (%s); trying again", exc)
                self.failure = str(exc)
                if self._stop.wait(RETRY_S) and not self.writer.running:
                    return
                continue
            self.failure = None
            end = (records[-1].segment, records[-1].end)
            self.log.commit(end, len(records))
            with self._done:
                self.position = end
                self._done.notify_all()

    def _store(self, records: list[Record]) -> None:
        rows = _build(_unique(records))
        spans, logs = rows.spans.batch(), rows.logs.batch()

        def store(target: Store) -> tuple[IngestResult, IngestResult]:
            return target.ingest_span_batch(spans), target.ingest_log_records(logs.logs)

        span_result, log_result = self.writer.call(store)
        c = self.counters
        c.spans_ingested.inc(span_result.stored)
        c.logs_ingested.inc(log_result.stored)
        c.loaded_records.inc(len(records))
        c.note_stored_spans(spans)  # wakes the burst watcher when the batch held failures
        c.count_traces_without_inference(span_result.traces_without_inference)


def _unique(records: list[Record]) -> list[Record]:
    """`records` without repeats of the same signal and bytes (an exporter's retry), in order."""
    seen: dict[tuple[str, int], list[bytes]] = {}
    unique = []
    for record in records:
        same_length = seen.setdefault((record.signal, len(record.body)), [])
        if any(record.body == other for other in same_length):
            continue
        same_length.append(record.body)
        unique.append(record)
    return unique


def _build(records: list[Record]) -> _Rows:
    """The rows of every record; a record whose bytes fail to build (checked when it was received, so only
    a log written by another version) is left out with a warning and its neighbours are built again."""
    skipped: set[int] = set()
    while True:
        rows = _Rows(SpanRows(), LogRows())
        try:
            for index, record in enumerate(records):
                if index in skipped:
                    continue
                failing = index
                _add(rows, record)
        except (InputError, ValueError, TypeError) as exc:
            log.warning(
                "gpu-rca serve: a logged %s request cannot be stored and is skipped: %s", records[failing].signal, exc
            )
            skipped.add(failing)
            continue
        return rows


def _add(rows: _Rows, record: Record) -> None:
    message: Any
    if record.signal == "traces":
        if record.content_type == _JSON:
            message = message_from_json(record.body, trace_service_pb2.ExportTraceServiceRequest)
        else:
            message = record.body
        add_spans(message, rows.spans)
    else:
        message = (
            message_from_json(record.body, logs_service_pb2.ExportLogsServiceRequest)
            if record.content_type == _JSON
            else logs_service_pb2.ExportLogsServiceRequest.FromString(record.body)
        )
        add_logs(message, rows.logs)
    rows.records += 1


__all__ = ["BATCH_BYTES", "Loader"]
