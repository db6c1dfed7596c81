"""gpu-rca correlator: store, ingest, ranking, digest, server."""

from __future__ import annotations

from gpu_rca.correlate.ranking.api import analyze
from gpu_rca.correlate.store import Store, default_db_path
from gpu_rca.correlate.store.records import GpuRecord, IngestResult, KernelEvent, LogRecord, MetricSample

__all__ = [
    "GpuRecord",
    "IngestResult",
    "KernelEvent",
    "LogRecord",
    "MetricSample",
    "Store",
    "analyze",
    "default_db_path",
]
