"""loguru `serialize=True` JSON lines -> log records (trace and span ids from `record.extra`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gpu_rca.correlate.readers.common import FileCounts, IngestOptions
from gpu_rca.correlate.readers.opening import Opened, json_documents
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.records import LogRecord
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.errors import InputError

BATCH_LINES = 20_000
#: loguru's level names -> OTel severity numbers (loguru's SUCCESS sits between INFO and WARNING).
_SEVERITY_NUMBERS = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "SUCCESS": 11, "WARNING": 13, "ERROR": 17, "CRITICAL": 21}
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_SERVICE_KEYS = (a.SERVICE_NAME, "service")
_HOST_KEYS = (a.HOST_NAME, "host")


def _hex_id(value: Any, pattern: re.Pattern[str]) -> str | None:
    """A lowercase hex id, or None for a missing or all-zero one (loguru logs outside a span carry zeros)."""
    if isinstance(value, int):
        value = f"{value:0{32 if pattern is _HEX32 else 16}x}"
    if not isinstance(value, str):
        return None
    value = value.lower().removeprefix("0x")
    return value if pattern.match(value) and value.strip("0") else None


#: Seconds past which a timestamp in ns no longer fits a BIGINT (year 2262).
_MAX_TIMESTAMP_S = (2**63 - 1) / 1e9


def log_record_from_loguru(document: Any) -> LogRecord:
    """One loguru JSON line as a LogRecord; raises InputError when it is not one."""
    record = document.get("record") if isinstance(document, Mapping) else None
    if not isinstance(record, Mapping):
        raise InputError("not a loguru JSON line (no `record` object)")
    try:
        timestamp = float(record["time"]["timestamp"])
        level = str(record["level"]["name"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"loguru record without time.timestamp or level.name ({exc!r})"[:200]) from exc
    if not 0 <= timestamp < _MAX_TIMESTAMP_S:  # also NaN: the row key must fit a BIGINT of nanoseconds
        raise InputError(f"loguru time.timestamp {timestamp!r} is not a Unix time")
    if not isinstance(record.get("extra") or {}, Mapping) or not isinstance(record.get("file") or {}, Mapping):
        raise InputError("loguru record whose `extra` or `file` is not an object")
    extra = dict(record.get("extra") or {})
    trace_id = _hex_id(extra.pop("trace_id", None), _HEX32)
    span_id = _hex_id(extra.pop("span_id", None), _HEX16)
    service = next((extra.pop(k) for k in _SERVICE_KEYS if isinstance(extra.get(k), str)), None)
    host = next((extra.pop(k) for k in _HOST_KEYS if isinstance(extra.get(k), str)), None)
    attributes: dict[str, Any] = dict(extra)
    for key, value in (
        ("code.function", record.get("function")),
        ("code.filepath", (record.get("file") or {}).get("path")),
        ("code.lineno", record.get("line")),
        ("logger.name", record.get("name")),
    ):
        if value is not None:
            attributes[key] = value
    exception = record.get("exception")
    if isinstance(exception, Mapping):
        attributes["exception.type"] = exception.get("type")
        attributes["exception.message"] = exception.get("value")
    message = record.get("message")
    return LogRecord(
        ts_ns=round(timestamp * 1_000_000) * 1000,  # loguru's float seconds carry microseconds
        body=message if isinstance(message, str) else str(document.get("text", "")).rstrip("\n"),
        severity=level,
        severity_number=_SEVERITY_NUMBERS.get(level.upper()),
        trace_id=trace_id,
        span_id=span_id,
        service=service,
        host=host,
        source="loguru",
        attributes=attributes,
    )


def read_loguru(opened: Opened, store: Store, options: IngestOptions) -> FileCounts:
    """Store every loguru JSON line of the file."""
    counts = FileCounts(kind="logs")
    batch: list[LogRecord] = []
    for number, document in json_documents(opened.stream, counts.warnings, strict=options.strict):
        try:
            batch.append(log_record_from_loguru(document))
        except InputError as exc:
            raise InputError(f"line {number}: {exc}") from exc
        if len(batch) >= BATCH_LINES:
            counts.add(store.ingest_log_records(batch))
            batch = []
    counts.add(store.ingest_log_records(batch))
    return counts


__all__ = ["log_record_from_loguru", "read_loguru"]
