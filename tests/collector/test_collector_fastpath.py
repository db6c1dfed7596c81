"""The unchecked attribute write gives the same span as the SDK's checked one, and falls back when it must."""

from __future__ import annotations

from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca.collector._spans import set_clean_attributes

STAMPS = {
    "gpu.index": 0,
    "gpu.power.mean": 51.5,
    "gpu.telemetry.stale": False,
    "gpu.throttle.reasons": ("sw_thermal",),
    "gpu.xid": (),
    "gpu.name": "NVIDIA L4",
}


def _spans(limits: SpanLimits | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_same_attributes_as_set_attributes():
    provider, exporter = _spans()
    tracer = provider.get_tracer("t")
    fast = tracer.start_span("fast", attributes={"a": 1})
    set_clean_attributes(fast, STAMPS)
    fast.end()
    checked = tracer.start_span("checked", attributes={"a": 1})
    checked.set_attributes(STAMPS)
    checked.end()
    a, b = exporter.get_finished_spans()
    assert dict(a.attributes) == dict(b.attributes)
    assert list(a.attributes) == list(b.attributes)


def test_falls_back_under_limits_and_after_end():
    provider, exporter = _spans(SpanLimits(max_span_attributes=3, max_attribute_length=4))
    span = provider.get_tracer("t").start_span("limited")
    set_clean_attributes(span, STAMPS)
    span.end()
    set_clean_attributes(span, {"late": 1})  # after end: ignored like set_attribute
    (s,) = exporter.get_finished_spans()
    assert len(s.attributes) == 3 and s.attributes["gpu.name"] == "NVID" and "late" not in s.attributes
