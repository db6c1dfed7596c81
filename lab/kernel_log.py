"""Kernel log lines for simulated XIDs, as the NVIDIA driver prints them and `journalctl -o short-iso` shows them.

The driver prints `NVRM: GPU at PCI:…: GPU-<uuid>` and the board serial before a GPU's first XID in a
burst, then `NVRM: Xid (PCI:DDDD:BB:DD): NN, pid=…, name=…, <message>` (NVIDIA's Xid catalog,
https://docs.nvidia.com/deploy/xid-errors/index.html; messages modelled on lines users have published).
"""

from __future__ import annotations

import datetime as dt
import random

from gpu_rca.lab.device import SimGpu, XidRecord

#: XID code -> message text in the driver's style (fields that vary are filled from a seeded RNG).
_MESSAGES = {
    13: "Graphics SM Warp Exception on (GPC {gpc}, TPC {tpc}, SM 0): Out Of Range Address",
    31: "Ch 000000{ch:02x}, intr 00000000. MMU Fault: ENGINE GRAPHICS GPC{gpc} GPCCLIENT_T1_{tpc} faulted @ "
    "0x7f{addr:02x}_c0000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ",
    43: "Ch 000000{ch:02x}",
    45: "Ch 000000{ch:02x}",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition {gpc}, "
    "subpartition {tpc}.",
    63: "Row Remapper: New row (0x00000000000{addr:02x}3c0) was marked for remapping, reset gpu to activate.",
    64: "Row Remapper Error: Failed to remap row (0x00000000000{addr:02x}3c0) for ECC error.",
    79: "GPU has fallen off the bus.",
    92: "High single-bit ECC error rate detected.",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    95: "Uncontained: FBHUB. RST: Yes, D-RST: No",
}


def xid_message(code: int, rng: random.Random) -> str:
    """The driver's text after `NN, pid=…, name=…, ` for one XID."""
    template = _MESSAGES.get(code, "Ch 000000{ch:02x}")
    return template.format(gpc=rng.randrange(8), tpc=rng.randrange(9), ch=rng.randrange(1, 64), addr=rng.randrange(256))


def short_iso(ts_ns: int) -> str:
    """journalctl's short-iso timestamp in UTC (`2025-01-06T09:41:12+0000`)."""
    moment = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S%z")


def board_serial(gpu: SimGpu) -> str:
    """A stable 13-digit board serial for a GPU."""
    return str(1650000000000 + int(gpu.uuid[4:12], 16) % 999999999)


def kernel_lines(gpu: SimGpu, record: XidRecord, skew_ns: int, announce: bool) -> list[tuple[int, str]]:
    """(timestamp, line) pairs for one XID on `gpu`; `announce` adds the GPU-at and serial lines first."""
    ts_ns = record.ts_ns + skew_ns
    prefix = f"{short_iso(ts_ns)} {gpu.host} kernel: "
    pci = f"PCI:{gpu.pci_bus_id[4:14].lower()}"  # PCI:0000:3b:00
    lines = []
    if announce:
        lines.append((ts_ns, f"{prefix}NVRM: GPU at {pci}: {gpu.uuid}"))
        lines.append((ts_ns, f"{prefix}NVRM: GPU Board Serial Number: {board_serial(gpu)}"))
    who = f"pid={record.pid}, name={record.process}" if record.pid is not None else "pid='<unknown>', name=<unknown>"
    lines.append((ts_ns, f"{prefix}NVRM: Xid ({pci}): {record.code}, {who}, {record.message}"))
    return lines


__all__ = ["board_serial", "kernel_lines", "short_iso", "xid_message"]
