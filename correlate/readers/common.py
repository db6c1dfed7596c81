"""What every format reader shares: the options of one ingest run and the tally of one file."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from gpu_rca.correlate.readers.opening import DEFAULT_MAX_BYTES
from gpu_rca.correlate.store.records import MAX_ERRORS, IngestResult


@dataclass(frozen=True)
class IngestOptions:
    """Settings for reading files: kernel-log context (host, boot time, zone) and the decompression cap."""

    host: str | None = None
    boot_time: datetime | None = None
    tz: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    #: A JSON-lines file whose last line is cut off fails (stores nothing) instead of storing its complete lines.
    strict: bool = False


@dataclass
class FileCounts:
    """What one file held: rows `accepted` (of which `stored` new), `rejected` rows, and skipped items by reason."""

    kind: str = ""  # what the rows are: spans, logs, samples, kernel events
    accepted: int = 0
    stored: int = 0
    rejected: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    #: Traces (judged at their root span) that hold no inference span.
    traces_without_inference: int = 0
    #: What the reader stored but the user should know (a cut last line, events no GPU could be found for).
    warnings: list[str] = field(default_factory=list)

    def add(self, result: IngestResult) -> None:
        """Count one store call's result; its error lines become notes (a few, not thousands)."""
        self.accepted += result.accepted
        self.stored += result.stored
        self.rejected += result.rejected
        self.traces_without_inference += result.traces_without_inference
        for error in result.errors:
            if len(self.notes) < MAX_ERRORS:
                self.notes.append(error)


__all__ = ["FileCounts", "IngestOptions"]
