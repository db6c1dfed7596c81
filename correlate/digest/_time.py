"""Time conversions the digest needs: Unix nanoseconds and RFC 3339 UTC strings."""

from __future__ import annotations

from datetime import UTC, datetime

from gpu_rca.correlate.ranking.timefmt import rfc3339 as ranking_rfc3339
from gpu_rca.schemas.errors import InputError

_NS = 1_000_000_000


def rfc3339(ts_ns: int) -> str:
    """RFC 3339 UTC exactly as the analysis writes it (`2026-03-02T10:00:00Z`, milliseconds when not whole)."""
    return ranking_rfc3339(int(ts_ns)) or ""


def parse_rfc3339(text: str) -> int:
    """Unix nanoseconds from an RFC 3339 string (any offset; `Z` accepted; sub-µs digits dropped)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Python's parser takes at most 6 fractional digits; Alertmanager and Go write up to 9.
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
        raise InputError(f"RFC 3339 time without a UTC offset: {text!r}")
    return int(moment.timestamp()) * _NS + moment.microsecond * 1000


def short_utc(ts_ns: int) -> str:
    """A compact UTC time for people: `2026-03-02 10:04:31 UTC`."""
    return datetime.fromtimestamp(ts_ns / _NS, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
