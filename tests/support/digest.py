"""A small, real incident for the digest tests: spans from the OTel SDK, samples, logs and kernel lines in a store.

Two L4 GPUs on node-a serve a DDColor request every 1–2 s for 30 minutes; from minute 15 the
1280-px requests run out of memory on both (the workload itself: the same size fails wherever it runs), GPU 0
from minute 22 on GPU 1 as well. With `hostile=True` a span attribute and a log line carry
HTML, so pages can be checked for escaping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from gpu_rca.correlate import GpuRecord, KernelEvent, LogRecord, MetricSample, Store
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as M

START_NS = 1_772_445_000 * 10**9  # 2026-03-02T09:50:00Z
MINUTE_NS = 60 * 10**9
GIB = 2**30
GPUS = (
    ("GPU-aaaaaaaa-1111-2222-3333-444444444444", 0, "0000:3b:00.0"),
    ("GPU-bbbbbbbb-1111-2222-3333-444444444444", 1, "0000:5e:00.0"),
)
HOST = "node-a"
XSS = "<script>alert(1)</script>"


@dataclass(frozen=True)
class Incident:
    """The incident's telemetry, ready to load into a store or to send to `serve` as OTLP."""

    trace_request: ExportTraceServiceRequest
    samples: list[MetricSample]
    gpus: list[GpuRecord]
    logs: list[LogRecord]
    kernel: list[KernelEvent]
    summary: dict = field(default_factory=dict)

    def load(self, store: Store) -> dict:
        """Store everything; returns the summary (failed traces, window, counts)."""
        store.ingest_trace_request(self.trace_request)
        store.ingest_metric_samples(self.samples, gpus=self.gpus)
        store.ingest_log_records(self.logs)
        store.ingest_kernel_events(self.kernel)
        return self.summary


def build_incident(store: Store, *, hostile: bool = False, seed: int = 3, minutes: int = 30) -> dict:
    """Fill `store` with the incident; returns {'failed_traces': [...], 'start_ns', 'end_ns', 'total', 'failed'}."""
    return make_incident(hostile=hostile, seed=seed, minutes=minutes).load(store)


