"""Records the store ingests besides OTLP requests, and what an ingest call returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

# One kernel-event record type for the whole correlator: the kernel-log parser's.
from gpu_rca.correlate.kernel_log.parse import KernelEvent

#: Who named a GPU's host, weakest first: a metric label may be an exporter pod's name, a span's
#: `host.name` is the inference host itself.
HOST_SOURCES: tuple[str, ...] = ("metric", "kernel", "span")


@dataclass(frozen=True)
class IngestResult:
    """What one ingest call did: valid rows `accepted` (of which `stored` were new), invalid ones `rejected`."""

    accepted: int = 0
    rejected: int = 0
    stored: int = 0
    errors: tuple[str, ...] = ()
    #: Traces whose root span arrived and none of whose spans (here or stored) is an inference span.
    traces_without_inference: int = 0

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            self.accepted + other.accepted,
            self.rejected + other.rejected,
            self.stored + other.stored,
            (self.errors + other.errors)[:MAX_ERRORS],
            self.traces_without_inference + other.traces_without_inference,
        )


#: Error messages kept per result; counts stay exact beyond it.
MAX_ERRORS = 20


def traces_without_inference_message(count: int) -> str:
    """What ingest and serve say about traces that hold no inference span."""
    has = "trace has" if count == 1 else "traces have"
    return (
        f"{count} {has} no inference span: instrument with gpu_rca.collector or set the attribute gpu.telemetry.source"
    )


@dataclass(frozen=True)
class MetricSample:
    """One metric value of one GPU at one time, in the canonical metric's unit.

    Without `gpu_uuid` the store looks the GPU up in its inventory by (`host`, `pci_bus_id`) then
    (`host`, `gpu_index`); a sample it cannot place is rejected.
    """

    ts_ns: int
    metric: str
    value: float
    gpu_uuid: str | None = None
    host: str | None = None
    pci_bus_id: str | None = None
    gpu_index: int | None = None
    source: str = "prometheus"


@dataclass(frozen=True)
class PodRecord:
    """dcgm-exporter's labels saying that a pod held a GPU, from the first to the last sample that said so."""

    gpu_uuid: str
    namespace: str
    pod: str
    container: str
    host: str | None
    first_ns: int
    last_ns: int


@dataclass(frozen=True)
class GpuRecord:
    """What one source knows about a GPU; the store merges records into `gpus` (None never overwrites)."""

    gpu_uuid: str
    host: str | None = None
    gpu_index: int | None = None
    pci_bus_id: str | None = None
    name: str | None = None
    memory_total_bytes: int | None = None
    slowdown_temp_c: int | None = None
    host_source: str = "metric"


@dataclass(frozen=True)
class LogRecord:
    """One log line (OTLP log record or a loguru JSON line)."""

    ts_ns: int
    body: str
    severity: str | None = None
    severity_number: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    service: str | None = None
    host: str | None = None
    source: str = "otlp"
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def log_id(self) -> str:
        """Idempotency key: logs have no natural one, so hash what makes a line itself."""
        return stable_id(self.ts_ns, self.trace_id, self.span_id, self.service, self.host, self.body)


def kernel_event_id(event: KernelEvent) -> str:
    """Idempotency key of a kernel event: the same line ingested twice (a re-read dmesg) is stored once."""
    return stable_id(event.ts_ns, event.host, event.pci_bus_id, event.xid, event.message)


def stable_id(*parts: object) -> str:
    """32 hex chars of BLAKE2b over the parts (None and "" differ), stable across processes and versions."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(b"\x00" if part is None else b"\x01" + str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()


__all__ = [
    "HOST_SOURCES",
    "MAX_ERRORS",
    "GpuRecord",
    "IngestResult",
    "KernelEvent",
    "LogRecord",
    "MetricSample",
    "PodRecord",
    "kernel_event_id",
    "stable_id",
]
