"""OTLP trace payloads encoded by the real OTel SDK, for tests that ingest or POST them."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.otlp_json import message_to_json

START_NS = 1_700_000_000_000_000_000


def traces_request(
    *,
    service: str = "ddcolor",
    host: str = "node-a",
    gpu: str = "GPU-5e2b1c3a-0000-4000-8000-000000000001",
    traces: int = 1,
    inference: bool = True,
    failed: bool = False,
    start_ns: int = START_NS,
    pci: str | None = None,
) -> Any:
    """An ExportTraceServiceRequest of `traces` traces: a server span with a child, which is an inference span
    (stamped with gpu.telemetry.source) when `inference`, else a plain child span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({a.SERVICE_NAME: service, a.HOST_NAME: host}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    stamps: dict[str, Any] = {a.TELEMETRY_SOURCE: "simulated", a.GPU_UUID: gpu, a.GPU_INDEX: 0} if inference else {}
    if inference and pci is not None:
        stamps[a.GPU_PCI_BUS_ID] = pci
    for i in range(traces):
        begin = start_ns + i * 1_000_000_000
        with tracer.start_as_current_span("POST /colorize", start_time=begin, end_on_exit=False) as root:
            with tracer.start_as_current_span(
                "ddcolor.inference", attributes=stamps, start_time=begin + 1000, end_on_exit=False
            ) as span:
                if failed:
                    span.set_status(Status(StatusCode.ERROR, "boom"))
                span.end(end_time=begin + 500_000_000)
            root.end(end_time=begin + 600_000_000)
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def traces_line(**kwargs: Any) -> str:
    """`traces_request(**kwargs)` as one OTLP/JSON line (no newline), as the Collector's file exporter writes."""
    return message_to_json(traces_request(**kwargs))
