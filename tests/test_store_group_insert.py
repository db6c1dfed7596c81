"""Span batches stored with one plain insert, and again with lookups when a key is already there: a retry, an
overlap, a key shared by two batches of one group, or a duplicate inside a caller's transaction never
stores a row twice, never loses one, and never aborts the caller's other work."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gpu_rca.correlate import Store
from gpu_rca.correlate.otlp.decode import spans_from_request
from gpu_rca.correlate.store.records import LogRecord
from tests.support.otlp_hand_built import hand_built_request, well_typed_stamps


def _with_event(message: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    for span in message.resource_spans[0].scope_spans[0].spans:
        event = span.events.add()
        event.time_unix_nano, event.name = span.start_time_unix_nano + 1, "gpu.throttle"
    return message


def _counts(store: Store) -> tuple[int, int]:
    return store.connection.execute(
        "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM span_events)"
    ).fetchone()


def test_a_retried_and_an_overlapping_request_store_only_the_new_spans(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as store:
        first = _with_event(hand_built_request(*((n, well_typed_stamps()) for n in range(1, 11))))
        overlap = _with_event(hand_built_request(*((n, well_typed_stamps()) for n in range(6, 16))))
        assert store.ingest_trace_request(first).stored == 10
        retried = store.ingest_trace_request(first)
        assert (retried.accepted, retried.stored, retried.rejected) == (10, 0, 0)
        assert store.ingest_trace_request(overlap).stored == 5
        assert _counts(store) == (15, 15)
        assert (
            store.ingest_trace_request(hand_built_request((16, well_typed_stamps()))).stored == 1
        )  # the plain path works again


def test_a_group_whose_batches_share_a_span_stores_it_once_and_answers_each_batch(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest_trace_request(hand_built_request((1, well_typed_stamps())))
        batches = [
            spans_from_request(hand_built_request((2, well_typed_stamps()), (3, well_typed_stamps()))),
            spans_from_request(hand_built_request((3, well_typed_stamps()), (4, well_typed_stamps()))),
            spans_from_request(hand_built_request((1, well_typed_stamps()), (5, well_typed_stamps()))),
        ]
        assert [(r.accepted, r.stored) for r in store.ingest_span_batches(batches)] == [(2, 2), (2, 1), (2, 1)]
        assert _counts(store) == (5, 0)
        new = [spans_from_request(hand_built_request((n, well_typed_stamps()))) for n in (6, 7)]
        assert [r.stored for r in store.ingest_span_batches(new)] == [1, 1]


def test_a_stored_span_inside_a_callers_transaction_keeps_the_callers_other_writes(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest_trace_request(hand_built_request((1, well_typed_stamps())))
        log = LogRecord(ts_ns=1_700_000_000_000_000_000, body="written beside a retried span", source="loguru")
        with store.transaction():
            assert store.ingest_log_records([log]).stored == 1
            assert (
                store.ingest_trace_request(
                    hand_built_request((1, well_typed_stamps()), (2, well_typed_stamps()))
                ).stored
                == 1
            )
        assert _counts(store) == (2, 0)
        assert store.connection.execute("SELECT count(*) FROM logs").fetchone()[0] == 1
