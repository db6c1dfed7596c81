"""OTLP protobuf requests -> store rows (spans, span events, logs) and the GPUs the spans name.

The rows themselves are built in `correlate.otlp_rows`, shared with the OTLP/JSON file reader.
"""

from __future__ import annotations

import math
from typing import Any

from correlate.otlp_rows import (
    EVENT_SCHEMA,
    SPAN_SCHEMA,
    TYPED_SLOTS,
    TYPED_WIDTH,
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


# The protobuf fast path: per attribute key, (position among the typed values, the AnyValue field a value
# of the right type arrives in, what to do with it). Built once; a span whose stamp arrives in any other
# field (an int for a float stamp, a string for a number, an unset value) takes the dict path instead,
# which coerces exactly as the OTLP/JSON reader does.
_PLAIN, _FLOAT, _LIST, _WORKLOAD = range(4)
_FIELD = {int: "int_value", float: "double_value", str: "string_value", bool: "bool_value", list: "array_value"}


def _action(kind: type, keep: bool) -> int:
    if keep:
        return _WORKLOAD  # typed column and the JSON
    return _FLOAT if kind is float else _LIST if kind is list else _PLAIN


#: attribute -> (position among the typed values, expected AnyValue field, action, list element field).
_DISPATCH: dict[str, tuple[int, str, int, str | None]] = {
    attribute: (position, _FIELD[kind], _action(kind, keep), _FIELD.get(element) if element else None)
    for attribute, (position, kind, element, keep) in TYPED_SLOTS.items()
}
_ZERO_TRACE_ID, _ZERO_SPAN_ID = bytes(16), bytes(8)


def _split_attributes(pairs: Any) -> tuple[list[Any], dict[str, Any]] | None:
    """(typed values, the rest as plain Python) in one pass over a span's attributes; None if a stamp or
    workload attribute is not in its expected field (the caller then takes the dict path)."""
    typed: list[Any] = [None] * TYPED_WIDTH
    rest: dict[str, Any] = {}
    dispatch = _DISPATCH.get
    for kv in pairs:
        key = kv.key
        value = kv.value
        which = value.WhichOneof("value")
        slot = dispatch(key)
        if slot is None:
            rest[key] = _plain(value, which)
            continue
        position, expected, action, element = slot
        if which != expected:
            return None
        if action == _PLAIN:
            typed[position] = getattr(value, which)
        elif action == _FLOAT:
            number = value.double_value
            typed[position] = number if math.isfinite(number) else None
        elif action == _WORKLOAD:
            typed[position] = rest[key] = getattr(value, which)
        else:
            items = []
            for item in value.array_value.values:
                if item.WhichOneof("value") != element:
                    return None
                items.append(getattr(item, element))
            typed[position] = items
    return typed, rest


def _plain(value: Any, which: str | None) -> Any:
    """`any_value(value)`, given the field that is set."""
    if which == "string_value":
        return value.string_value
    if which == "int_value" or which == "bool_value":
        return getattr(value, which)
    if which == "double_value":
        return finite(value.double_value)
    return any_value(value)  # arrays, key-value lists, bytes, or nothing set


def spans_from_request(request: Any, rows: SpanRows | None = None) -> SpanBatch:
    """An ExportTraceServiceRequest as Arrow rows for `spans` and `span_events`, plus the GPUs it names.

    With `rows`, the spans are added to it (the batch returned then holds everything in it so far).
    """
    rows = SpanRows() if rows is None else rows
    add = rows.add_typed
    for resource_spans in request.resource_spans:
        ctx = resource_context(key_values(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for span in scope_spans.spans:
                trace_id, span_id, parent_span_id = span.trace_id, span.span_id, span.parent_span_id
                events = [(e.time_unix_nano, e.name, key_values(e.attributes)) for e in span.events]
                status = span.status
                split = None
                if (len(trace_id) == 16 and trace_id != _ZERO_TRACE_ID and len(span_id) == 8
                        and span_id != _ZERO_SPAN_ID and (not parent_span_id or len(parent_span_id) == 8
                                                          and parent_span_id != _ZERO_SPAN_ID)):
                    split = _split_attributes(span.attributes)
                if split is None:  # bad ids (rejected there with the reason) or an unusual attribute
                    rows.add(ctx, scope, trace_id.hex(), span_id.hex(), parent_span_id.hex(), span.name, span.kind,
                             span.start_time_unix_nano, span.end_time_unix_nano, status.code, status.message,
                             key_values(span.attributes), events)
                    continue
                add(ctx, scope, trace_id.hex(), span_id.hex(), parent_span_id.hex(), span.name, span.kind,
                    span.start_time_unix_nano, span.end_time_unix_nano, status.code, status.message,
                    split[0], split[1], events)
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
