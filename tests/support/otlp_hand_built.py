"""OTLP trace requests built field by field rather than by the SDK: exact attribute pairs in order, duplicates
and odd value types included, for tests of the protobuf ingest path."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from gpu_rca.schemas import attributes as a

#: The GPU of `well_typed_stamps`.
UUID = "GPU-5e2b1c3a-0000-4000-8000-0000000000aa"


def _value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        result = AnyValue()
        result.array_value.values.extend(_value(v) for v in value)
        return result
    if value is None:
        return AnyValue()
    return AnyValue(string_value=str(value))


def hand_built_request(*spans: tuple[int, list[tuple[str, object]]], host: str = "node-a") -> ExportTraceServiceRequest:
    """One resource and scope holding a span per (serial, attribute pairs); pairs keep order and duplicates."""
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [KeyValue(key=a.SERVICE_NAME, value=_value("ddcolor")), KeyValue(key=a.HOST_NAME, value=_value(host))]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests"
    for serial, pairs in spans:
        span = Span(
            trace_id=serial.to_bytes(16, "big"),
            span_id=serial.to_bytes(8, "big"),
            name="ddcolor.inference",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_000_250_000_000,
        )
        span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in pairs)
        scope_spans.spans.append(span)
    return message


def well_typed_stamps(**overrides: object) -> list[tuple[str, object]]:
    """A well-typed stamp set, with some attributes replaced."""
    values = {
        a.TELEMETRY_SOURCE: "nvml",
        a.GPU_UUID: UUID,
        a.GPU_NAME: "NVIDIA L4",
        a.GPU_INDEX: 0,
        a.TEMPERATURE_MAX: 83,
        a.POWER_MEAN: 61.5,
        a.XID: [79],
        a.THROTTLE_REASONS: ["sw_thermal"],
        a.TELEMETRY_STALE: False,
        a.DDCOLOR_INPUT_SIZE: 512,
        a.DDCOLOR_MODEL: "tiny",
    }
    values.update({getattr(a, name): value for name, value in overrides.items()})
    return list(values.items())
