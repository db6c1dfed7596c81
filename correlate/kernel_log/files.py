"""Kernel logs (dmesg, journalctl, syslog) -> XID events and PCI -> UUID pairs, through `correlate.kernel_log.parse`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from gpu_rca.correlate.kernel_log.parse import KernelEvent, parse_kernel_log
from gpu_rca.correlate.readers.common import FileCounts, IngestOptions
from gpu_rca.correlate.readers.opening import Opened
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.records import GpuRecord, kernel_event_id
from gpu_rca.schemas import store as s


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
    counts.skipped.update(result.ignored)
    counts.warnings.extend(unplaced_warnings(store, [e for e in result.events if e.host is None]))
    return counts


def unplaced_warnings(store: Store, hostless: list[KernelEvent]) -> list[str]:
    """One warning per bus id of host-less events (dmesg -T, journal lines without a host) that the store
    could not join to exactly one known GPU: they are stored, but no GPU or host is known for them."""
    if not hostless:
        return []
    rows = store.connection.execute(
        f"""SELECT k.pci_bus_id, count(*),
                   (SELECT count(*) FROM {s.GPUS} g WHERE g.pci_bus_id = k.pci_bus_id) AS gpus
            FROM {s.KERNEL_EVENTS} k
            WHERE k.gpu_uuid IS NULL AND k.event_id IN (SELECT unnest(?))
            GROUP BY k.pci_bus_id ORDER BY k.pci_bus_id""",
        [sorted({kernel_event_id(e) for e in hostless})],
    ).fetchall()
    warnings = []
    for pci, events, known in rows:
        which = "no known GPU" if known == 0 else f"{known} known GPUs (one per host)"
        warnings.append(
            f"{events} XID event(s) on PCI {pci} name no host and that bus id matches {which}: "
            "stored without a GPU; pass --host NAME to place them"
        )
    return warnings


__all__ = ["read_kernel_log"]
