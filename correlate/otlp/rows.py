"""Span, event and log rows for the store, built column by column from any OTLP front-end (protobuf or JSON).

Every stamp of docs/contracts.md §1 lands in its typed column (and leaves the `attributes` JSON); the workload
attributes are copied into typed columns and also kept in the JSON. An invalid span or log record is
rejected alone, with a reason, so its valid neighbours are still stored (OTLP partial success).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from gpu_rca.correlate.otlp.check import MAX_EVENTS_PER_SPAN, log_problem, time_problem
from gpu_rca.correlate.otlp.check import id_problem as _id_problem
from gpu_rca.correlate.store.records import MAX_ERRORS, GpuRecord, LogRecord
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import store as s
from gpu_rca.schemas.pci import normalize_pci_bus_id_or_keep as _normal_pci

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
    (
        ("trace_id", "VARCHAR"),
        ("span_id", "VARCHAR"),
        ("seq", "INTEGER"),
        ("ts_ns", "BIGINT"),
        ("name", "VARCHAR"),
        ("attributes", "JSON"),
    )
)
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUSES = ("UNSET", "OK", "ERROR")
_SEVERITIES = ((4, "TRACE"), (8, "DEBUG"), (12, "INFO"), (16, "WARN"), (20, "ERROR"), (24, "FATAL"))
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_MISMATCH = object()
# (attribute, kind, element) per stamp, computed once: this runs for every span.
_STAMPS = tuple((st.attribute, st.kind, st.element) for st in a.STAMPS)
_WORKLOAD = tuple((w.attribute, int if w.sql_type == "BIGINT" else str) for w in s.WORKLOAD_COLUMNS)
#: How many typed values a span row carries between its base and tail columns: stamps, then workload.
TYPED_WIDTH = len(_STAMPS) + len(_WORKLOAD)
#: attribute -> (position among the typed values, Python type, list element type, also kept in the JSON).
TYPED_SLOTS: dict[str, tuple[int, type, type | None, bool]] = {
    **{attribute: (i, kind, element, False) for i, (attribute, kind, element) in enumerate(_STAMPS)},
    **{attribute: (len(_STAMPS) + i, kind, None, True) for i, (attribute, kind) in enumerate(_WORKLOAD)},
}


# The fallback for what orjson refuses (lone surrogates from a JSON file, integers beyond 64 bits): built once,
# since `json.dumps` with options builds a new JSONEncoder on every call.
_STDLIB_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str).encode


def to_json(value: Any) -> str:
    """Compact JSON for the store's JSON columns."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return _STDLIB_ENCODE(value)


def finite(value: Any) -> Any:
    """`value`, or None for a NaN/±Inf float (JSON cannot hold them; docs/contracts.md §3 calls them undefined)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _coerce(value: Any, kind: type, element: type | None) -> Any:
    """`value` as the stamp's type, or _MISMATCH when it cannot be without loss."""
    if type(value) is kind:
        if isinstance(value, list):  # kind is list
            items = [_coerce(v, element, None) for v in value] if element is not None else []
            return _MISMATCH if element is None or _MISMATCH in items else items
        return value
    if kind is float and type(value) is int:
        return float(value)
    if kind is int and type(value) is float and value.is_integer():
        return int(value)
    return _MISMATCH


def severity_name(number: int) -> str | None:
    """OTel's severity text for a severity number (1-24), None for 0."""
    for top, name in _SEVERITIES:
        if 0 < number <= top:
            return name
    return None


@dataclass
class SpanBatch:
    """Rows of spans and events as Arrow tables, the GPUs they name, and what was rejected."""

    spans: pa.Table
    events: pa.Table
    gpus: list[GpuRecord]
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    #: Spans left out because the batch already held their (trace_id, span_id): valid, but stored once.
    duplicates: int = 0


@dataclass
class LogBatch:
    """Log records, and what was rejected."""

    logs: list[LogRecord]
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ResourceContext:
    """What a span or log takes from its resource."""

    service: str | None
    service_version: str | None
    host: str | None
    k8s_node: str | None
    resource: dict[str, Any]
    resource_json: str


