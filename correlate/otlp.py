"""OTLP protobuf requests -> store rows (spans, span events, logs) and the GPUs the spans name.

The rows themselves are built in `correlate.otlp_rows`, shared with the OTLP/JSON file reader.
"""

from __future__ import annotations

from typing import Any

from correlate.otlp_rows import (
    EVENT_SCHEMA,
    SPAN_SCHEMA,
    LogBatch,
    LogRows,
    SpanBatch,
    SpanRows,
    arrow_schema,
    finite,
    resource_context,
    severity_name,
    to_json,
)


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as plain Python (bytes as hex; non-finite floats as None, JSON cannot hold them)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return finite(getattr(value, kind))


def key_values(pairs: Any) -> dict[str, Any]:
    """Repeated KeyValue as a dict (a later duplicate key wins, as in the SDKs)."""
    return {kv.key: any_value(kv.value) for kv in pairs}


def spans_from_request(request: Any, rows: SpanRows | None = None) -> SpanBatch:
    """An ExportTraceServiceRequest as Arrow rows for `spans` and `span_events`, plus the GPUs it names.

    With `rows`, the spans are added to it (the batch returned then holds everything in it so far).
    """
    rows = SpanRows() if rows is None else rows
    for resource_spans in request.resource_spans:
        ctx = resource_context(key_values(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for span in scope_spans.spans:
                events = [(e.time_unix_nano, e.name, key_values(e.attributes)) for e in span.events]
                rows.add(ctx, scope, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name,
                         span.kind, span.start_time_unix_nano, span.end_time_unix_nano, span.status.code,
                         span.status.message, key_values(span.attributes), events)
    return rows.batch()


def logs_from_request(request: Any, rows: LogRows | None = None) -> LogBatch:
    """An ExportLogsServiceRequest as log records; a record with bad ids or no time is rejected alone."""
    rows = LogRows() if rows is None else rows
    for resource_logs in request.resource_logs:
        ctx = resource_context(key_values(resource_logs.resource.attributes))
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                rows.add(ctx, record.time_unix_nano, record.observed_time_unix_nano, record.severity_text,
                         record.severity_number, any_value(record.body), record.trace_id.hex(),
                         record.span_id.hex(), key_values(record.attributes))
    return rows.batch()


__all__ = [
    "EVENT_SCHEMA",
    "SPAN_SCHEMA",
    "LogBatch",
    "SpanBatch",
    "any_value",
    "arrow_schema",
    "key_values",
    "logs_from_request",
    "severity_name",
    "spans_from_request",
    "to_json",
]
