"""OTLP/HTTP receiver routes: POST /v1/traces, /v1/logs and /v1/metrics, answered as the OTLP specification says.

200 with an empty response (or `partial_success` when some items were invalid), 400 for a body that cannot
be decoded, 413 past the size cap, 415 for another content type or encoding, 503 with Retry-After when the
ingest log is full or cannot write. Errors carry a `google.rpc.Status`, in the request's content type. A
rejected request changes nothing: it never reaches the store.

Traces and logs are acknowledged once the request, as received, is on disk in the ingest log
(`correlate.server.wal`); the loader stores them in batches. Their invalid items (ids, times) are found here
with the rules the rows use (`correlate.otlp.check`), so the partial success is answered at once.

Metrics are stored only where they are GPU metrics (`correlate.otlp.metrics`); the other data points are
acknowledged with 200 and counted in `gpu_rca_serve_metric_points_ignored_total`, so an SDK that sends every
signal to one OTLP endpoint logs no errors.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gpu_rca.correlate.otlp.check import entries_problem, log_rejections, span_rejections
from gpu_rca.correlate.otlp.decode import logs_from_request, spans_from_request
from gpu_rca.correlate.otlp.metrics import MetricBatch, metrics_from_request, point_count
from gpu_rca.correlate.otlp.rows import LogBatch, SpanBatch
from gpu_rca.correlate.server.body import BodyError, read_body
from gpu_rca.correlate.server.responses import JSON, PROTOBUF, error_response, media_type
from gpu_rca.correlate.server.state import ServerState
from gpu_rca.correlate.server.wal import LogFull, LogUnavailable
from gpu_rca.correlate.server.writer import QueueFull, WriterClosed
from gpu_rca.correlate.store.records import IngestResult
from gpu_rca.schemas.errors import GpuRcaError, InputError
from gpu_rca.schemas.otlp_json import message_from_json, message_to_json

log = logging.getLogger("gpu_rca.serve")

#: Error messages from one request echoed back in `partial_success.error_message`.
_MESSAGES_SHOWN = 5


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: its request and response messages and how its rows are built."""

    name: str  # "traces" | "logs" | "metrics"
    request_cls: Any
    response_cls: Any
    rejected_field: str  # the partial_success counter

    def rows(self, message: Any) -> SpanBatch | LogBatch | MetricBatch:
        """The store rows of a decoded request (InputError for attribute bytes that are not a KeyValue)."""
        if self.name == "traces":
            return spans_from_request(message)
        if self.name == "metrics":
            return metrics_from_request(message)
        return logs_from_request(message)

    def count(self, message: Any) -> int:
        """Spans, log records or metric data points in a decoded request."""
        if self.name == "traces":
            return sum(len(scope.spans) for rs in message.resource_spans for scope in rs.scope_spans)
        if self.name == "metrics":
            return point_count(message)
        return sum(len(scope.log_records) for rl in message.resource_logs for scope in rl.scope_logs)

    def is_empty(self, message: Any) -> bool:
        """True for a request with no resource entries (answered at once, as the spec allows)."""
        return len(getattr(message, f"resource_{'spans' if self.name == 'traces' else self.name}")) == 0


TRACES = Signal(
    "traces",
    trace_service_pb2.ExportTraceServiceRequest,
    trace_service_pb2.ExportTraceServiceResponse,
    "rejected_spans",
)
LOGS = Signal(
    "logs",
    logs_service_pb2.ExportLogsServiceRequest,
    logs_service_pb2.ExportLogsServiceResponse,
    "rejected_log_records",
)
METRICS = Signal(
    "metrics",
    metrics_service_pb2.ExportMetricsServiceRequest,
    metrics_service_pb2.ExportMetricsServiceResponse,
    "rejected_data_points",
)


