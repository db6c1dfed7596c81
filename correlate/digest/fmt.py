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


def number(value: Any, unit: str | None = None) -> str:
    """An evidence value with its unit; floats to 3 significant digits, ints with thousands separators."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, int) or float(value).is_integer():
        text = f"{int(value):,}"
    else:
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}" if unit and unit not in ("1", "") else text


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


def short_id(value: str | None, keep: int = 16) -> str:
    """A long id (GPU UUID, trace id) cut for tables; the full id stays in links and JSON."""
    if not value:
        return "–"
    return value if len(value) <= keep else value[:keep] + "…"
