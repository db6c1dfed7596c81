"""`configure()`: one default Collector over OTel providers built from the standard `OTEL_*` variables."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from gpu_rca.collector._collector import Collector
from gpu_rca.collector._health import Health
from gpu_rca.collector._logs import OtlpLogSink, install_patcher
from gpu_rca.collector._nvml import DROPPED, ERRORS
from gpu_rca.collector._nvml_source import NvmlSource
from gpu_rca.collector._spans import InferenceSpanScope
from gpu_rca.schemas import attributes as A

_lock = threading.Lock()
_default: Collector | None = None
_owned: list[Any] = []  # providers configure() created, released by shutdown()
_sinks: list[int] = []  # loguru sink ids configure() added
#: One set of counters per process: the providers configure() installs outlive a reconfiguration.
_health = Health()


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter so spans it fails to deliver (a dead endpoint) are counted as dropped."""

    def __init__(self, inner: SpanExporter, health: Health) -> None:
        self.inner = inner
        self.health = health
        self._lock = threading.Lock()
        self._taken = 0

    @property
    def taken(self) -> int:
        """Spans handed to `export` so far, delivered or not."""
        with self._lock:
            return self._taken

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        with self._lock:
            self._taken += len(spans)
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            self.health.failure(ERRORS, "otlp_spans", "exporting spans failed", exc)
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.health.failure(DROPPED, "otlp_spans", f"{len(spans)} spans not delivered (endpoint down?)")
            if len(spans) > 1:
                self.health.count(DROPPED, "otlp_spans", len(spans) - 1)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that counts, as dropped, every span its full queue has no room for.

    The SDK's own processor drops those silently (a log line, no count); here a span is only queued while
    fewer than `max_queue_size` are waiting for the exporter, so the SDK's queue never overflows and every
    span is either handed to the exporter (which counts failed deliveries) or counted here.
    """

    def __init__(self, exporter: CountingSpanExporter, health: Health) -> None:
        self._max_queue_size = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        super().__init__(exporter, max_queue_size=self._max_queue_size)
        self._exporter = exporter
        self._health = health
        self._lock = threading.Lock()
        self._queued = 0

    def on_end(self, span: Any) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        with self._lock:
            full = self._queued - self._exporter.taken >= self._max_queue_size
            if not full:
                self._queued += 1
        if full:
            self._health.failure(
                DROPPED,
                "otlp_queue_full",
                f"span export queue full ({self._max_queue_size} spans waiting); dropping spans",
            )
            return
        super().on_end(span)


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def _protocol(signal: str) -> str:
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _exporter_wanted(signal: str) -> bool:
    return os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() != "none"


#: What to install when a service asks for OTLP/gRPC (grpcio is not part of the collector's base install).
GRPC_HINT = "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the OTLP/gRPC exporter: pip install 'gpu-rca[otlp-grpc]'"


def otlp_span_exporter() -> SpanExporter:
    """The OTLP span exporter for `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`grpc` or `http/protobuf`)."""
    if _protocol("TRACES") == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError as exc:
            raise ImportError(GRPC_HINT) from exc

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def otlp_log_exporter() -> Any:
    """The OTLP log exporter for `OTEL_EXPORTER_OTLP_[LOGS_]PROTOCOL`."""
    if _protocol("LOGS") == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
        except ImportError as exc:
            raise ImportError(GRPC_HINT) from exc

        return GrpcLogExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter()


def build_resource(
    service_name: str, service_version: str | None = None, extra: Mapping[str, Any] | None = None
) -> Resource:
    """`service.name`, `service.version`, `host.name`, `k8s.node.name` (from `K8S_NODE_NAME`), merged with
    `OTEL_RESOURCE_ATTRIBUTES` (the explicit arguments win)."""
    attrs: dict[str, Any] = {
        A.SERVICE_NAME: service_name,
        A.SERVICE_VERSION: service_version or os.environ.get("SERVICE_VERSION") or "unknown",
        A.HOST_NAME: socket.gethostname(),
    }
    node = os.environ.get("K8S_NODE_NAME")
    if node:
        attrs[A.K8S_NODE_NAME] = node
    attrs.update(extra or {})
    return Resource.create(attrs)


def _load_pynvml(health: Health) -> NvmlSource | None:
    try:
        import pynvml
    except Exception as exc:
        health.failure(ERRORS, "nvml_import", "pynvml not importable, running with gpu.telemetry.source=none", exc)
        return None
    return pynvml


def configure(
    service_name: str,
    nvml: NvmlSource | None = None,
    sample_hz: float = 10,
    *,
    service_version: str | None = None,
    export_logs: bool = False,
    resource_attributes: Mapping[str, Any] | None = None,
) -> Collector:
    """Set up tracing (and logging) from `OTEL_*` and start the sampler; returns the default Collector.

    Where the application already installed an SDK `TracerProvider`, the collector's processor is added to
    it (its exporters stay in charge); otherwise a provider with a batching OTLP exporter is installed.
    `nvml=None`: `import pynvml` and `nvmlInit()`; on any failure spans carry `gpu.telemetry.source=none`.
    `export_logs=True` also sends loguru records as OTLP logs. Calling it again replaces the default
    Collector; OTel allows one global provider per process, so after `shutdown()` a new `configure()`
    stamps spans but the provider it installed first is not replaced.
    """
    global _default
    health = _health
    resource = build_resource(service_name, service_version, resource_attributes)
    with _lock:
        _release(providers=False)  # a reconfiguration keeps the installed providers (set once per process)
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider(resource=resource)
            if _exporter_wanted("TRACES"):
                provider.add_span_processor(
                    CountingBatchSpanProcessor(CountingSpanExporter(otlp_span_exporter(), health), health)
                )
            trace.set_tracer_provider(provider)
            _owned.append(provider)
        source = nvml if nvml is not None else _load_pynvml(health)
        collector = Collector(source, tracer_provider=provider, sample_hz=sample_hz, health=health)
        install_patcher()
        if export_logs and _exporter_wanted("LOGS"):
            _setup_logs(resource, health)
        _default = collector
    collector.start()
    return collector


def _setup_logs(resource: Resource, health: Health) -> None:
    from loguru import logger
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = get_logger_provider()
    if not isinstance(provider, LoggerProvider):
        provider = LoggerProvider(resource=resource)
        provider.add_log_record_processor(BatchLogRecordProcessor(otlp_log_exporter()))
        set_logger_provider(provider)
        _owned.append(provider)
    _sinks.append(logger.add(OtlpLogSink(provider, health=health), format="{message}", catch=True))


def _release(*, providers: bool) -> None:
    """Stop the default Collector and remove configure()'s loguru sinks; with `providers`, also flush and
    shut down the providers configure() installed."""
    global _default
    if _default is not None:
        _default.shutdown()
        _default = None
    if _sinks:
        from loguru import logger

        while _sinks:
            with contextlib.suppress(ValueError):  # the application removed it already
                logger.remove(_sinks.pop())
    while providers and _owned:
        with contextlib.suppress(Exception):
            _owned.pop().shutdown()  # flushes what is queued


def shutdown() -> None:
    """Stop the sampler, flush and shut down what `configure()` created. Safe to call twice."""
    with _lock:
        _release(providers=True)


def default_collector() -> Collector:
    """The configured Collector, or an unconfigured one (global provider, `gpu.telemetry.source=none`)."""
    global _default
    collector = _default
    if collector is None:
        with _lock:
            if _default is None:
                _default = Collector(None)
            collector = _default
    return collector


def inference_span(
    name: str = "inference",
    *,
    gpu: Any = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> InferenceSpanScope:
    """An inference span on the default Collector: a context manager and a decorator (sync and async)."""
    return InferenceSpanScope(default_collector, name, gpu, attributes, kind)
