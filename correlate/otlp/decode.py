"""OTLP protobuf requests -> store rows (spans, span events, logs) and the GPUs the spans name.

The rows themselves are built in `correlate.otlp.rows`, shared with the OTLP/JSON file reader; spans are read
with their attributes as raw bytes, each distinct attribute decoded once (`correlate.otlp.wire`).
"""

from __future__ import annotations

from typing import Any

from gpu_rca.correlate.otlp.check import MAX_EVENTS_PER_SPAN
from gpu_rca.correlate.otlp.rows import (
    EVENT_SCHEMA,
    SPAN_SCHEMA,
    LogBatch,
    LogRows,
    ResourceContext,
    SpanBatch,
    SpanRows,
    arrow_schema,
    resource_context,
    severity_name,
    to_json,
)
from gpu_rca.correlate.otlp.wire import DEFAULT_CACHE, AttributeCache, RawTraces, any_value, decode_traces, key_value


def key_values(pairs: Any) -> dict[str, Any]:
    """Repeated KeyValue as a dict (a later duplicate key wins, as in the SDKs)."""
    return {kv.key: any_value(kv.value) for kv in pairs}


_ZERO_TRACE_ID, _ZERO_SPAN_ID = bytes(16), bytes(8)


def spans_from_request(
    request: Any, rows: SpanRows | None = None, *, cache: AttributeCache = DEFAULT_CACHE
) -> SpanBatch:
    """An ExportTraceServiceRequest — its protobuf bytes, a decoded message, or `RawTraces` — as Arrow rows
    for `spans` and `span_events`, plus the GPUs it names. InputError when the bytes are not a valid request.

    With `rows`, the spans are added to it (the batch returned then holds everything in it so far).
    `cache` remembers what each distinct attribute's bytes decode to (see `correlate.otlp.wire`).
    """
    rows = SpanRows() if rows is None else rows
    add_spans(request, rows, cache=cache)
    return rows.batch()


def add_spans(request: Any, rows: SpanRows, *, cache: AttributeCache = DEFAULT_CACHE) -> None:
    """Add a request's spans to `rows` without building a batch (many requests, one batch at the end)."""
    for resource_spans in _raw(request).resource_spans:
        ctx = resource_context(key_values(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            _add_spans(rows, ctx, scope_spans.scope.name or None, scope_spans.spans, cache)


def _raw(request: Any) -> Any:
    """`request` as `RawTraces`. A decoded message goes back to bytes first: one fast path reads every
    request, and serialising costs less than reading the attributes through upb's Python objects."""
    if isinstance(request, RawTraces):
        return request
    if isinstance(request, (bytes, bytearray, memoryview)):
        return decode_traces(bytes(request))
    return decode_traces(request.SerializeToString())


def _add_spans(rows: SpanRows, ctx: ResourceContext, scope: str | None, spans: Any, cache: AttributeCache) -> None:
    """Add one scope's raw spans: typed in one pass through the cache, or through the dict path when a span
    has bad ids (rejected there with the reason) or a stamp in an unexpected field."""
    add_typed, split = rows.add_typed, cache.split
    for span in spans:
        trace_id, span_id, parent_span_id = span.trace_id, span.span_id, span.parent_span_id
        events = (
            [(e.time_unix_nano, e.name, key_values(e.attributes)) for e in span.events[:MAX_EVENTS_PER_SPAN]]
            if span.events
            else []
        )
        status = span.status
        parts = None
        if (
            len(trace_id) == 16
            and trace_id != _ZERO_TRACE_ID
            and len(span_id) == 8
            and span_id != _ZERO_SPAN_ID
            and (not parent_span_id or (len(parent_span_id) == 8 and parent_span_id != _ZERO_SPAN_ID))
        ):
            parts = split(span.attributes)
        if parts is None:
            attributes = key_values(key_value(raw) for raw in span.attributes)
            rows.add(
                ctx,
                scope,
                trace_id.hex(),
                span_id.hex(),
                parent_span_id.hex(),
                span.name,
                span.kind,
                span.start_time_unix_nano,
                span.end_time_unix_nano,
                status.code,
                status.message,
                attributes,
                events,
            )
            continue
        add_typed(
            ctx,
            scope,
            trace_id.hex(),
            span_id.hex(),
            parent_span_id.hex(),
            span.name,
            span.kind,
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            status.code,
            status.message,
            parts[0],
            parts[1],
            events,
        )


def logs_from_request(request: Any, rows: LogRows | None = None) -> LogBatch:
    """An ExportLogsServiceRequest as log records; a record with bad ids or no time is rejected alone."""
    rows = LogRows() if rows is None else rows
    add_logs(request, rows)
    return rows.batch()


def add_logs(request: Any, rows: LogRows) -> None:
    """Add a request's log records to `rows` without building a batch."""
    for resource_logs in request.resource_logs:
        ctx = resource_context(key_values(resource_logs.resource.attributes))
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                rows.add(
                    ctx,
                    record.time_unix_nano,
                    record.observed_time_unix_nano,
                    record.severity_text,
                    record.severity_number,
                    any_value(record.body),
                    record.trace_id.hex(),
                    record.span_id.hex(),
                    key_values(record.attributes),
                )


__all__ = [
    "DEFAULT_CACHE",
    "EVENT_SCHEMA",
    "SPAN_SCHEMA",
    "AttributeCache",
    "LogBatch",
    "SpanBatch",
    "add_logs",
    "add_spans",
    "any_value",
    "arrow_schema",
    "key_values",
    "logs_from_request",
    "severity_name",
    "spans_from_request",
    "to_json",
]
