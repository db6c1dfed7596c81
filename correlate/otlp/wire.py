"""OTLP trace requests read with each span's attributes left as raw `KeyValue` bytes, decoded once per value.

Reading an attribute through upb's Python API builds a `KeyValue` and an `AnyValue` object (about 1 µs per
attribute, 29 on a stamped span). Most stamps repeat from span to span — the GPU's identity and limits, the
model, integer temperatures and clocks — so the spans are decoded with a message type whose `attributes`
field is `repeated bytes` (the same wire format), and each distinct attribute's bytes are decoded once into
what the store row needs, kept in a bounded `AttributeCache`.
"""

from __future__ import annotations

import math
import struct
import sys
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gpu_rca.correlate.otlp.check import bounded_text
from gpu_rca.correlate.otlp.rows import TYPED_SLOTS, TYPED_WIDTH, finite
from gpu_rca.schemas.errors import InputError

_TRACE_PACKAGE = "opentelemetry.proto.trace.v1"
_RAW_PACKAGE = "gpu_rca.raw_attributes.trace.v1"


def _file_proto(module: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def _raw_attributes(message: descriptor_pb2.DescriptorProto) -> None:
    """Rename references into the copied package and make `Span.attributes` (field 9) `repeated bytes`."""
    for field in message.field:
        if field.type_name.startswith(f".{_TRACE_PACKAGE}."):
            field.type_name = f".{_RAW_PACKAGE}." + field.type_name[len(_TRACE_PACKAGE) + 2 :]
        if message.name == "Span" and field.name == "attributes":
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
    for nested in message.nested_type:
        _raw_attributes(nested)


def _raw_traces_class() -> Any:
    """`TracesData` (field 1 is `resource_spans`, as in ExportTraceServiceRequest) with raw span attributes.

    Built in a private descriptor pool from the OTLP package's own descriptors, so it follows the installed
    OTLP version and never clashes with the real message names.
    """
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_proto(common_pb2))
    pool.Add(_file_proto(resource_pb2))
    trace = _file_proto(trace_pb2)
    trace.name = "gpu_rca/raw_attributes/trace.proto"
    trace.package = _RAW_PACKAGE
    for message in trace.message_type:
        _raw_attributes(message)
    pool.Add(trace)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_RAW_PACKAGE}.TracesData"))


#: An ExportTraceServiceRequest (or TracesData) whose spans' `attributes` are the raw KeyValue bytes.
RawTraces = _raw_traces_class()


def decode_traces(body: bytes) -> Any:
    """A protobuf ExportTraceServiceRequest as `RawTraces`; InputError when it is not valid protobuf."""
    try:
        return RawTraces.FromString(body)
    except (DecodeError, ValueError) as exc:
        raise InputError(f"body is not a valid ExportTraceServiceRequest protobuf: {exc}") from exc


def key_value(raw: bytes) -> common_pb2.KeyValue:
    """One raw span attribute as a KeyValue; InputError when its bytes are not one (upb decodes them lazily)."""
    try:
        return common_pb2.KeyValue.FromString(raw)
    except (DecodeError, ValueError) as exc:
        raise InputError(f"a span attribute is not a valid KeyValue protobuf: {exc}") from exc


# What one attribute's bytes mean for the row: (key, position among the typed values or -1, value, also in
# the `attributes` JSON). MISMATCH: a stamp in a field other than its type's (an int for a float stamp, a
# string for a number, an unset value); the span then takes the dict path, which coerces as the JSON reader.
Entry = tuple[str, int, Any, bool]
MISMATCH: Any = object()
_FIELD = {int: "int_value", float: "double_value", str: "string_value", bool: "bool_value", list: "array_value"}


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as plain Python (bytes as hex; non-finite floats as None, JSON cannot hold them)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return bounded_text(value.string_value)
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return bounded_text(value.bytes_value.hex())
    return finite(getattr(value, kind))


def _entry(kv: common_pb2.KeyValue) -> Entry:
    """What a decoded attribute means for the row (the cache holds it for the attribute's bytes)."""
    key = sys.intern(kv.key)  # one string per distinct key, whatever the number of cached values
    value = kv.value
    which = value.WhichOneof("value")
    slot = TYPED_SLOTS.get(key)
    if slot is None:
        return key, -1, any_value(value), True
    position, kind, element, keep = slot
    if which != _FIELD[kind]:
        return MISMATCH
    if kind is list:
        wanted = _FIELD.get(element) if element else None
        items = value.array_value.values
        if wanted is None or any(item.WhichOneof("value") != wanted for item in items):
            return MISMATCH
        # A tuple: one cached value is shared by every row that repeats it, so it must not be mutable.
        return key, position, tuple(getattr(item, wanted) for item in items), keep
    typed = getattr(value, which)
    if kind is float and not math.isfinite(typed):
        typed = None
    elif kind is str:
        typed = bounded_text(typed)
    return key, position, typed, keep