def make_incident(*, hostile: bool = False, seed: int = 3, minutes: int = 30) -> Incident:
    """The incident's spans, samples, logs and kernel events (see the module docstring)."""
    rng = random.Random(seed)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({A.SERVICE_NAME: "ddcolor", A.SERVICE_VERSION: "1.4.0", A.HOST_NAME: HOST})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("digest-tests")
    end_ns = START_NS + minutes * MINUTE_NS
    failed_traces: list[str] = []
    logs: list[LogRecord] = []
    t = START_NS
    total = 0
    while True:
        t += rng.randint(1, 2) * 10**9
        if t + 10**9 >= end_ns:  # every request ends inside the window
            break
        uuid, index, bus = GPUS[total % 2]
        size = 1280 if rng.random() < 0.3 else 512
        model = XSS if hostile and size == 1280 else "ddcolor_paper_tiny"
        fails = size == 1280 and t > START_NS + (15 if index == 0 else 22) * MINUTE_NS
        process = (15 if size == 1280 else 3) * GIB
        span = tracer.start_span(
            "ddcolor.inference",
            start_time=t,
            attributes={
                A.TELEMETRY_SOURCE: "simulated",
                A.GPU_UUID: uuid,
                A.GPU_INDEX: index,
                A.GPU_PCI_BUS_ID: bus,
                A.GPU_NAME: "NVIDIA L4",
                A.MEMORY_TOTAL: 24 * GIB,
                A.MEMORY_PROCESS_MAX: process,
                A.MEMORY_USED_MAX: min(24 * GIB, 2 * GIB + process),
                A.DDCOLOR_INPUT_SIZE: size,
                A.DDCOLOR_MODEL: model,
                A.DDCOLOR_TASK_TYPE: rng.choice(["person", "building"]),
            },
        )
        duration_ns = (900 if size == 1280 else 300) * 10**6
        if fails:
            span.set_attribute(A.ERROR_TYPE, A.ERROR_CUDA_OOM)
            span.set_status(Status(StatusCode.ERROR, "CUDA out of memory"))
            trace_id = format(span.get_span_context().trace_id, "032x")
            failed_traces.append(trace_id)
            body = "CUDA out of memory. Tried to allocate 3.50 GiB" + (f" for {XSS}" if hostile else "")
            logs.append(
                LogRecord(
                    ts_ns=t + duration_ns,
                    body=body,
                    severity="ERROR",
                    trace_id=trace_id,
                    span_id=format(span.get_span_context().span_id, "016x"),
                    service="ddcolor",
                    host=HOST,
                    source="loguru",
                )
            )
        span.end(end_time=t + duration_ns)
        total += 1
    samples = []
    for uuid, index, _ in GPUS:
        ts = START_NS - 10 * MINUTE_NS
        while ts <= end_ns:
            late = ts > START_NS + (15 if index == 0 else 22) * MINUTE_NS
            fb_mib = 23_900 if late else 9_000 + rng.randint(-500, 500)
            samples += [
                MetricSample(ts, M.FB_USED, float(fb_mib), uuid, HOST),
                MetricSample(ts, M.FB_TOTAL, 24_576.0, uuid, HOST),
                MetricSample(ts, M.GPU_UTIL, float(rng.randint(55, 95)), uuid, HOST),
            ]
            ts += 15 * 10**9
    kernel = [
        KernelEvent(
            START_NS + 20 * MINUTE_NS,
            HOST,
            GPUS[0][2],
            None,
            31,
            4242,
            "python3",
            "NVRM: Xid (PCI:0000:3b:00): 31, pid=4242, name=python3, MMU Fault",
        )
    ]
    return Incident(
        trace_request=encode_spans(exporter.get_finished_spans()),
        samples=samples,
        gpus=[GpuRecord(u, HOST, i, b, "NVIDIA L4", 24 * GIB) for u, i, b in GPUS],
        logs=logs,
        kernel=kernel,
        summary={
            "failed_traces": failed_traces,
            "start_ns": START_NS,
            "end_ns": end_ns,
            "total": total,
            "failed": len(failed_traces),
        },
    )


def analysis_for(incident: dict, *, hostile: bool = False) -> dict:
    """An analysis (docs/contracts.md §3) of the incident, shaped as `analyze --json` prints it (the digest's input)."""
    from gpu_rca.schemas.timefmt import rfc3339

    value = XSS if hostile else 1280
    return {
        "window": {"start": rfc3339(incident["start_ns"]), "end": rfc3339(incident["end_ns"])},
        "spans": {"total": incident["total"], "failed": incident["failed"]},
        "warnings": [f"a warning with {XSS}"] if hostile else [],
        "causes": [
            {
                "cause": "gpu_oom_large_inputs",
                "score": 0.92,
                "confidence": "high",
                "summary": f"{incident['failed']} requests ran out of GPU memory; 100 % had input size 1280.",
                "drivers": [
                    {
                        "attribute": A.DDCOLOR_MODEL if hostile else A.DDCOLOR_INPUT_SIZE,
                        "value": value,
                        "failure_share": 1.0,
                        "baseline_share": 0.3,
                        "lift": 3.3,
                        "p_value": 1e-12,
                    }
                ],
                "evidence": [
                    {
                        "kind": "metric",
                        "name": M.FB_USED,
                        "gpu_uuid": GPUS[0][0],
                        "host": HOST,
                        "value": 23900.0,
                        "baseline": 9000.0,
                        "unit": "MiB",
                        "start": rfc3339(incident["start_ns"] + 15 * MINUTE_NS),
                        "end": rfc3339(incident["end_ns"]),
                    }
                ],
                "failed_spans": incident["failed"],
                "gpus": [GPUS[0][0]],
                "hosts": [HOST],
                "example_traces": incident["failed_traces"][:3],
            }
        ],
    }