def decode(signal: Signal, body: bytes, content_type: str) -> Any:
    """The request message from a protobuf or OTLP/JSON body; InputError when it cannot be decoded.

    Protobuf traces decode to `correlate.otlp.wire.RawTraces`, span attributes left as bytes for the rows.
    The error says what is wrong in the sender's terms, without the parser's internal type names.
    """
    if content_type == PROTOBUF:
        try:
            # The whole message is parsed (in C), so bytes that would fail to build rows are refused now.
            return signal.request_cls.FromString(body)
        except (InputError, DecodeError, ValueError) as exc:
            raise InputError(
                f"body is not OTLP/protobuf {signal.name}: its bytes do not decode as an OTLP export request"
            ) from exc
    try:
        return message_from_json(body, signal.request_cls)
    except (InputError, TypeError, ValueError, RecursionError) as exc:  # also shapes json_format does not map
        raise InputError(f"body is not OTLP/JSON {signal.name}: {public_reason(str(exc))}") from exc


#: Protobuf message type names the parsers put in their errors (the sender never wrote them).
_TYPE_NAME = r"\b(?:[\w]+\.)*(?:Export\w+Service(?:Request|Response)|TracesData|LogsData)\b"


def public_reason(text: str) -> str:
    """A parser's error without protobuf type names: `... which is 3 at ExportTraceServiceRequest.` -> `... which is 3`."""
    text = re.sub(r"Error parsing message(?: with type '[^']*')?: ?", "", text)
    text = re.sub(rf"^not a valid {_TYPE_NAME}: ?", "", text)
    text = re.sub(rf"\s+at {_TYPE_NAME}[\w.]*\.?$", "", text)
    text = re.sub(_TYPE_NAME, "the request", text).strip().rstrip(".")
    return text or "not an OTLP export request"


async def export(request: Request, signal: Signal) -> Response:
    """Handle one OTLP/HTTP export request for `signal`: traces and logs are admitted (or refused) from their
    headers alone, before the body is read."""
    state: ServerState = request.app.state.gpu_rca
    content_type = media_type(request.headers.get("content-type"))
    if content_type not in (PROTOBUF, JSON):
        # Answered as JSON whatever was sent: a person with curl reads it (a protobuf Status is binary).
        return error_response(415, f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type or '(none)'!r}", JSON)
    if signal is METRICS:
        return await _receive(request, state, signal, content_type)
    refusal = state.admission.refusal(request.headers.get("content-length"))
    if refusal is not None:
        state.counters.requests_refused.labels(reason=refusal.reason).inc()
        # The body is left unread: the connection is closed after the answer.
        headers = {"Retry-After": str(state.config.retry_after_s), "Connection": "close"}
        return error_response(503, refusal.message, content_type, headers=headers)
    return await _receive(request, state, signal, content_type)


async def _receive(request: Request, state: ServerState, signal: Signal, content_type: str) -> Response:
    """Read, decode and check a request, then log (traces, logs) or store (metrics) it."""
    try:
        body, wire_bytes = await read_body(
            request.stream(),
            content_length=request.headers.get("content-length"),
            content_encoding=request.headers.get("content-encoding"),
            max_bytes=state.config.max_body_bytes,
            timeout_s=state.config.client_timeout_s,
        )
    except BodyError as exc:
        if exc.status == 408:
            _dropped(state, request, "body_timeout", f"its {signal.name} body stalled ({exc.message})")
        return error_response(exc.status, exc.message, content_type, headers=exc.headers)
    except ClientDisconnect:
        _dropped(state, request, "client_disconnected", f"it disconnected in the middle of its {signal.name} body")
        return Response(status_code=400)  # never sent: the client is gone
    state.counters.request_bytes.labels(route=request.url.path).inc(wire_bytes)
    try:
        message = decode(signal, body, content_type)
    except InputError as exc:
        return error_response(400, str(exc), content_type)
    if signal.is_empty(message):
        return _success(signal, content_type, None)
    if signal is METRICS:
        return await _export_metrics(state, message, content_type)
    if (problem := entries_problem(message)) is not None:
        return error_response(400, problem, content_type)
    with state.admission.held():  # from its body read to its answer (a slow sender holds no place)
        return await _log_request(state, signal, message, body, content_type)


