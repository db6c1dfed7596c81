"""Times and durations as people write them: the one parser and formatter for the CLI, the API, scenarios and results.

Durations are one or more `<number><unit>` parts with units ms, s, m, h, d: `500ms`, `90s`, `2h`, `1.5h`,
`1h30m`, `2m30s`, `1h0m5s`. Times are RFC 3339 with an offset (`2026-03-02T09:50:00Z`, up to 9 fractional
digits), epoch seconds, or a duration back from now (`2h`). Results are written as RFC 3339 UTC.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import overload

from gpu_rca.schemas.errors import InputError, UsageError

_NS = 1_000_000_000
_UNIT_NS = {"ms": 1_000_000, "s": _NS, "m": 60 * _NS, "h": 3600 * _NS, "d": 86_400 * _NS}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")  # `ms` before `m`: `5ms` is milliseconds
_DURATION = re.compile(rf"(?:{_PART.pattern})+\s*")
_EPOCH = re.compile(r"\s*\d+(?:\.\d+)?\s*")
_LATEST_EPOCH_S = 253_402_300_799  # 9999-12-31T23:59:59Z, the last time RFC 3339 can write

DURATION_FORMS = "a duration like 30s, 2h or 1h30m"
TIME_FORMS = "RFC 3339, epoch seconds or a duration like 2h or 1h30m"


def is_duration(text: str) -> bool:
    """True when `text` is a duration (`2h`, `1h30m`), without parsing it."""
    return _DURATION.fullmatch(text) is not None


def parse_duration_ns(text: str, what: str = "duration") -> int:
    """`500ms`, `90s`, `15m`, `2h`, `1d`, `1h30m` as nanoseconds; UsageError naming `what` otherwise."""
    value = str(text)
    if not is_duration(value):
        raise UsageError(f"{what}: {text!r} is not {DURATION_FORMS}")
    return sum(int(float(number) * _UNIT_NS[unit]) for number, unit in _PART.findall(value))


def parse_rfc3339_ns(text: str, *, assume_utc: bool = False) -> int:
    """Unix ns from RFC 3339 (any offset, `Z` accepted, sub-µs digits dropped); InputError otherwise.

    `assume_utc` reads a time without an offset as UTC instead of refusing it (scenario files).
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Python's parser wants at most 6 fractional digits; Alertmanager and Go write up to 9.
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, tail = rest[:digits], rest[digits:]
        value = f"{head}.{(fraction + '000000')[:6]}{tail}"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"not an RFC 3339 time: {text!r}") from exc
    if moment.tzinfo is None:
        if not assume_utc:
            raise InputError(f"RFC 3339 time without a UTC offset: {text!r}")
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * _NS + moment.microsecond * 1000


def parse_time_ns(text: str | int | float, now_ns: int | None = None, what: str = "time") -> int:
    """RFC 3339 (`2026-03-02T09:50:00Z`), epoch seconds, or a duration back from now (`2h`, `1h30m`) as Unix ns."""
    if isinstance(text, (int, float)):
        return int(float(text) * 1e9)
    value = str(text)
    if _EPOCH.fullmatch(value):
        return _epoch_ns(value, what)
    if is_duration(value):
        return (time.time_ns() if now_ns is None else now_ns) - parse_duration_ns(value, what)
    return _instant_ns(value, what, TIME_FORMS)


def parse_instant_ns(text: str, what: str = "time") -> int:
    """RFC 3339 or epoch seconds (no duration back from now) as Unix ns; UsageError naming `what` otherwise."""
    if _EPOCH.fullmatch(text):
        return _epoch_ns(text, what)
    return _instant_ns(text, what, "RFC 3339 or epoch seconds")


def _epoch_ns(text: str, what: str) -> int:
    seconds = float(text)
    if seconds > _LATEST_EPOCH_S:
        raise UsageError(f"{what}: {text!r} is too far in the future for epoch seconds")
    return int(seconds * 1e9)


def _instant_ns(text: str, what: str, forms: str) -> int:
    try:
        return parse_rfc3339_ns(text)
    except InputError as exc:
        if "offset" in str(exc):
            raise UsageError(f"{what}: {text!r} has no time zone; add Z or an offset") from None
        raise UsageError(f"{what}: {text!r} is not {forms}") from None


@overload
def rfc3339(ns: int) -> str: ...
@overload
def rfc3339(ns: None) -> None: ...
@overload
def rfc3339(ns: int | None) -> str | None: ...
def rfc3339(ns: int | None) -> str | None:
    """Unix ns as RFC 3339 UTC (`2026-03-02T09:50:00Z`, milliseconds only when not whole seconds)."""
    if ns is None:
        return None
    seconds, rest = divmod(int(ns), _NS)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    millis = rest // 1_000_000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def short_utc(ts_ns: int) -> str:
    """A compact UTC time for people: `2026-03-02 10:04:31 UTC`."""
    return datetime.fromtimestamp(ts_ns / _NS, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = [
    "DURATION_FORMS",
    "TIME_FORMS",
    "is_duration",
    "parse_duration_ns",
    "parse_instant_ns",
    "parse_rfc3339_ns",
    "parse_time_ns",
    "rfc3339",
    "short_utc",
]
