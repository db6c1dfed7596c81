"""Kernel logs (dmesg, journalctl, syslog) -> XID events and PCI -> UUID pairs, through `correlate.kernel_log.parse`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from gpu_rca.correlate.kernel_log.parse import parse_kernel_log
from gpu_rca.correlate.readers.common import FileCounts, IngestOptions
from gpu_rca.correlate.readers.opening import Opened
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.records import GpuRecord


def _lines(opened: Opened) -> Iterator[str]:
    # Kernel logs may hold stray bytes from other drivers; they must not cost the NVRM lines around them.
    for raw in opened.stream:
        yield raw.decode("utf-8", errors="replace")


def read_kernel_log(opened: Opened, store: Store, options: IngestOptions) -> FileCounts:
    """Store the XID events of a kernel log; lines without a usable time are counted as skipped."""
    counts = FileCounts(kind="kernel events")
    modified = datetime.fromtimestamp(opened.path.stat().st_mtime, tz=UTC)
    result = parse_kernel_log(
        _lines(opened), host=options.host, reference_time=modified, tz=options.tz, boot_time=options.boot_time
    )
    gpus = [GpuRecord(g.gpu_uuid, host=g.host, pci_bus_id=g.pci_bus_id, host_source="kernel") for g in result.gpus]
    store.upsert_gpus(gpus)
    counts.add(store.ingest_kernel_events(result.events))
    counts.skipped.update(result.skipped)
    return counts


__all__ = ["read_kernel_log"]