async def _log_request(state: ServerState, signal: Signal, message: Any, body: bytes, content_type: str) -> Response:
    """Check a trace or log request's items, append it to the ingest log and answer once it is on disk; the
    loader stores it. Its invalid items are answered as a partial success now and left out when it is stored."""
    rejected, errors = (span_rejections if signal is TRACES else log_rejections)(message)
    total = signal.count(message)
    counters = state.counters
    (counters.spans_rejected if signal is TRACES else counters.logs_rejected).inc(rejected)
    if rejected < total:
        try:
            await asyncio.wrap_future(state.log.append(signal.name, content_type, body))
        except (LogFull, LogUnavailable) as exc:
            dropped = counters.spans_dropped if signal is TRACES else counters.logs_dropped
            dropped.labels(reason="log_full" if isinstance(exc, LogFull) else "log_unavailable").inc(total - rejected)
            return error_response(
                503, f"{exc}; retry later", content_type, headers={"Retry-After": str(state.config.retry_after_s)}
            )
    return _success(signal, content_type, IngestResult(total - rejected, rejected, 0, tuple(errors)))


async def _export_metrics(state: ServerState, message: Any, content_type: str) -> Response:
    """GPU metric points are few and answered with what the store made of them: stored directly (not logged)."""
    max_wait_s = state.config.max_queue_wait_s
    try:
        state.writer.admit(max_wait_s)
        state.rows.admit(None if max_wait_s is None else max_wait_s - state.writer.expected_wait_s)
        rows = await state.rows.build(METRICS.rows, message)
        assert isinstance(rows, MetricBatch)
        result = await _submit_metrics(state, rows, max_wait_s)
    except (QueueFull, WriterClosed) as exc:
        state.counters.metric_points_dropped.labels(
            reason="queue_full" if isinstance(exc, QueueFull) else "shutting_down"
        ).inc(METRICS.count(message))
        return error_response(
            503, f"{exc}; retry later", content_type, headers={"Retry-After": str(state.config.retry_after_s)}
        )
    except GpuRcaError as exc:
        return error_response(
            503,
            f"the store could not write this request: {exc}; retry later",
            content_type,
            headers={"Retry-After": str(state.config.retry_after_s)},
        )
    _count(state, METRICS, result)
    return _success(METRICS, content_type, result)


async def _submit_metrics(state: ServerState, batch: MetricBatch, max_wait_s: float | None) -> IngestResult:
    """Store a request's GPU samples (a request with none skips the writer); count the points left out."""
    for reason, count in batch.ignored.items():
        state.counters.metric_points_ignored.labels(reason=reason).inc(count)
    if not batch.samples:
        return IngestResult()
    return await state.writer.submit(
        lambda store: store.ingest_metric_samples(batch.samples, batch.gpus, batch.pods), max_wait_s=max_wait_s
    )


def _dropped(state: ServerState, request: Request, reason: str, why: str) -> None:
    """One line for a request dropped before its body was read whole (nothing of it is kept), and its count."""
    state.counters.connections_dropped.labels(reason=reason).inc()
    client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
    log.warning("gpu-rca serve: dropped a request from %s: %s; nothing of it was kept", client, why)


def _count(state: ServerState, signal: Signal, result: IngestResult) -> None:
    counters = state.counters  # metrics only: spans and logs are counted by the loader
    counters.metric_points_stored.inc(result.accepted)
    counters.metric_points_rejected.inc(result.rejected)


def _success(signal: Signal, content_type: str, result: IngestResult | None) -> Response:
    response = signal.response_cls()
    if result is not None and result.rejected:
        partial = response.partial_success
        setattr(partial, signal.rejected_field, result.rejected)
        shown = "; ".join(result.errors[:_MESSAGES_SHOWN])
        more = len(result.errors) - _MESSAGES_SHOWN
        partial.error_message = f"{result.rejected} rejected: {shown}" + (f" (and {more} more)" if more > 0 else "")
    if content_type == JSON:
        return Response(message_to_json(response), media_type=JSON)
    return Response(response.SerializeToString(), media_type=PROTOBUF)


async def traces(request: Request) -> Response:
    """POST /v1/traces"""
    return await export(request, TRACES)


async def logs(request: Request) -> Response:
    """POST /v1/logs"""
    return await export(request, LOGS)


async def metrics(request: Request) -> Response:
    """POST /v1/metrics"""
    return await export(request, METRICS)


ROUTES = [
    Route("/v1/traces", traces, methods=["POST"]),
    Route("/v1/logs", logs, methods=["POST"]),
    Route("/v1/metrics", metrics, methods=["POST"]),
]

__all__ = ["LOGS", "METRICS", "ROUTES", "TRACES", "Signal", "decode", "export"]
