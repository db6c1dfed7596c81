"""OTLP trace and log payloads encoded by the real OTel SDK, for tests that ingest or POST them."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.otlp_json import message_to_json

START_NS = 1_700_000_000_000_000_000
#: The GPU of the lost-GPU payloads (and the default GPU of `traces_request`).
UUID = "GPU-5e2b1c3a-0000-4000-8000-000000000001"
#: The resource of the lost-GPU payloads and of `logs_request`.
RESOURCE = {a.SERVICE_NAME: "ddcolor", a.SERVICE_VERSION: "1.4.0", a.HOST_NAME: "node-a"}
#: The resource of the every-stamp payloads (and of the spans test_serve exports to a running server).
SERVE_RESOURCE = {a.SERVICE_NAME: "ddcolor", a.SERVICE_VERSION: "1.4.2", a.HOST_NAME: "node-a"}
#: The stamps of an inference span on a GPU lost to XID 79 while throttling.
LOST_GPU_STAMPS = {
    a.TELEMETRY_SOURCE: "simulated",
    a.GPU_INDEX: 0,
    a.GPU_UUID: UUID,
    a.GPU_NAME: "NVIDIA L4",
    a.GPU_PCI_BUS_ID: "00000000:3B:00.0",
    a.TELEMETRY_SAMPLES: 12,
    a.TEMPERATURE_MAX: 83,
    a.TEMPERATURE_SLOWDOWN: 90,
    a.POWER_MEAN: 61.5,
    a.MEMORY_TOTAL: 24_152_899_584,
    a.THROTTLE_REASONS: ["sw_thermal", "hw_slowdown"],
    a.XID: [79],
    a.QUEUE_MS: 3.25,
    a.ERROR_TYPE: "gpu_lost",
    a.DDCOLOR_INPUT_SIZE: 1280,
    a.DDCOLOR_MODEL: "ddcolor_paper_tiny",
    "http.route": "/colorize",
}


def lost_gpu_trace_request(n_inference: int = 1) -> ExportTraceServiceRequest:
    """One server span around `n_inference` failed inference spans on a GPU lost to XID 79 (each with a
    `gpu.xid` event), resource `RESOURCE`, starting at `START_NS`."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ddcolor.service")
    with tracer.start_as_current_span("POST /colorize", start_time=START_NS):
        for i in range(n_inference):
            with tracer.start_as_current_span("ddcolor.inference", attributes=LOST_GPU_STAMPS) as span:
                span.add_event("gpu.xid", {"xid": 79})
                span.set_status(Status(StatusCode.ERROR, f"lost {i}"))
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def full_stamps(index: int) -> dict[str, object]:
    """Every stamp of docs/contracts.md §1 with a value of its declared type (distinct per span)."""
    values: dict[str, object] = {}
    for stamp in a.STAMPS:
        if stamp.kind is bool:
            values[stamp.attribute] = index % 2 == 0
        elif stamp.kind is int:
            values[stamp.attribute] = 1000 + index
        elif stamp.kind is float:
            values[stamp.attribute] = 12.5 + index
        elif stamp.kind is list:
            values[stamp.attribute] = ["sw_thermal", "hw_slowdown"] if stamp.element is str else [48, 79 + index]
        else:
            values[stamp.attribute] = f"{stamp.column}-{index}"
    values[a.GPU_UUID] = f"GPU-0000000{index}-1111-2222-3333-444455556666"
    values[a.GPU_PCI_BUS_ID] = f"0000:3{index}:00.0"
    values[a.TELEMETRY_SOURCE] = a.SOURCE_SIMULATED
    values[a.ERROR_TYPE] = a.ERROR_CUDA_OOM
    values[a.DDCOLOR_INPUT_SIZE] = 1280
    return values


def every_stamp_trace_request(count: int = 3) -> ExportTraceServiceRequest:
    """`count` root inference spans, span `i` carrying `full_stamps(i)`, resource `SERVE_RESOURCE`."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(SERVE_RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for index in range(count):
        with tracer.start_as_current_span("ddcolor.inference", attributes=full_stamps(index)):
            pass
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def logs_request() -> ExportLogsServiceRequest:
    """One CUDA out-of-memory ERROR log record at `START_NS`, resource `RESOURCE`."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create(RESOURCE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("ddcolor").emit(
        timestamp=START_NS,
        severity_text="ERROR",
        body="CUDA out of memory. Tried to allocate 2.00 GiB",
    )
    provider.shutdown()
    return encode_logs(exporter.get_finished_logs())


def traces_request(
    *,
    service: str = "ddcolor",
    host: str = "node-a",
    gpu: str = UUID,
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