# The usual miss is a new reading of a stamp (a power mean, a memory high-water mark, a queue time). Its bytes
# have one canonical form, the key and then the AnyValue; that AnyValue alone is decoded here, which costs
# a third of decoding the KeyValue and reading its key. Any other form (a key or value of 128 bytes or more,
# another field order, extra fields) matches no head and is decoded whole.
_VALUE_TAG = 0x12  # KeyValue field 2, length-delimited
_DOUBLE_TAG = 0x21  # AnyValue field 4 (double_value), 8 bytes little-endian: read without upb at all
_DOUBLE = struct.Struct("<d")
#: `0x0A, len(key), key` -> (key, position, expected AnyValue field, also in the JSON), for the scalar slots.
_HEADS: dict[bytes, tuple[str, int, str, bool]] = {
    bytes((0x0A, len(key.encode()))) + key.encode(): (key, position, _FIELD[kind], keep)
    for key, (position, kind, _element, keep) in TYPED_SLOTS.items()
    if kind is not list and len(key.encode()) < 0x80
}


def _scalar_entry(raw: bytes) -> Entry | None:
    """The entry of a scalar slot's attribute in its canonical form and expected field, or None."""
    at = raw[1] + 2 if len(raw) > 1 else 0  # past the key
    head = _HEADS.get(raw[:at])
    if head is None or len(raw) < at + 2 or raw[at] != _VALUE_TAG or raw[at + 1] != len(raw) - at - 2:
        return None
    key, position, field, keep = head
    if field == "double_value" and raw[at + 1] == 9 and raw[at + 2] == _DOUBLE_TAG:  # the value is 8 bytes
        number = _DOUBLE.unpack_from(raw, at + 3)[0]
        return key, position, number if math.isfinite(number) else None, keep
    try:
        value = common_pb2.AnyValue.FromString(raw[at + 2 :])
    except (DecodeError, ValueError):
        return None  # decoded whole, the error then names the attribute
    if value.WhichOneof("value") != field:
        return None
    typed = getattr(value, field)
    if field == "double_value" and not math.isfinite(typed):
        typed = None
    elif field == "string_value":
        typed = bounded_text(typed)
    return key, position, typed, keep


#: Bytes one cached entry costs besides its raw bytes and value: the dict slot, the bytes and tuple headers.
ENTRY_OVERHEAD_BYTES = 160


class AttributeCache:
    """Raw attribute bytes -> `Entry`, bounded in entries and in bytes (the raw bytes and the decoded value,
    counted as twice the raw length, plus `ENTRY_OVERHEAD_BYTES` each): emptied when either is full, so memory
    stays fixed whatever the traffic; the values that repeat are learnt again at once. An attribute longer
    than `max_value_bytes` is decoded and never kept (such values seldom repeat; keeping them would evict
    the ones that do). Safe to share between threads (GIL-atomic dict operations; a race can only decode one
    value twice, or count a few bytes twice). An entry's value is shared by every row that repeats the
    attribute, so rows and their `attributes` dicts are read, never mutated."""

    def __init__(
        self, max_entries: int = 32_768, *, max_bytes: int = 32 * 1024 * 1024, max_value_bytes: int = 4096
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self.bytes = 0  # what the entries kept now cost, as counted above
        self._entries: dict[bytes, Entry] = {}
        self.lookups = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        """Share of attribute lookups answered from the cache since the last `reset_stats()` (0.0 if none)."""
        return (self.lookups - self.misses) / self.lookups if self.lookups else 0.0

    def reset_stats(self) -> None:
        """Restart the hit-rate counters (the cached entries stay)."""
        self.lookups = self.misses = 0

    def clear(self) -> None:
        """Forget every entry and restart the counters."""
        self._entries.clear()
        self.bytes = 0
        self.reset_stats()

    def split(self, attributes: Any) -> tuple[list[Any], dict[str, Any]] | None:
        """(typed values, the rest for the JSON) of one span's raw attributes; None when a stamp is not in
        its expected field (the caller then takes the dict path). A later duplicate key wins, as in the SDKs."""
        typed: list[Any] = [None] * TYPED_WIDTH
        rest: dict[str, Any] = {}
        get = self._entries.get
        self.lookups += len(attributes)
        for raw in attributes:
            entry = get(raw)
            if entry is None:
                entry = self._learn(raw)
            if entry is MISMATCH:
                return None
            key, position, value, in_json = entry
            if position >= 0:
                typed[position] = value
            if in_json:
                rest[key] = value
        return typed, rest

    def _learn(self, raw: bytes) -> Entry:
        entry = _scalar_entry(raw) or _entry(key_value(raw))
        self.misses += 1
        cost = 3 * len(raw) + ENTRY_OVERHEAD_BYTES
        if self.max_entries and len(raw) <= self.max_value_bytes and cost <= self.max_bytes:
            if len(self._entries) >= self.max_entries or self.bytes + cost > self.max_bytes:
                self._entries.clear()
                self.bytes = 0
            self._entries[raw] = entry
            self.bytes += cost
        return entry


#: The process's cache (at most 32 MiB as counted, about 10 MB at typical attribute sizes).
DEFAULT_CACHE = AttributeCache()


__all__ = [
    "DEFAULT_CACHE",
    "MISMATCH",
    "AttributeCache",
    "Entry",
    "RawTraces",
    "any_value",
    "decode_traces",
    "key_value",
]
