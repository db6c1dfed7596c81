"""OTLP JSON encoding (the files of docs/contracts.md §3): protobuf messages <-> JSON lines with hex ids.

OTLP/JSON differs from proto3's JSON mapping: trace and span ids are lowercase hex, not base64, and
enums are integers. Protobuf's own JSON parser would read hex ids as base64, so ids are converted here
before parsing. protobuf is imported lazily: the collector's import stays light.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gpu_rca.schemas.errors import InputError

#: JSON keys whose values are ids: hex in OTLP/JSON, bytes (base64) in proto3 JSON.
ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})

if TYPE_CHECKING:
    from google.protobuf.message import Message

M = TypeVar("M", bound="Message")


def message_to_dict(message: Any) -> dict[str, Any]:
    """A protobuf message (ExportTraceServiceRequest, ExportLogsServiceRequest, …) as an OTLP/JSON dict."""
    from google.protobuf import json_format

    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    _walk(data, _base64_to_hex)
    return data


def message_to_json(message: Any) -> str:
    """One OTLP/JSON line (compact, no newline), as the OTel Collector's file exporter writes it."""
    return json.dumps(message_to_dict(message), separators=(",", ":"), allow_nan=False)


def message_from_dict(data: dict[str, Any], message_cls: type[M]) -> M:
    """Parse an OTLP/JSON dict into `message_cls`; unknown fields are ignored as the OTLP spec asks."""
    from google.protobuf import json_format

    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object for {message_cls.__name__}, got {type(data).__name__}")
    converted = _copy(data)
    _walk(converted, _hex_to_base64)
    try:
        return json_format.ParseDict(converted, message_cls(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InputError(f"not a valid {message_cls.__name__}: {exc}") from exc


def message_from_json(text: str | bytes, message_cls: type[M]) -> M:
    """Parse one OTLP/JSON document into `message_cls`."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON: {exc}") from exc
    return message_from_dict(data, message_cls)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _walk(value: Any, convert: Callable[[str, str], str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ID_KEYS and isinstance(item, str):
                value[key] = convert(item, key)
            else:
                _walk(item, convert)
    elif isinstance(value, list):
        for item in value:
            _walk(item, convert)


def _base64_to_hex(text: str, key: str) -> str:
    return base64.b64decode(text).hex()


def _hex_to_base64(text: str, key: str) -> str:
    if text == "":
        return text
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise InputError(f"{key} is not hex: {text[:40]!r}") from exc
    # An id of the wrong length is kept as it is: the span or record holding it is rejected alone, as the
    # same id in protobuf is (partial success), not the whole request.
    return base64.b64encode(raw).decode("ascii")


__all__ = ["ID_KEYS", "message_from_dict", "message_from_json", "message_to_dict", "message_to_json"]