def resource_context(resource: dict[str, Any]) -> ResourceContext:
    """The resource's service, version, host and node (strings only), and its JSON."""

    def text(key: str) -> str | None:
        value = resource.get(key)
        return value if isinstance(value, str) else None

    return ResourceContext(
        text(a.SERVICE_NAME),
        text(a.SERVICE_VERSION),
        text(a.HOST_NAME),
        text(a.K8S_NODE_NAME),
        resource,
        to_json(resource),
    )


def typed_attributes(attrs: dict[str, Any]) -> list[Any]:
    """The stamp and workload values of `attrs` in column order (None where absent or mistyped).

    Stamps that fit their type leave `attrs`; a mistyped one stays there so the JSON keeps it.
    """
    typed: list[Any] = [None] * TYPED_WIDTH
    for attribute, (position, kind, element, keep) in TYPED_SLOTS.items():
        value = attrs.get(attribute) if keep else attrs.pop(attribute, None)
        if value is None:
            continue
        coerced = _coerce(value, kind, element)
        if coerced is not _MISMATCH:
            typed[position] = finite(coerced)
        elif not keep:
            attrs[attribute] = value  # a wrongly typed stamp stays visible in the JSON
    return typed


class SpanRows:
    """Accumulates span and event rows; `batch()` hands them over as Arrow tables, one column at a time.

    A span already added (same trace and span id) is counted as a duplicate and not added again, so a
    batch never holds one key twice and the store can insert it with a plain anti-join.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._keys: set[str] = set()
        self._events: list[tuple[Any, ...]] = []
        self._gpus: dict[str, GpuRecord] = {}
        self.rejected = 0
        self.duplicates = 0
        self.errors: list[str] = []

    def reject(self, what: str, problem: str) -> None:
        """Count one invalid item, keeping the first reasons."""
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{what}: {problem}")

    def add(
        self,
        ctx: ResourceContext,
        scope: str | None,
        trace_id: str,
        span_id: str,
        parent_span_id: str,
        name: str,
        kind: int,
        start_ns: int,
        end_ns: int,
        status_code: int,
        status_message: str,
        attrs: dict[str, Any],
        events: list[tuple[int, str, dict[str, Any]]],
    ) -> None:
        """One span (lowercase hex ids, "" for no parent); `attrs` is consumed."""
        problem = (
            _id_problem(trace_id, "trace_id", 16)
            or _id_problem(span_id, "span_id", 8)
            or _id_problem(parent_span_id, "parent_span_id", 8, optional=True)
        )
        if problem is not None:
            self.reject(f"span {span_id[:16] or '?'} ({name!r})", problem)
            return
        typed = typed_attributes(attrs)
        self.add_typed(
            ctx,
            scope,
            trace_id,
            span_id,
            parent_span_id,
            name,
            kind,
            start_ns,
            end_ns,
            status_code,
            status_message,
            typed,
            attrs,
            events,
        )

    def add_typed(
        self,
        ctx: ResourceContext,
        scope: str | None,
        trace_id: str,
        span_id: str,
        parent_span_id: str,
        name: str,
        kind: int,
        start_ns: int,
        end_ns: int,
        status_code: int,
        status_message: str,
        typed: list[Any],
        rest: dict[str, Any],
        events: list[tuple[int, str, dict[str, Any]]],
    ) -> None:
        """One span whose ids are valid and whose attributes are already split: `typed` as built by
        `typed_attributes`, `rest` what goes to the `attributes` JSON."""
        problem = time_problem(start_ns, end_ns)
        if problem is not None:
            self.reject(f"span {span_id} ({name!r})", problem)
            return
        key = trace_id + span_id
        if key in self._keys:
            self.duplicates += 1
            return
        self._keys.add(key)
        pci = typed[_PCI_AT]
        if pci:  # docs/contracts.md §2: PCI bus ids are normalised everywhere, also in the span's column
            typed[_PCI_AT] = _normal_pci(pci)
        self._rows.append(
            (
                trace_id,
                span_id,
                parent_span_id or None,
                name,
                KINDS[kind] if 0 <= kind < len(KINDS) else str(kind),
                ctx.service,
                ctx.service_version,
                ctx.host,
                ctx.k8s_node,
                scope,
                start_ns,
                end_ns,
                STATUSES[status_code] if 0 <= status_code < 3 else "UNSET",
                status_message or None,
                typed[_TELEMETRY_SOURCE_AT] is not None or a.TELEMETRY_SOURCE in rest,
                *typed,
                to_json(rest),
                ctx.resource_json,
            )
        )
        for seq, (ts_ns, event_name, event_attrs) in enumerate(events[:MAX_EVENTS_PER_SPAN]):
            self._events.append((trace_id, span_id, seq, ts_ns, event_name, to_json(event_attrs)))
        uuid = typed[_GPU_UUID_AT]
        if uuid and ctx.host and uuid not in self._gpus:
            self._learn_gpu(uuid, ctx.host, typed)

    def _learn_gpu(self, uuid: str, host: str, typed: list[Any]) -> None:
        pci = typed[_PCI_AT]
        if pci is not None and _normal_pci(pci) != pci:
            pci = None  # not a PCI bus id: the inventory keeps none rather than a wrong one
        self._gpus[uuid] = GpuRecord(
            uuid,
            host=host,
            gpu_index=typed[_STAMP_INDEX[a.GPU_INDEX]],
            pci_bus_id=pci,
            name=typed[_STAMP_INDEX[a.GPU_NAME]],
            memory_total_bytes=typed[_STAMP_INDEX[a.MEMORY_TOTAL]],
            slowdown_temp_c=typed[_STAMP_INDEX[a.TEMPERATURE_SLOWDOWN]],
            host_source="span",
        )

    def __len__(self) -> int:
        return len(self._rows)

    def batch(self) -> SpanBatch:
        """The rows so far as Arrow tables."""
        return SpanBatch(
            spans=_columns_table(SPAN_SCHEMA, self._rows),
            events=_columns_table(EVENT_SCHEMA, self._events),
            gpus=list(self._gpus.values()),
            rejected=self.rejected,
            errors=list(self.errors),
            duplicates=self.duplicates,
        )


def _columns_table(schema: pa.Schema, rows: list[tuple[Any, ...]]) -> pa.Table:
    """Row tuples as an Arrow table (the transpose runs in C: `zip(*rows)`)."""
    columns = zip(*rows) if rows else ([] for _ in schema.names)
    return pa.Table.from_arrays([pa.array(column, type=f.type) for column, f in zip(columns, schema)], schema=schema)


_STAMP_INDEX = {attribute: i for i, (attribute, *_rest) in enumerate(_STAMPS)}
_TELEMETRY_SOURCE_AT = _STAMP_INDEX[a.TELEMETRY_SOURCE]
_GPU_UUID_AT = _STAMP_INDEX[a.GPU_UUID]
_PCI_AT = _STAMP_INDEX[a.GPU_PCI_BUS_ID]


class LogRows:
    """Accumulates log records from any front-end, rejecting invalid ones alone."""

    def __init__(self) -> None:
        self.logs: list[LogRecord] = []
        self.rejected = 0
        self.errors: list[str] = []

    def add(
        self,
        ctx: ResourceContext,
        ts_ns: int,
        observed_ns: int,
        severity_text: str,
        severity_number: int,
        body: Any,
        trace_id: str,
        span_id: str,
        attrs: dict[str, Any],
    ) -> None:
        """One log record (lowercase hex ids, "" when absent)."""
        problem = log_problem(ts_ns, observed_ns, trace_id, span_id)
        if problem is not None:
            self.rejected += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(f"log record: {problem}")
            return
        self.logs.append(
            LogRecord(
                ts_ns=ts_ns or observed_ns,
                body=body if isinstance(body, str) else to_json(body),
                severity=severity_text or severity_name(severity_number),
                severity_number=severity_number or None,
                trace_id=trace_id if trace_id and trace_id != _ZERO_TRACE else None,
                span_id=span_id if span_id and span_id != _ZERO_SPAN else None,
                service=ctx.service,
                host=ctx.host,
                source="otlp",
                attributes=attrs,
                resource=ctx.resource,
            )
        )

    def batch(self) -> LogBatch:
        """The records so far."""
        return LogBatch(list(self.logs), self.rejected, list(self.errors))


__all__ = [
    "EVENT_SCHEMA",
    "KINDS",
    "SPAN_SCHEMA",
    "STATUSES",
    "TYPED_SLOTS",
    "TYPED_WIDTH",
    "LogBatch",
    "LogRows",
    "ResourceContext",
    "SpanBatch",
    "SpanRows",
    "arrow_schema",
    "finite",
    "resource_context",
    "severity_name",
    "to_json",
    "typed_attributes",
]
