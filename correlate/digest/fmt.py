"""Number and value formatting shared by the Markdown and HTML renderers (one place, same output)."""

from __future__ import annotations

from typing import Any


def share(value: float | None) -> str:
    """A 0..1 share as a percentage: `23.4 %`."""
    return "–" if value is None else f"{100 * float(value):.1f} %"


def pvalue(value: float | None) -> str:
    """A p-value people can compare at a glance: `3e-12`, `0.04`."""
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.0e}" if 0 < value < 1e-3 else ("0" if value == 0 else f"{value:.3f}")


#: OpenTelemetry's UCUM units as people write them; bytes are shown in GiB (one spelling per quantity).
_UNITS = {"Cel": "°C", "By": "GiB", "MiBy": "GiB", "W": "W", "MHz": "MHz", "ms": "ms", "s": "s", "%": "%"}
_TO_GIB = {"By": 1 / 2**30, "MiBy": 1 / 1024}


def text(value: Any) -> str:
    """A value as text: lists and tuples comma-separated (never a Python repr), None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(text(v) for v in value) or "–"
    return str(value)


def number(value: Any, unit: str | None = None) -> str:
    """A value with its unit in human terms (bytes in GiB, Cel as °C); 3 significant digits, thousands separated."""
    if value is None:
        return "–"
    if unit in _TO_GIB and isinstance(value, int | float) and not isinstance(value, bool):
        value = value * _TO_GIB[unit]
    unit = _UNITS.get(unit, unit) if unit else unit
    if isinstance(value, bool) or not isinstance(value, int | float):
        text_ = text(value)
        return f"{text_} {unit}" if unit and unit not in ("1", "") else text_
    if isinstance(value, int) or float(value).is_integer():
        shown = f"{int(value):,}"
    else:
        shown = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{shown} {unit}" if unit and unit not in ("1", "") else shown


def score(value: float | None) -> str:
    """A 0..1 ranking score: `0.91`."""
    return "–" if value is None else f"{float(value):.2f}"


def time_of(rfc3339: str | None) -> str:
    """`2026-03-02T10:04:31.000Z` -> `10:04:31` (the digest's header says the day and zone)."""
    if not rfc3339:
        return "–"
    return rfc3339[11:19] if len(rfc3339) >= 19 else rfc3339


def day_time(rfc3339: str | None) -> str:
    """`2026-03-02T10:04:31.000Z` -> `2026-03-02 10:04:31 UTC`."""
    if not rfc3339:
        return "–"
    return f"{rfc3339[:10]} {rfc3339[11:19]} UTC" if len(rfc3339) >= 19 else rfc3339


def window(start: str | None, end: str | None) -> str:
    """An incident's time span: `2026-03-02 09:45–10:12 UTC`, or both days when it crosses midnight."""
    if not start or not end or len(start) < 16 or len(end) < 16:
        return f"{day_time(start)} – {day_time(end)}"
    if start[:10] == end[:10]:
        return f"{start[:10]} {start[11:16]}–{end[11:16]} UTC"
    return f"{start[:10]} {start[11:16]} – {end[:10]} {end[11:16]} UTC"


def short_id(value: str | None, keep: int = 16) -> str:
    """A long id (GPU UUID, trace id) cut for tables; the full id stays in links and JSON."""
    if not value:
        return "–"
    return value if len(value) <= keep else value[:keep] + "…"
