"""Which telemetry format a file holds, decided from its first (decompressed) bytes, never from its name."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum

from gpu_rca.correlate.kernel_log.parse import looks_like_kernel_log


class Format(StrEnum):
    """A file format `gpu-rca ingest` reads (docs/contracts.md §3)."""

    OTLP_JSON = "otlp-json"  # traces or logs: one Export*ServiceRequest per line
    OTLP_PROTO = "otlp-proto"  # length-prefixed Export*ServiceRequest messages
    PROMETHEUS_QUERY_RANGE = "prometheus-query-range"
    PROMETHEUS_TEXT = "prometheus-text"
    LOGURU_JSON = "loguru-json"
    KERNEL_LOG = "kernel-log"


@dataclass(frozen=True)
class Detection:
    """A format, or (format None) why the file is not telemetry gpu-rca reads."""

    format: Format | None
    reason: str = ""


# Top-level keys that identify each JSON format; searched in the raw head when the first line is incomplete.
_JSON_KEYS: tuple[tuple[str, Format | None, str], ...] = (
    ("resourceSpans", Format.OTLP_JSON, ""),
    ("resourceLogs", Format.OTLP_JSON, ""),
    ("resultType", Format.PROMETHEUS_QUERY_RANGE, ""),
    ("resourceMetrics", None, "OTLP metrics are not read: give Prometheus query_range JSON or exposition text"),
)
_SAMPLE_LINE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?[ \t]+(?:[-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|NaN|Inf))(?:[ \t]+-?[0-9]+)?[ \t]*$"
)
_JSON_START = re.compile(r"^(?:\{|\[\s*[\[{\]])")
_PROTO_MAX_MESSAGE = 1 << 30
_FIRST_FIELD_LEN = 0x0A  # protobuf tag: field 1, length-delimited (resource_spans / resource_logs)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the Collector's file exporter may compress each framed message


def detect(head: bytes) -> Detection:
    """Detect the format of a file from its first bytes (after decompression)."""
    if not head.strip():
        return Detection(None, "empty file")
    text = _as_text(head)
    if text is None:
        if _looks_like_proto(head):
            return Detection(Format.OTLP_PROTO)
        return Detection(None, "binary file that is not length-prefixed OTLP protobuf")
    stripped = text.lstrip()
    if _JSON_START.match(stripped):  # not `[  100.5] NVRM: …`, a raw dmesg line
        return _detect_json(stripped)
    lines = [line for line in text.splitlines()[:200] if line.strip()]
    if _is_exposition(lines):
        return Detection(Format.PROMETHEUS_TEXT)
    if looks_like_kernel_log(lines):
        return Detection(Format.KERNEL_LOG)
    return Detection(None, "text that is neither Prometheus exposition nor a kernel log")


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # a multi-byte character cut at the end of the head
            return head[: exc.start].decode("utf-8")
        return None


def _looks_like_proto(head: bytes) -> bool:
    if len(head) < 5:
        return False
    length = int.from_bytes(head[:4], "big")
    return 0 < length <= _PROTO_MAX_MESSAGE and (head[4] == _FIRST_FIELD_LEN or head[4:8] == _ZSTD_MAGIC)


def _detect_json(text: str) -> Detection:
    first_line = text.split("\n", 1)[0]
    try:
        document = json.loads(first_line)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        keys = set(document)
        for key, fmt, reason in _JSON_KEYS:
            if key in keys or (
                key == "resultType" and isinstance(document.get("data"), dict) and "resultType" in document["data"]
            ):
                return Detection(fmt, reason)
        if "status" in keys and ("data" in keys or "errorType" in keys):
            return Detection(Format.PROMETHEUS_QUERY_RANGE)  # an API answer; an error answer fails clearly
        if "record" in keys and "text" in keys:
            return Detection(Format.LOGURU_JSON)
        return Detection(None, f"JSON that is not telemetry (keys: {', '.join(sorted(keys)[:6])})")
    if isinstance(document, list) and document and isinstance(document[0], dict) and "metric" in document[0]:
        return Detection(Format.PROMETHEUS_QUERY_RANGE)  # a saved `result` list (prometheus-api-client's shape)
    # An incomplete first line (a long or truncated one, or a pretty-printed document): look for the keys.
    window = text[:4096]
    for key, fmt, reason in _JSON_KEYS:
        if f'"{key}"' in window:
            return Detection(fmt, reason)
    if '"record"' in window and '"text"' in window:
        return Detection(Format.LOGURU_JSON)
    if '"metric"' in window and ('"values"' in window or '"value"' in window):
        return Detection(Format.PROMETHEUS_QUERY_RANGE)
    return Detection(None, "JSON that is not telemetry")


def _is_exposition(lines: list[str]) -> bool:
    """Exposition text: `# HELP`/`# TYPE` lines, or a first non-comment line shaped like a sample."""
    for line in lines:
        if line.startswith(("# HELP ", "# TYPE ")):
            return True
        if line.startswith("#"):
            continue
        return _SAMPLE_LINE.match(line.strip()) is not None
    return False


__all__ = ["Detection", "Format", "detect"]
