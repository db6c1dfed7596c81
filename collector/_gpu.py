"""Resolving `gpu=` to an NVML device: by UUID, PCI bus id as fallback, never by position (docs/contracts.md §1).

A CUDA ordinal counts the devices CUDA sees: `CUDA_VISIBLE_DEVICES` (indexes or `GPU-`/`MIG-` UUIDs, which
may be abbreviated to a unique prefix; CUDA stops at the first invalid entry), with integer entries taken
in PCI bus order (`CUDA_DEVICE_ORDER=PCI_BUS_ID`, which equals CUDA's default order on a fleet of one GPU
model). A `torch.device` is read through `.type`/`.index`; torch is never imported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from gpu_rca.collector._nvml import DeviceInfo
from gpu_rca.schemas.pci import normalize_pci_bus_id


@dataclass(frozen=True, slots=True)
class Target:
    """The NVML device that serves a span, and its MIG instance when `gpu=` named a slice."""

    index: int
    mig_instance_id: int | None = None


def _pci(value: str) -> str | None:
    try:
        return normalize_pci_bus_id(value)
    except ValueError:
        return None


class GpuResolver:
    """Maps what the caller calls a GPU to a :class:`Target` over one process's visible devices."""

    def __init__(self, devices: tuple[DeviceInfo, ...], cuda_visible_devices: str | None) -> None:
        self.devices = devices
        self._by_pci = {_pci(d.pci_bus_id): d for d in devices if d.pci_bus_id}
        self._pci_order = [d for _, d in sorted((p, d) for p, d in self._by_pci.items() if p is not None)] or list(
            devices
        )
        self.visible = self._visible(cuda_visible_devices)
        self._cache: dict[Any, Target | None] = {}

    def _by_uuid(self, value: str) -> Target | None:
        matches = []
        for d in self.devices:
            if d.uuid.startswith(value):
                matches.append(Target(d.index))
            matches.extend(Target(d.index, m.instance_id) for m in d.mig if m.uuid.startswith(value))
        return matches[0] if len(matches) == 1 else None

    def _visible(self, env: str | None) -> list[Target]:
        if env is None:
            return [Target(d.index) for d in self._pci_order]
        visible: list[Target] = []
        for entry in (e.strip() for e in env.split(",")):
            if entry.isdigit() and int(entry) < len(self._pci_order):
                target: Target | None = Target(self._pci_order[int(entry)].index)
            elif entry.startswith(("GPU-", "MIG-")):
                target = self._by_uuid(entry)
            else:
                target = None
            if target is None or target in visible:
                break  # CUDA ignores the first invalid entry and everything after it
            visible.append(target)
        return visible

    def _ordinal(self, ordinal: int) -> Target | None:
        return self.visible[ordinal] if 0 <= ordinal < len(self.visible) else None

    def resolve(self, gpu: Any) -> Target | None:
        """The target for `gpu=`, or None when it names no visible GPU (then the span has no telemetry)."""
        if gpu is None or isinstance(gpu, bool):
            return None
        if isinstance(gpu, (int, str)):
            try:
                return self._cache[gpu]
            except KeyError:
                target = self._cache[gpu] = self._resolve(gpu)
                return target
        device_type = getattr(gpu, "type", None)
        if device_type is not None and hasattr(gpu, "index"):  # torch.device
            if device_type != "cuda":
                return None
            index = gpu.index
            return self._ordinal(_current_cuda_device() if index is None else int(index))
        return None

    def _resolve(self, gpu: int | str) -> Target | None:
        if isinstance(gpu, int):
            return self._ordinal(gpu)
        value = gpu.strip()
        if value.startswith(("GPU-", "MIG-")):
            return self._by_uuid(value)
        if value == "cuda":
            return self._ordinal(_current_cuda_device())
        if value.startswith("cuda:") and value[5:].isdigit():
            return self._ordinal(int(value[5:]))
        if value.isdigit():
            return self._ordinal(int(value))
        pci = _pci(value)
        device = self._by_pci.get(pci) if pci else None
        return Target(device.index) if device is not None else None


def _current_cuda_device() -> int:
    """torch's current device where the application already imported torch; 0 otherwise."""
    torch = sys.modules.get("torch")
    try:
        return int(torch.cuda.current_device()) if torch is not None and torch.cuda.is_initialized() else 0
    except Exception:
        return 0
