"""The collector's own health: counters of what it sampled, dropped and failed at, and log-once.

Telemetry never breaks the request: every failure inside the instrumentation is counted here and
logged once per kind, never raised. The exporter publishes these counters.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

_log = logging.getLogger("gpu_rca.collector")


class Health:
    """Thread-safe counters keyed by (counter, reason), plus a log-once memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._logged: set[str] = set()

    def count(self, counter: str, reason: str, n: int = 1) -> None:
        """Add `n` to `counter{reason=...}`."""
        with self._lock:
            self._counts[(counter, reason)] += n

    def failure(
        self, counter: str, reason: str, message: str, exc: BaseException | None = None, level: int = logging.WARNING
    ) -> None:
        """Count a failure and log it (at `level`) the first time this (counter, reason) is seen."""
        key = f"{counter}:{reason}"
        with self._lock:
            self._counts[(counter, reason)] += 1
            first = key not in self._logged
            self._logged.add(key)
        if first:
            detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
            _log.log(level, "gpu-rca collector: %s%s (logged once; counted in %s)", message, detail, counter)

    def snapshot(self) -> dict[tuple[str, str], int]:
        """A copy of every counter, for the exporter and tests."""
        with self._lock:
            return dict(self._counts)

    def total(self, counter: str) -> int:
        """Sum of `counter` over its reasons."""
        with self._lock:
            return sum(n for (name, _), n in self._counts.items() if name == counter)
