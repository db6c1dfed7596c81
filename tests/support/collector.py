"""Helpers for the collector's tests: the lab's simulated GPUs on a virtual clock, and a real OTel SDK
pipeline with an in-memory exporter (a fresh provider per test)."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca import lab
from gpu_rca.collector import Collector

START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
PERIOD_NS = 100_000_000  # 10 Hz
SERVICE_PID = 4242
FLEET = [{"host": "node-a", "gpus": 2, "model": "L4"}]


class RecordingNvml:
    """The lab's simulated NVML, recording every reading it answers (ts, call, GPU index, value), and
    raising `fail[index]` from that GPU's calls to script driver failures."""

    def __init__(self, inner: Any, clock: Callable[[], int]) -> None:
        self._inner = inner
        self._clock = clock
        self.readings: list[tuple[int, str, int | None, Any]] = []
        self.fail: dict[int, type[BaseException]] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not (name.startswith("nvmlDevice") and callable(value)):
            return value

        def call(*args: Any) -> Any:
            index = getattr(args[0], "index", None) if args else None
            if index in self.fail:
                raise self.fail[index]()
            result = value(*args)
            self.readings.append((self._clock(), name, index, result))
            return result

        return call

    def values(self, call: str, index: int, start_ns: int, end_ns: int) -> list[Any]:
        """What `call` answered for GPU `index` in [start_ns, end_ns]."""
        return [v for ts, name, i, v in self.readings if name == call and i == index and start_ns <= ts <= end_ns]


@dataclass
class Sim:
    clock: lab.VirtualClock
    nvml: RecordingNvml
    collector: Collector
    exporter: InMemorySpanExporter
    provider: TracerProvider
    gpus: list[Any] = field(default_factory=list)

    def tick(self, n: int = 1) -> None:
        """Advance one sampling period and sample, `n` times."""
        for _ in range(n):
            self.clock.advance(PERIOD_NS)
            self.collector.sample_once(self.clock.now_ns())

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())


def make_sim(fleet: list[dict[str, Any]] = FLEET, **collector_kwargs: Any) -> Sim:
    clock = lab.VirtualClock(START_NS)
    inner = lab.simulated_nvml(fleet, clock=clock.now_ns)
    nvml = RecordingNvml(inner, clock.now_ns)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    collector_kwargs.setdefault("cuda_visible_devices", None)
    collector = Collector(
        nvml, clock=clock.now_ns, tracer_provider=provider, background=False, pid=SERVICE_PID, **collector_kwargs
    )
    collector.start()
    return Sim(clock, nvml, collector, exporter, provider, inner.devices)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    """A tiny OTLP/HTTP receiver: decodes protobuf bodies of /v1/traces and /v1/logs."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver.traces.append(ExportTraceServiceRequest.FromString(body))
                elif self.path == "/v1/logs":
                    receiver.logs.append(ExportLogsServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) for every span received."""
        out = []
        for request in self.traces:
            for rs in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out


def _value(v: object) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def span_attributes(span: object) -> dict:
    """A protobuf span's attributes as a dict."""
    return {kv.key: _value(kv.value) for kv in span.attributes}
