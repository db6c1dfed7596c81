"""Time on the command line and in results: RFC 3339, epoch seconds, or a duration back from now."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from gpu_rca.schemas.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}


def parse_duration_ns(text: str) -> int:
    """`15m`, `90s`, `2h`, `500ms`, `1d` as nanoseconds; UsageError otherwise."""
    match = _DURATION.match(str(text))
    if match is None:
        raise UsageError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 15m, 2h, 1d)")
    return int(float(match[1]) * _UNIT_NS[match[2]])


def parse_time_ns(text: str | int | float, now_ns: int | None = None) -> int:
    """RFC 3339 (`2026-03-02T09:50:00Z`), epoch seconds, or a duration back from now (`2h`) as Unix ns."""
    if isinstance(text, (int, float)):
        return int(float(text) * 1e9)
    value = str(text).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return int(float(value) * 1e9)
    if _DURATION.match(value):
        now = time.time_ns() if now_ns is None else now_ns
        return now - parse_duration_ns(value)
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"not a time: {text!r} (use RFC 3339 like 2026-03-02T09:50:00Z, epoch seconds, or a duration like 2h)"
        ) from exc
    if parsed.tzinfo is None:
        raise UsageError(f"time {text!r} has no timezone; add Z or an offset")
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def rfc3339(ns: int | None) -> str | None:
    """Unix ns as RFC 3339 UTC (`2026-03-02T09:50:00Z`, milliseconds only when not whole seconds)."""
    if ns is None:
        return None
    seconds, rest = divmod(int(ns), 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    millis = rest // 1_000_000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"
