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


def test_a_quiet_window_written_straight_into_the_span_matches_the_public_path():
    from gpu_rca import lab
    from gpu_rca.collector import Collector
    from tests.support.collector import PERIOD_NS, START_NS

    clock = lab.VirtualClock(START_NS)
    nvml = lab.simulated_nvml([{"host": "h", "gpus": 1, "model": "L4"}], clock=clock.now_ns)
    nvml.devices[0].load(0.7)
    spans = []
    # A value-length limit (long enough to cut nothing) keeps the SDK's own checked path.
    for limits in (None, SpanLimits(max_attribute_length=10_000)):
        provider, exporter = _spans(limits)
        collector = Collector(
            nvml, clock=clock.now_ns, tracer_provider=provider, background=False, cuda_visible_devices=None
        )
        collector.start()
        spans.append((collector, exporter))
    for _ in range(5):
        clock.advance(PERIOD_NS)
        for collector, _ in spans:
            collector.sample_once(clock.now_ns())
    start = clock.now_ns() - 3 * PERIOD_NS
    for collector, _ in spans:
        span = collector.start_inference_span("inf", gpu=0, attributes={"ddcolor.input_size": 512}, start_ns=start)
        span.end(end_ns=clock.now_ns())
    (straight,), (checked,) = (exporter.get_finished_spans() for _, exporter in spans)
    assert straight.attributes["gpu.telemetry.samples"] == 4 and straight.attributes["gpu.inflight.max"] == 1
    assert dict(straight.attributes) == dict(checked.attributes)  # (the SDK moves a key set again to the end)
