"""OTLP files as the OTel Collector's file exporter writes them: JSON lines, or length-prefixed protobuf."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gpu_rca.correlate.otlp.decode import logs_from_request, spans_from_request
from gpu_rca.correlate.otlp.json_rows import Unsupported, add_logs, add_spans
from gpu_rca.correlate.otlp.rows import LogRows, SpanRows
from gpu_rca.correlate.readers.common import FileCounts, IngestOptions
from gpu_rca.correlate.readers.opening import ZSTD_MAGIC, Opened, json_documents
from gpu_rca.correlate.store import Store
from gpu_rca.schemas.errors import InputError
from gpu_rca.schemas.otlp_json import message_from_dict

#: Spans or log records gathered before one bulk insert: large enough to amortise a statement,
#: small enough that a file of many small lines does not hold everything in memory.
BATCH_ITEMS = 20_000
_MAX_MESSAGE = 1 << 30

_Message = TypeVar("_Message", bound=Message)


class _Batcher:
    """Gathers the rows of one signal and stores them in bulk."""

    def __init__(self, store: Store, counts: FileCounts, kind: str) -> None:
        self.store, self.counts, self.kind = store, counts, kind
        self.rows: Any = SpanRows() if kind == "traces" else LogRows()
        counts.kind = "spans" if kind == "traces" else "logs"

    def add_message(self, message: Any) -> None:
        if self.kind == "traces":
            spans_from_request(message, self.rows)
        else:
            logs_from_request(message, self.rows)
        self._maybe_flush()

    def add_document(self, document: dict[str, Any], number: int) -> None:
        try:
            (add_spans if self.kind == "traces" else add_logs)(document, self.rows)
        except Unsupported:
            message_cls = ExportTraceServiceRequest if self.kind == "traces" else ExportLogsServiceRequest
            try:
                message = message_from_dict(document, message_cls)
            except InputError as exc:
                raise InputError(f"line {number}: {exc}") from exc
            self.add_message(message)
            return
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._size() >= BATCH_ITEMS:
            self.flush()

    def _size(self) -> int:
        return len(self.rows) if self.kind == "traces" else len(self.rows.logs)

    def flush(self) -> None:
        if self._size() == 0 and not self.rows.rejected:
            return
        if self.kind == "traces":
            self.counts.add(self.store.ingest_span_batch(self.rows.batch()))
            self.rows = SpanRows()
        else:
            self.counts.add(self.store.ingest_log_batch(self.rows.batch()))
            self.rows = LogRows()


def read_otlp_json(opened: Opened, store: Store, options: IngestOptions) -> FileCounts:
    """Store every ExportTraceServiceRequest or ExportLogsServiceRequest line (hex ids, as OTLP/JSON has them)."""
    counts = FileCounts()
    batcher: _Batcher | None = None
    for number, document in json_documents(opened.stream, counts.warnings, strict=options.strict):
        kind = _json_kind(document, number)
        if batcher is None:
            batcher = _Batcher(store, counts, kind)
        elif kind != batcher.kind:
            raise InputError(f"line {number}: {kind} in a file of {batcher.kind} (one signal per file)")
        batcher.add_document(document, number)
    if batcher is not None:
        batcher.flush()
    return counts


def _json_kind(document: Any, number: int) -> str:
    if isinstance(document, dict):
        if "resourceSpans" in document:
            return "traces"
        if "resourceLogs" in document:
            return "logs"
    raise InputError(f"line {number}: not an OTLP ExportTraceServiceRequest or ExportLogsServiceRequest")


def read_otlp_proto(opened: Opened, store: Store, options: IngestOptions) -> FileCounts:
    """Store length-prefixed messages: a 4-byte big-endian length, then an Export*ServiceRequest."""
    counts = FileCounts()
    batcher: _Batcher | None = None
    stream = opened.stream
    number = 0
    while header := stream.read(4):
        number += 1
        if len(header) < 4:
            raise InputError(f"message {number}: truncated length prefix ({len(header)} of 4 bytes)")
        length = int.from_bytes(header, "big")
        if length > _MAX_MESSAGE:
            raise InputError(f"message {number}: length {length} is not plausible; not OTLP protobuf framing")
        payload = stream.read(length)
        if len(payload) < length:
            raise InputError(f"message {number}: truncated ({len(payload)} of {length} bytes)")
        if payload[:4] == ZSTD_MAGIC:
            payload = _unzstd(payload, options.max_bytes, number)
        if batcher is None:
            message, kind = _first_message(payload)
            batcher = _Batcher(store, counts, kind)
        elif batcher.kind == "traces":
            message = payload  # spans_from_request decodes the bytes itself, span attributes left raw
        else:
            message = _parse(payload, ExportLogsServiceRequest, number)
        try:
            batcher.add_message(message)
        except InputError as exc:
            raise InputError(f"message {number}: {exc}") from exc
    if batcher is not None:
        batcher.flush()
    return counts


def _parse(payload: bytes, message_cls: type[_Message], number: int) -> _Message:
    from google.protobuf.message import DecodeError

    try:
        return message_cls.FromString(payload)
    except DecodeError as exc:
        raise InputError(f"message {number}: not a valid {message_cls.__name__} ({exc})") from exc


def _first_message(payload: bytes) -> tuple[Any, str]:
    """Tell traces from logs: both start with field 1, so look at what the first item holds."""
    from google.protobuf.message import DecodeError

    try:
        traces = ExportTraceServiceRequest.FromString(payload)
        spans = [sp for rs in traces.resource_spans for ss in rs.scope_spans for sp in ss.spans]
        if spans and len(spans[0].trace_id) == 16 and len(spans[0].span_id) == 8:
            return traces, "traces"
    except DecodeError:
        pass
    try:
        logs = ExportLogsServiceRequest.FromString(payload)
        records = [lr for rl in logs.resource_logs for sl in rl.scope_logs for lr in sl.log_records]
        if records and (records[0].time_unix_nano or records[0].observed_time_unix_nano):
            return logs, "logs"
    except DecodeError:
        pass
    raise InputError("message 1 is neither an ExportTraceServiceRequest nor an ExportLogsServiceRequest")


def _unzstd(payload: bytes, max_bytes: int, number: int) -> bytes:
    import zstandard

    try:
        chunks, size = [], 0
        with zstandard.ZstdDecompressor().stream_reader(payload) as reader:
            while size <= max_bytes and (chunk := reader.read(1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
        data = b"".join(chunks)
    except zstandard.ZstdError as exc:
        raise InputError(f"message {number}: bad zstd frame ({exc})") from exc
    if len(data) > max_bytes:
        raise InputError(f"message {number} decompresses to more than {max_bytes} bytes")
    return data


__all__ = ["BATCH_ITEMS", "read_otlp_json", "read_otlp_proto"]
