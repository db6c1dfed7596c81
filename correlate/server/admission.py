"""Admission of trace and log requests before their bodies are read: refused at once (503 + Retry-After) while
the ingest log is full or cannot write, while the loader is further behind than `--max-lag`, or while
`--queue-size` requests, their bodies read, are already being checked and logged.

A refusal costs only the request's headers: the body is never read (the connection is closed after the
answer), so a sender that backs off is told within milliseconds, whatever the load, and the server spends
nothing on a request it cannot keep.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from gpu_rca.correlate.server.loader import Loader
from gpu_rca.correlate.server.wal import IngestLog


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused before its body is read; `reason` labels the counter."""

    reason: str  # "log_full" | "log_unavailable" | "lag" | "busy"
    message: str


class Admission:
    """Decides, from the request's headers alone, whether a trace or log request is read at all."""

    def __init__(
        self,
        ingest_log: IngestLog,
        loader: Loader,
        *,
        max_in_flight: int,
        max_lag_s: float | None,
        retry_after_s: float = 1.0,
    ) -> None:
        self.log = ingest_log
        self.loader = loader
        self.retry_after_s = retry_after_s
        self.max_in_flight = max_in_flight
        self.max_lag_s = max_lag_s
        self.in_flight = 0  # changed on the event loop only

    def refusal(self, content_length: str | None) -> Refusal | None:
        """Why a request declaring `content_length` bytes is refused now, or None to read it."""
        log = self.log
        # For Retry-After after a failed write; then requests are read again, and the next write tells.
        if log.failure is not None and time.monotonic() - log.failed_at < self.retry_after_s:
            return Refusal("log_unavailable", f"{log.failure}; retry later")
        declared = int(content_length) if content_length is not None and content_length.isdigit() else 0
        if log.free_bytes <= declared:
            return Refusal(
                "log_full",
                f"ingest log full ({log.max_bytes - log.free_bytes} of {log.max_bytes} bytes waiting "
                "for the store); retry later",
            )
        if self.max_lag_s is not None and (lag := self.loader.lag_s) > self.max_lag_s:
            return Refusal("lag", f"the store is {lag:.1f} s behind the ingest log (over --max-lag); retry later")
        if self.in_flight >= self.max_in_flight:
            return Refusal("busy", f"{self.in_flight} requests are being received already; retry later")
        return None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Count one request as in flight while it is checked and logged (its body read)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


__all__ = ["Admission", "Refusal"]
