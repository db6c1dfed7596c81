"""What makes a span or a log record invalid (rejected alone, OTLP partial success), in one place: the
server checks a request with these rules when it is received, and the row builders apply the same ones.
"""

from __future__ import annotations

import re
from typing import Any

from gpu_rca.correlate.store.records import MAX_ERRORS

#: The largest time a BIGINT column holds (Unix ns, in the year 2262); later times are rejected.
MAX_NS = 2**63 - 1
#: Events stored per span; the rest are left out (a span of millions of events is an attack, not telemetry).
MAX_EVENTS_PER_SPAN = 128
#: Characters kept of one attribute value or log body; a longer text keeps its head and its tail (where a
#: traceback says what failed) around a marker, so one request cannot make the store hold megabytes per span.
MAX_TEXT_CHARS = 32 * 1024
_HEX = re.compile(r"[0-9a-f]*")


#: Resource and scope entries one request may hold (an OTel Collector's batch holds one per resource and
#: scope it saw, tens to hundreds); past it the request is refused whole, before any entry is read, since
#: reading millions of empty entries would hold the server for seconds.
MAX_ENTRIES = 10_000


def entries_problem(request: Any) -> str | None:
    """Why an ExportTraceServiceRequest or ExportLogsServiceRequest holds too many resource or scope entries
    (checked in about MAX_ENTRIES steps at most), or None."""
    resources = request.resource_spans if hasattr(request, "resource_spans") else request.resource_logs
    count = len(resources)
    if count <= MAX_ENTRIES:
        for resource in resources:
            count += len(resource.scope_spans if hasattr(resource, "scope_spans") else resource.scope_logs)
            if count > MAX_ENTRIES:
                break
    if count > MAX_ENTRIES:
        return (
            f"the request holds more than {MAX_ENTRIES} resource and scope entries; "
            "send fewer per request (an OTel Collector batch holds one per resource and scope)"
        )
    return None


def bounded_text(text: str) -> str:
    """`text`, or its first and last MAX_TEXT_CHARS / 2 characters around a marker saying how many were cut."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    half = MAX_TEXT_CHARS // 2
    return f"{text[:half]} …[{len(text) - 2 * half} characters cut]… {text[-half:]}"


def id_problem(value: str, name: str, size: int, optional: bool = False) -> str | None:
    """Why a hex id is invalid (not `size` non-zero bytes), or None."""
    if optional and value == "":
        return None
    if len(value) != 2 * size or not _HEX.fullmatch(value) or value == "0" * (2 * size):
        return f"{name} is {value[:40]!r}, expected {size} non-zero bytes of hex"
    return None


def time_problem(start_ns: int, end_ns: int) -> str | None:
    """Why a span's times are invalid, or None."""
    if start_ns <= 0:
        return "start_time_unix_nano is not set"
    if start_ns > MAX_NS or end_ns > MAX_NS:
        return "a time is past the year 2262 (more than 2^63-1 ns since 1970)"
    if end_ns < start_ns:
        return "end_time_unix_nano is before start_time_unix_nano"
    return None


def log_problem(ts_ns: int, observed_ns: int, trace_id: str, span_id: str) -> str | None:
    """Why a log record is invalid (lowercase hex ids, "" when absent), or None."""
    if not (ts_ns or observed_ns):
        return "neither time_unix_nano nor observed_time_unix_nano is set"
    if ts_ns > MAX_NS or observed_ns > MAX_NS:
        return "a time is past the year 2262 (more than 2^63-1 ns since 1970)"
    if trace_id and (len(trace_id) != 32 or not _HEX.fullmatch(trace_id)):
        return f"trace_id is {trace_id[:40]!r}, expected 16 bytes of hex"
    if span_id and (len(span_id) != 16 or not _HEX.fullmatch(span_id)):
        return f"span_id is {span_id[:40]!r}, expected 8 bytes of hex"
    return None


def span_rejections(request: Any) -> tuple[int, list[str]]:
    """Invalid spans of an ExportTraceServiceRequest (ids, times), and the first reasons, as the rows say them."""
    rejected, errors = 0, list[str]()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if (
                    len(trace_id) == 16
                    and any(trace_id)
                    and len(span_id) == 8
                    and any(span_id)
                    and (not parent or (len(parent) == 8 and any(parent)))
                    and 0 < start <= end <= MAX_NS
                ):
                    continue
                problem = (
                    id_problem(trace_id.hex(), "trace_id", 16)
                    or id_problem(span_id.hex(), "span_id", 8)
                    or id_problem(parent.hex(), "parent_span_id", 8, optional=True)
                    or time_problem(start, end)
                )
                if problem is not None:
                    rejected += 1
                    if len(errors) < MAX_ERRORS:
                        errors.append(f"span {span_id.hex()[:16] or '?'} ({span.name!r}): {problem}")
    return rejected, errors


def log_rejections(request: Any) -> tuple[int, list[str]]:
    """Invalid log records of an ExportLogsServiceRequest, and the first reasons."""
    rejected, errors = 0, list[str]()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                problem = log_problem(
                    record.time_unix_nano, record.observed_time_unix_nano, record.trace_id.hex(), record.span_id.hex()
                )
                if problem is not None:
                    rejected += 1
                    if len(errors) < MAX_ERRORS:
                        errors.append(f"log record: {problem}")
    return rejected, errors


__all__ = [
    "MAX_ENTRIES",
    "MAX_EVENTS_PER_SPAN",
    "MAX_NS",
    "MAX_TEXT_CHARS",
    "bounded_text",
    "entries_problem",
    "id_problem",
    "log_problem",
    "log_rejections",
    "span_rejections",
    "time_problem",
]
