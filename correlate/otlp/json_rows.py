"""OTLP/JSON documents -> store rows directly, without protobuf's pure-Python JSON parser (the slow part).

Reads what the OTel Collector's file exporter writes (camelCase keys, hex ids, int64 as strings, enums as
numbers or names). A document in any other shape raises `Unsupported` before adding anything, and the
caller reads it through protobuf instead, so odd but valid input is never lost.
"""

from __future__ import annotations

import base64
from typing import Any

from gpu_rca.correlate.otlp.check import MAX_EVENTS_PER_SPAN, bounded_text
from gpu_rca.correlate.otlp.rows import KINDS, STATUSES, LogRows, SpanRows, finite, resource_context

_KIND_NAMES = {f"SPAN_KIND_{k.upper()}": i for i, k in enumerate(KINDS)}
_STATUS_NAMES = {f"STATUS_CODE_{s}": i for i, s in enumerate(STATUSES)}


class Unsupported(ValueError):
    """The document is not in the shape this reader handles."""


def _any(value: Any) -> Any:
    if not value:
        return None
    if "stringValue" in value:
        text = value["stringValue"]
        return bounded_text(text) if isinstance(text, str) else text
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return finite(float(value["doubleValue"]))  # "NaN"/"Infinity" arrive as strings
    if "boolValue" in value:
        flag = value["boolValue"]
        if not isinstance(flag, bool):
            raise Unsupported("boolValue")
        return flag
    if "arrayValue" in value:
        return [_any(v) for v in value["arrayValue"].get("values", ())]
    if "kvlistValue" in value:
        return {kv["key"]: _any(kv.get("value")) for kv in value["kvlistValue"].get("values", ())}
    if "bytesValue" in value:
        return bounded_text(base64.b64decode(value["bytesValue"]).hex())
    raise Unsupported(f"AnyValue {sorted(value)}")


def _kv(pairs: Any) -> dict[str, Any]:
    return {kv["key"]: _any(kv.get("value")) for kv in pairs or ()}


def _enum(value: Any, names: dict[str, int]) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if value in names:
        return names[value]
    raise Unsupported(f"enum {value!r}")


def _hex(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Unsupported("id")
    return value.lower()


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def add_spans(document: dict[str, Any], rows: SpanRows) -> None:
    """Add the spans of one `{"resourceSpans": …}` document to `rows`, or raise Unsupported adding none."""
    spans = []
    try:
        for resource_spans in document["resourceSpans"]:
            ctx = resource_context(_kv((resource_spans.get("resource") or {}).get("attributes")))
            for scope_spans in resource_spans.get("scopeSpans") or ():
                scope = (scope_spans.get("scope") or {}).get("name") or None
                for span in scope_spans.get("spans") or ():
                    status = span.get("status") or {}
                    events = [
                        (_int(e.get("timeUnixNano")), e.get("name", ""), _kv(e.get("attributes")))
                        for e in (span.get("events") or ())[:MAX_EVENTS_PER_SPAN]
                    ]
                    spans.append(
                        (
                            ctx,
                            scope,
                            _hex(span.get("traceId")),
                            _hex(span.get("spanId")),
                            _hex(span.get("parentSpanId")),
                            span.get("name", ""),
                            _enum(span.get("kind"), _KIND_NAMES),
                            _int(span.get("startTimeUnixNano")),
                            _int(span.get("endTimeUnixNano")),
                            _enum(status.get("code"), _STATUS_NAMES),
                            status.get("message", ""),
                            _kv(span.get("attributes")),
                            events,
                        )
                    )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Unsupported(str(exc)) from exc
    for args in spans:
        rows.add(*args)


def add_logs(document: dict[str, Any], rows: LogRows) -> None:
    """Add the log records of one `{"resourceLogs": …}` document to `rows`, or raise Unsupported adding none."""
    records = []
    try:
        for resource_logs in document["resourceLogs"]:
            ctx = resource_context(_kv((resource_logs.get("resource") or {}).get("attributes")))
            for scope_logs in resource_logs.get("scopeLogs") or ():
                for record in scope_logs.get("logRecords") or ():
                    severity = record.get("severityNumber")
                    if isinstance(severity, str):
                        raise Unsupported("severityNumber by name")
                    records.append(
                        (
                            ctx,
                            _int(record.get("timeUnixNano")),
                            _int(record.get("observedTimeUnixNano")),
                            record.get("severityText", ""),
                            severity or 0,
                            _any(record.get("body")),
                            _hex(record.get("traceId")),
                            _hex(record.get("spanId")),
                            _kv(record.get("attributes")),
                        )
                    )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Unsupported(str(exc)) from exc
    for args in records:
        rows.add(*args)


__all__ = ["Unsupported", "add_logs", "add_spans"]
