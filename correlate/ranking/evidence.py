"""Evidence items and the numbers a summary quotes: every number in a summary comes from one of them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from gpu_rca.correlate.ranking.stats import tidy
from gpu_rca.schemas.results import Evidence
from gpu_rca.schemas.timefmt import rfc3339

GIB = 1024**3


def short_uuid(uuid: str | None) -> str:
    """A GPU UUID shortened for prose (`GPU-3f2a…`); the full one is in `gpus` and the evidence."""
    if not uuid:
        return "an unidentified GPU"
    return uuid if len(uuid) <= 12 else uuid[:12] + "…"


@dataclass
class EvidenceList:
    """Evidence collected for one hypothesis; `add` returns the tidied value for use in the summary."""

    items: list[Evidence] = field(default_factory=list)

    def add(
        self,
        kind: str,
        name: str,
        value: float | int | str,
        *,
        baseline: float | int | None = None,
        unit: str | None = None,
        gpu_uuid: str | None = None,
        host: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> float | int | str:
        """Record one observation; numbers are rounded once, here, as the summary will print them."""
        shown = value if isinstance(value, str) else tidy(value)
        self.items.append(
            {
                "kind": kind,
                "name": name,
                "gpu_uuid": gpu_uuid,
                "host": host,
                "value": shown if shown is not None else "n/a",
                "baseline": tidy(baseline),
                "unit": unit,
                "start": rfc3339(start_ns),
                "end": rfc3339(end_ns),
            }
        )
        return shown if shown is not None else "n/a"

    def base(self, index: int = -1) -> float | int | None:
        """The baseline of an item already added (default: the last)."""
        value = self.items[index]["baseline"]
        return value if isinstance(value, (int, float)) else None

    def extend(self, other: EvidenceList) -> None:
        """Append another list's items."""
        self.items.extend(other.items)


def pct(share: float) -> float:
    """A share 0..1 as a percentage rounded for people."""
    return round(100.0 * share, 1)


@overload
def gib(n_bytes: float) -> float: ...
@overload
def gib(n_bytes: None) -> None: ...
def gib(n_bytes: float | None) -> float | None:
    """Bytes as GiB with two decimals."""
    return None if n_bytes is None else round(n_bytes / GIB, 2)


_NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?![\w\-])")


def summary_numbers(summary: str) -> list[float]:
    """The standalone numbers in a summary (identifiers such as `GPU-3f2a…` or `node-1` are not numbers)."""
    return [float(n) for n in _NUMBER.findall(summary)]


def numbers_missing_from_evidence(cause: Mapping[str, Any]) -> list[float]:
    """Numbers a cause's summary quotes that none of its evidence values or baselines hold (should be none)."""
    shown = {
        float(number)
        for item in cause["evidence"]
        for number in (item["value"], item["baseline"])
        if isinstance(number, (int, float)) and not isinstance(number, bool)
    }
    # An `attribute=value` the summary quotes is an identifier when it is the name of an evidence item.
    text = cause["summary"]
    for item in cause["evidence"]:
        if "=" in item["name"]:
            text = text.replace(item["name"], " ")
    return [n for n in summary_numbers(text) if not any(math.isclose(n, s, abs_tol=1e-9) for s in shown)]
