"""OTLP protobuf requests -> columnar rows for the store: spans, span events, logs and the GPU inventory.

Every Contract-1 stamp lands in its typed column (and leaves the `attributes` JSON); the workload
attributes are copied into typed columns and also kept in the JSON. An invalid span or log record is
rejected alone, with a reason, so its valid neighbours are still stored (OTLP partial success).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from correlate.records import MAX_ERRORS, GpuRecord, LogRecord
from schemas import attributes as a
from schemas import store as s
from schemas.pci import normalize_pci_bus_id

_SQL_TO_ARROW: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
    "BIGINT[]": pa.list_(pa.int64()),
}


def arrow_schema(columns: tuple[tuple[str, str], ...]) -> pa.Schema:
    """The Arrow schema matching (column, DuckDB type) pairs; NOT NULL and other constraints are ignored."""
    return pa.schema([(name, _SQL_TO_ARROW[sql_type.split(" ")[0]]) for name, sql_type in columns])


SPAN_SCHEMA = arrow_schema(s.span_columns())
EVENT_SCHEMA = arrow_schema(
    (("trace_id", "VARCHAR"), ("span_id", "VARCHAR"), ("seq", "INTEGER"), ("ts_ns", "BIGINT"),
     ("name", "VARCHAR"), ("attributes", "JSON"))
)
_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("UNSET", "OK", "ERROR")
_SEVERITIES = ((4, "TRACE"), (8, "DEBUG"), (12, "INFO"), (16, "WARN"), (20, "ERROR"), (24, "FATAL"))


@dataclass
class SpanBatch:
    """Rows of one trace request: spans and events as Arrow tables, GPUs seen, and what was rejected."""

    spans: pa.Table
    events: pa.Table
    gpus: list[GpuRecord]
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class LogBatch:
    """Rows of one logs request, and what was rejected."""

    logs: list[LogRecord]
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as plain Python (bytes as hex; non-finite floats as None, JSON cannot hold them)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    item = getattr(value, kind)
    if isinstance(item, float) and not math.isfinite(item):
        return None
    return item


def key_values(pairs: Any) -> dict[str, Any]:
    """Repeated KeyValue as a dict (a later duplicate key wins, as in the SDKs)."""
    return {kv.key: any_value(kv.value) for kv in pairs}


def to_json(value: Any) -> str:
    """Compact JSON for the store's JSON columns."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)


def _coerce(value: Any, kind: type, element: type | None) -> Any:
    """`value` as the stamp's type, or a sentinel when it cannot be without loss."""
    if value is None:
        return _MISMATCH
    if kind is bool:
        return value if isinstance(value, bool) else _MISMATCH
    if isinstance(value, bool):
        return _MISMATCH
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return _MISMATCH
    if kind is float:
        return float(value) if isinstance(value, (int, float)) else _MISMATCH
    if kind is str:
        return value if isinstance(value, str) else _MISMATCH
    if kind is list and isinstance(value, list) and element is not None:
        items = [_coerce(v, element, None) for v in value]
        return _MISMATCH if any(i is _MISMATCH for i in items) else items
    return _MISMATCH


_MISMATCH = object()


def _span_error(span: Any) -> str | None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return f"trace_id has {len(span.trace_id)} bytes or is zero, expected 16 non-zero bytes"
    if len(span.span_id) != 8 or not any(span.span_id):
        return f"span_id has {len(span.span_id)} bytes or is zero, expected 8 non-zero bytes"
    if len(span.parent_span_id) not in (0, 8):
        return f"parent_span_id has {len(span.parent_span_id)} bytes, expected 0 or 8"
    if span.start_time_unix_nano == 0:
        return "start_time_unix_nano is 0"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano is before start_time_unix_nano"
    return None


