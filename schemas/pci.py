"""PCI bus id normalisation (docs/contracts.md §2): lowercase `dddd:bb:dd.f` everywhere."""

from __future__ import annotations

import functools
import re

_PCI = re.compile(
    r"^(?:PCI:)?(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<device>[0-9a-fA-F]{1,2})"
    r"(?:\.(?P<function>[0-7]))?$"
)


def normalize_pci_bus_id(value: str) -> str:
    """Return `value` as lowercase `dddd:bb:dd.f`.

    Accepts NVML's `00000000:3B:00.0`, the kernel log's `PCI:0000:3b:00` (function 0 implied) and
    `3b:00.0`. Raises ValueError for anything else.
    """
    match = _PCI.match(value.strip())
    if match is None:
        raise ValueError(f"not a PCI bus id: {value!r}")
    domain = int(match["domain"] or "0", 16)
    if domain > 0xFFFF:
        raise ValueError(f"PCI domain out of range in {value!r}")
    bus = int(match["bus"], 16)
    device = int(match["device"], 16)
    function = int(match["function"] or "0")
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function}"


@functools.lru_cache(maxsize=4096)
def normalize_pci_bus_id_or_keep(value: str) -> str:
    """`normalize_pci_bus_id(value)`, or `value` as it came when it is no PCI bus id (a stamp or label is
    never dropped for its spelling). Cached: every span and sample of a GPU repeats the same few values."""
    try:
        return normalize_pci_bus_id(value)
    except ValueError:
        return value
