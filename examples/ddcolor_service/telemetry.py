"""The service's OpenTelemetry wiring: providers with OTLP export, loguru with trace ids, a server span.

Every timestamp comes from one clock (wall time in production, the lab's virtual clock in simulation), so
the server span, the preprocessing span, the inference span and the logs of one request line up. That is
why the server span is made here rather than by opentelemetry-instrumentation-fastapi, which always reads
the wall clock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from gpu_rca.collector import OtlpLogSink, trace_patcher

Clock = Callable[[], int]
TRACE_ID_HEADER = "x-trace-id"


@dataclass
class Telemetry:
    """The providers and the loguru logger one service instance uses."""

    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    logger: Any
    clock: Clock

    @property
    def tracer(self) -> trace.Tracer:
        """The service's own tracer (server and preprocessing spans)."""
        return self.tracer_provider.get_tracer("ddcolor.service")

    def flush(self) -> None:
        """Export everything buffered now."""
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def build_telemetry(
    resource: Resource, clock: Clock, *, otlp_endpoint: str | None = None, export: bool = True
) -> Telemetry:
    """Providers exporting over OTLP/HTTP (`otlp_endpoint`, else the `OTEL_EXPORTER_OTLP_*` variables)."""
    tracer_provider = TracerProvider(resource=resource)
    logger_provider = LoggerProvider(resource=resource)
    if export:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = otlp_endpoint.rstrip("/") if otlp_endpoint else None
        spans = OTLPSpanExporter(endpoint=f"{base}/v1/traces") if base else OTLPSpanExporter()
        logs = OTLPLogExporter(endpoint=f"{base}/v1/logs") if base else OTLPLogExporter()
        tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs))
    return Telemetry(tracer_provider, logger_provider, service_logger(logger_provider, clock), clock)


def service_logger(logger_provider: LoggerProvider, clock: Clock) -> Any:
    """A loguru logger of its own whose records carry the current span's ids and the clock's time,
    exported as OTLP logs (and printed to stderr by whoever adds a sink)."""
    from loguru._logger import Core, Logger

    def clock_time(record: dict[str, Any]) -> None:
        record["time"] = record["time"].__class__.fromtimestamp(clock() / 1e9, tz=dt.UTC)

    # A core of its own: the service's records go to its sinks only, not to the process-wide logger's.
    logger = Logger(Core(), None, 0, False, False, False, False, True, [], {})
    logger = logger.patch(trace_patcher).patch(clock_time)
    logger.add(OtlpLogSink(logger_provider, name="ddcolor.service"), format="{message}", level="INFO")
    return logger


@contextlib.contextmanager
def clocked_span(
    tracer: trace.Tracer,
    name: str,
    clock: Clock,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    context: Any = None,
) -> Iterator[trace.Span]:
    """A current span that starts and ends on `clock`; an exception marks it ERROR and propagates."""
    span = tracer.start_span(name, context=context, kind=kind, attributes=attributes, start_time=clock())
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield span
    except BaseException as exc:
        span.record_exception(exc, timestamp=clock())
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:512]))
        raise
    finally:
        span.end(end_time=clock())


class ServerSpanMiddleware:
    """An ASGI middleware: one SERVER span per HTTP request on the service's clock, continuing an incoming
    `traceparent`; the response carries the trace id (`X-Trace-Id`) so a user can run `gpu-rca explain`."""

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method, path = scope["method"], scope["path"]
        attributes = {"http.request.method": method, "url.path": path, "url.scheme": scope.get("scheme", "http")}
        status: dict[str, int] = {}
        with clocked_span(
            self.telemetry.tracer,
            f"{method} {path}",
            self.telemetry.clock,
            kind=SpanKind.SERVER,
            attributes=attributes,
            context=propagate.extract(headers),
        ) as span:
            trace_id = format(span.get_span_context().trace_id, "032x").encode()

            async def send_with_trace_id(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (TRACE_ID_HEADER.encode(), trace_id)],
                    }
                await send(message)

            await self.app(scope, receive, send_with_trace_id)
            code = status.get("code", 500)
            span.set_attribute("http.response.status_code", code)
            if code >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {code}"))


__all__ = ["TRACE_ID_HEADER", "ServerSpanMiddleware", "Telemetry", "build_telemetry", "clocked_span", "service_logger"]