def _pci(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return normalize_pci_bus_id(value)
    except ValueError:
        return None


def spans_from_request(request: Any) -> SpanBatch:
    """An ExportTraceServiceRequest as Arrow rows for `spans` and `span_events`, plus the GPUs it names."""
    cols: dict[str, list[Any]] = {name: [] for name in SPAN_SCHEMA.names}
    events: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
    gpus: dict[str, GpuRecord] = {}
    rejected, errors = 0, []
    for resource_spans in request.resource_spans:
        resource = key_values(resource_spans.resource.attributes)
        resource_json = to_json(resource)
        service, version = resource.get(a.SERVICE_NAME), resource.get(a.SERVICE_VERSION)
        host, node = resource.get(a.HOST_NAME), resource.get(a.K8S_NODE_NAME)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for span in scope_spans.spans:
                problem = _span_error(span)
                if problem is not None:
                    rejected += 1
                    if len(errors) < MAX_ERRORS:
                        errors.append(f"span {span.span_id.hex() or '?'} ({span.name!r}): {problem}")
                    continue
                trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                attrs = key_values(span.attributes)
                row = {
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "parent_span_id": span.parent_span_id.hex() or None,
                    "name": span.name,
                    "kind": _KINDS[span.kind] if 0 <= span.kind < len(_KINDS) else str(span.kind),
                    "service": service if isinstance(service, str) else None,
                    "service_version": version if isinstance(version, str) else None,
                    "host": host if isinstance(host, str) else None,
                    "k8s_node": node if isinstance(node, str) else None,
                    "scope": scope,
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "status": _STATUS[span.status.code] if 0 <= span.status.code < 3 else "UNSET",
                    "status_message": span.status.message or None,
                    "is_inference": a.TELEMETRY_SOURCE in attrs,
                }
                for stamp in a.STAMPS:
                    value = _coerce(attrs.get(stamp.attribute), stamp.kind, stamp.element)
                    if value is _MISMATCH:
                        row[stamp.column] = None  # a wrongly typed stamp stays visible in the JSON
                    else:
                        row[stamp.column] = value
                        del attrs[stamp.attribute]
                for column in s.WORKLOAD_COLUMNS:
                    kind = int if column.sql_type == "BIGINT" else str
                    value = _coerce(attrs.get(column.attribute), kind, None)
                    row[column.column] = None if value is _MISMATCH else value
                row["attributes"] = to_json(attrs)
                row["resource"] = resource_json
                for name, values in cols.items():
                    values.append(row[name])
                for seq, event in enumerate(span.events):
                    for name, value in (("trace_id", trace_id), ("span_id", span_id), ("seq", seq),
                                        ("ts_ns", event.time_unix_nano), ("name", event.name),
                                        ("attributes", to_json(key_values(event.attributes)))):
                        events[name].append(value)
                if row[a.STAMPS_BY_ATTRIBUTE[a.GPU_UUID].column] and isinstance(host, str):
                    _learn_gpu(gpus, row, host)
    return SpanBatch(
        spans=pa.Table.from_pydict(cols, schema=SPAN_SCHEMA),
        events=pa.Table.from_pydict(events, schema=EVENT_SCHEMA),
        gpus=list(gpus.values()),
        rejected=rejected,
        errors=errors,
    )


def _learn_gpu(gpus: dict[str, GpuRecord], row: dict[str, Any], host: str) -> None:
    def col(attribute: str) -> Any:
        return row[a.STAMPS_BY_ATTRIBUTE[attribute].column]

    uuid = col(a.GPU_UUID)
    gpus[uuid] = GpuRecord(
        gpu_uuid=uuid,
        host=host,
        gpu_index=col(a.GPU_INDEX),
        pci_bus_id=_pci(col(a.GPU_PCI_BUS_ID)),
        name=col(a.GPU_NAME),
        memory_total_bytes=col(a.MEMORY_TOTAL),
        slowdown_temp_c=col(a.TEMPERATURE_SLOWDOWN),
        host_source="span",
    )


def severity_name(number: int) -> str | None:
    """OTel's severity text for a severity number (1-24), None for 0."""
    for top, name in _SEVERITIES:
        if 0 < number <= top:
            return name
    return None


def logs_from_request(request: Any) -> LogBatch:
    """An ExportLogsServiceRequest as log records; a record with bad ids or no time is rejected alone."""
    logs: list[LogRecord] = []
    rejected, errors = 0, []
    for resource_logs in request.resource_logs:
        resource = key_values(resource_logs.resource.attributes)
        service, host = resource.get(a.SERVICE_NAME), resource.get(a.HOST_NAME)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                ts_ns = record.time_unix_nano or record.observed_time_unix_nano
                problem = None
                if ts_ns == 0:
                    problem = "neither time_unix_nano nor observed_time_unix_nano is set"
                elif len(record.trace_id) not in (0, 16) or len(record.span_id) not in (0, 8):
                    problem = f"trace_id/span_id have {len(record.trace_id)}/{len(record.span_id)} bytes"
                if problem is not None:
                    rejected += 1
                    if len(errors) < MAX_ERRORS:
                        errors.append(f"log record: {problem}")
                    continue
                body = any_value(record.body)
                logs.append(
                    LogRecord(
                        ts_ns=ts_ns,
                        body=body if isinstance(body, str) else to_json(body),
                        severity=record.severity_text or severity_name(record.severity_number),
                        severity_number=record.severity_number or None,
                        trace_id=record.trace_id.hex() or None,
                        span_id=record.span_id.hex() or None,
                        service=service if isinstance(service, str) else None,
                        host=host if isinstance(host, str) else None,
                        source="otlp",
                        attributes=key_values(record.attributes),
                        resource=resource,
                    )
                )
    return LogBatch(logs=logs, rejected=rejected, errors=errors)


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
