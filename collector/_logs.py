"""loguru records inside a span carry `trace_id`/`span_id`; an opt-in sink exports them as OTLP logs.

The ids are put into `record["extra"]` by a patcher, which runs in the caller's thread at log time, so
`enqueue=True` sinks (which run in loguru's worker thread, outside the span) still carry them, and a
`serialize=True` file sink writes them into each JSON line (joinable with the spans later).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber

TRACE_ID = "trace_id"
SPAN_ID = "span_id"

_SEVERITY = {
    "TRACE": SeverityNumber.TRACE,
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "SUCCESS": SeverityNumber.INFO2,
    "WARNING": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "CRITICAL": SeverityNumber.FATAL,
}
_log = logging.getLogger("gpu_rca.collector")


def trace_patcher(record: dict[str, Any]) -> None:
    """loguru patcher: the current span's ids as lowercase hex in `extra` ("" outside a span)."""
    ctx = trace.get_current_span().get_span_context()
    extra = record["extra"]
    if ctx.is_valid:
        extra[TRACE_ID] = format(ctx.trace_id, "032x")
        extra[SPAN_ID] = format(ctx.span_id, "016x")
    else:
        extra.setdefault(TRACE_ID, "")
        extra.setdefault(SPAN_ID, "")


_installed = False


def install_patcher(logger: Any = None) -> None:
    """Add the trace-id patcher to loguru's global logger, after any patcher the application set. Idempotent."""
    global _installed
    if _installed:
        return
    if logger is None:
        from loguru import logger
    previous: Callable[[dict[str, Any]], None] | None = getattr(getattr(logger, "_core", None), "patcher", None)

    def patcher(record: dict[str, Any]) -> None:
        if previous is not None:
            previous(record)
        trace_patcher(record)

    logger.configure(patcher=patcher)
    _installed = True


class OtlpLogSink:
    """A loguru sink writing each message as an OTel log record with the patcher's trace/span ids."""

    def __init__(self, logger_provider: Any, name: str = "gpu_rca.collector", health: Any = None) -> None:
        self._logger = logger_provider.get_logger(name)
        self._health = health

    def __call__(self, message: Any) -> None:
        record = message.record
        try:
            extra = record["extra"]
            trace_hex, span_hex = extra.get(TRACE_ID) or "", extra.get(SPAN_ID) or ""
            attributes = {
                k: v
                for k, v in extra.items()
                if k not in (TRACE_ID, SPAN_ID) and isinstance(v, (str, bool, int, float))
            }
            attributes.update({"code.function.name": record["function"], "code.line.number": record["line"]})
            level = record["level"].name
            self._logger.emit(
                LogRecord(
                    # The sink runs as the record is written: observed then, on the same (possibly virtual) clock.
                    timestamp=(ts_ns := int(record["time"].timestamp() * 1e9)),
                    observed_timestamp=ts_ns,
                    trace_id=int(trace_hex, 16) if trace_hex else None,
                    span_id=int(span_hex, 16) if span_hex else None,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED) if trace_hex else None,
                    severity_text=level,
                    severity_number=_SEVERITY.get(level, SeverityNumber.UNSPECIFIED),
                    body=record["message"],
                    attributes=attributes,
                )
            )
        except Exception as exc:
            if self._health is not None:
                self._health.failure("errors", "otlp_log_sink", "exporting a loguru record failed", exc)
            else:
                _log.debug("OTLP log sink failed: %s", exc)
