"""The OTel SDK internals the collector writes for speed (`_spans.set_clean_attributes`), checked against the
installed opentelemetry-sdk: a new SDK that renames or retypes one fails here, by name, instead of silently
sending every stamp down the slow public path (or writing where the SDK no longer reads)."""

from __future__ import annotations

import threading
from importlib.metadata import version
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider

from gpu_rca.collector._spans import set_clean_attributes

SDK = version("opentelemetry-sdk")
_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


def _changed(field: str, found: Any) -> str:
    return (
        f"opentelemetry-sdk {SDK} changed Span internals the collector writes: {field} (now {found!r}); "
        "re-measure and update collector/_spans.py set_clean_attributes (and the pin in pyproject.toml)"
    )


def _check(holder: object, field: str, expected: type | tuple[type, ...], where: str) -> Any:
    value = getattr(holder, field, AttributeError)
    assert value is not AttributeError, _changed(f"{where}.{field}", "missing")
    assert isinstance(value, expected), _changed(f"{where}.{field}", type(value).__name__)
    return value


def test_the_span_fields_set_clean_attributes_writes_are_there_with_their_kinds() -> None:
    span = TracerProvider().get_tracer("internals").start_span("probe")
    assert isinstance(span, Span) and isinstance(span, ReadableSpan), _changed("Span", type(span).__name__)
    bounded = _check(span, "_attributes", BoundedAttributes, "Span")
    _check(span, "_lock", (_LOCK, _RLOCK), "Span")
    assert _check(span, "_end_time", (type(None), int), "Span") is None, _changed("Span._end_time", "set at start")
    _check(bounded, "_dict", dict, "BoundedAttributes")
    assert _check(bounded, "_immutable", bool, "BoundedAttributes") is False, _changed("_immutable", True)
    _check(bounded, "_lock", (_LOCK, _RLOCK), "BoundedAttributes")
    _check(bounded, "max_value_len", (type(None), int), "BoundedAttributes")
    _check(bounded, "maxlen", (type(None), int), "BoundedAttributes")
    span.end()
    assert isinstance(span._end_time, int), _changed("Span._end_time", type(span._end_time).__name__)


def test_what_the_fast_path_writes_is_what_the_sdk_reads() -> None:
    span = TracerProvider().get_tracer("internals").start_span("probe")
    stamps = {"gpu.uuid": "GPU-1", "gpu.temperature.max": 83, "gpu.throttle_reasons": ("hw_slowdown",)}
    set_clean_attributes(span, stamps)
    assert span._attributes._dict == stamps, _changed("BoundedAttributes._dict", "not where the stamps went")
    span.end()
    assert dict(span.attributes or {}) == stamps, _changed("Span.attributes", "does not read BoundedAttributes._dict")
    set_clean_attributes(span, {"late": 1})  # after end: the SDK's own path, which refuses it
    assert "late" not in (span.attributes or {})
