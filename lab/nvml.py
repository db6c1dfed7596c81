"""A pynvml-compatible view of one simulated host: pynvml's names, constants, shapes, units and errors.

The collector's sampler takes any object with pynvml's attributes; this one answers from the lab's
simulated GPUs. Return types follow nvidia-ml-py 13.x: strings are `str`, `nvmlDeviceGetPciInfo` and
friends return pynvml's own ctypes structures, power is mW, memory bytes, clocks MHz, energy mJ.
Constants and `NVMLError_*` classes are pynvml's own (looked up on the module), so `except
pynvml.NVMLError_GpuIsLost` works unchanged. Other `nvmlDevice*` functions answer NotSupported, as
an older driver would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pynvml

from gpu_rca.lab.device import Fleet, SimGpu

DRIVER_VERSION = "550.127.05"
MIG_CAPABLE = frozenset({"A100-40GB", "A100-80GB", "H100-80GB"})


@dataclass(frozen=True)
class DeviceHandle:
    """What nvmlDeviceGetHandleByIndex returns: an opaque handle naming one simulated GPU."""

    host: str
    index: int
    uuid: str


@dataclass(frozen=True)
class XidEventData:
    """nvmlEventSetWait's answer, with c_nvmlEventData_t's field names."""

    device: DeviceHandle
    eventType: int
    eventData: int
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass
class _EventSet:
    devices: list[SimGpu] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)  # uuid -> next XID record to deliver
    freed: bool = False


def _error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


class SimulatedNvml:
    """pynvml for one host of a simulated fleet."""

    def __init__(self, fleet: Fleet, host: str | None = None) -> None:
        self.fleet = fleet
        self.host = host or fleet.hosts[0]
        self.devices: list[SimGpu] = fleet.host_gpus(self.host)
        self._init_count = 0
        self._event_sets: dict[int, _EventSet] = {}

    def __getattr__(self, name: str) -> Any:
        # Constants, structures and NVMLError_* classes are pynvml's own.
        value = getattr(pynvml, name)
        if callable(value) and name.startswith("nvml") and not isinstance(value, type):
            return self._not_supported
        return value

    def _not_supported(self, *args: Any, **kwargs: Any) -> Any:
        self._check_init()
        raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    # --- lifecycle ----------------------------------------------------------------------------
    def _check_init(self) -> None:
        if self._init_count <= 0:
            raise _error(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlInit(self) -> None:
        """Initialise (counted, like NVML)."""
        self._init_count += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        """Initialise with flags (ignored)."""
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        """Release one initialisation."""
        self._check_init()
        self._init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        """The simulated driver's version."""
        self._check_init()
        return DRIVER_VERSION

    # --- devices ------------------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        """Number of GPUs on this host."""
        self._check_init()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> DeviceHandle:
        """Handle of the GPU at NVML index `index`."""
        self._check_init()
        if not 0 <= index < len(self.devices):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.devices[index]
        return DeviceHandle(gpu.host, gpu.index, gpu.uuid)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> DeviceHandle:
        """Handle of the GPU with this UUID."""
        self._check_init()
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.devices:
            if gpu.uuid == text:
                return DeviceHandle(gpu.host, gpu.index, gpu.uuid)
        raise _error(pynvml.NVML_ERROR_NOT_FOUND)

    def _gpu(self, handle: object, *, identity: bool = False) -> SimGpu:
        self._check_init()
        if not isinstance(handle, DeviceHandle) or handle.host != self.host:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.devices[handle.index]
        now_ns = self.fleet.sync()
        if not identity and gpu.is_lost(now_ns):
            raise _error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlDeviceGetUUID(self, handle: DeviceHandle) -> str:
        """`GPU-…` UUID."""
        return self._gpu(handle, identity=True).uuid

    def nvmlDeviceGetName(self, handle: DeviceHandle) -> str:
        """Product name as NVML reports it."""
        return self._gpu(handle, identity=True).profile.nvml_name

    def nvmlDeviceGetIndex(self, handle: DeviceHandle) -> int:
        """NVML index."""
        return self._gpu(handle, identity=True).index

    def nvmlDeviceGetPciInfo(self, handle: DeviceHandle) -> pynvml.nvmlPciInfo_t:
        """PCI info structure; `.busId` is `00000000:3B:00.0`."""
        gpu = self._gpu(handle, identity=True)
        info = pynvml.nvmlPciInfo_t()
        info.busId = gpu.pci_bus_id
        info.busIdLegacy = gpu.pci_bus_id[4:]
        info.domain = int(gpu.pci_bus_id[:8], 16)
        info.bus = int(gpu.pci_bus_id[9:11], 16)
        info.device = int(gpu.pci_bus_id[12:14], 16)
        info.pciDeviceId = 0x27B810DE
        return info

    nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo

    # --- readings -----------------------------------------------------------------------------
    def nvmlDeviceGetTemperature(self, handle: DeviceHandle, sensor: int) -> int:
        """Die temperature, °C."""
        gpu = self._gpu(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return round(gpu.state.temperature_c)

    def nvmlDeviceGetTemperatureThreshold(self, handle: DeviceHandle, threshold: int) -> int:
        """Slowdown or shutdown threshold, °C."""
        gpu = self._gpu(handle)
        if threshold == pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
            return gpu.profile.slowdown_temp_c
        if threshold == pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN:
            return gpu.profile.shutdown_temp_c
        raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetPowerUsage(self, handle: DeviceHandle) -> int:
        """Board power, mW."""
        return round(self._gpu(handle).state.power_w * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: DeviceHandle) -> int:
        """Enforced power limit, mW."""
        return round(self._gpu(handle).power_limit_w * 1000)

    nvmlDeviceGetPowerManagementLimit = nvmlDeviceGetEnforcedPowerLimit

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: DeviceHandle) -> int:
        """Default power limit, mW."""
        return round(self._gpu(handle).profile.power_limit_default_w * 1000)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: DeviceHandle) -> list[int]:
        """[min, max] settable power limit, mW."""
        profile = self._gpu(handle).profile
        return [int(profile.power_limit_min_w * 1000), int(profile.power_limit_default_w * 1000)]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: DeviceHandle) -> int:
        """Energy since the driver loaded, mJ."""
        return int(self._gpu(handle).state.energy_mj)

    def nvmlDeviceGetClockInfo(self, handle: DeviceHandle, clock_type: int) -> int:
        """Current clock, MHz."""
        gpu = self._gpu(handle)
        if clock_type in (pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_GRAPHICS):
            return gpu.state.sm_clock_mhz
        if clock_type == pynvml.NVML_CLOCK_MEM:
            idle = gpu.state.reasons_mask & 0x1 and gpu.state.utilization_pct < 1
            return 405 if idle else gpu.profile.max_mem_clock_mhz
        raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetMaxClockInfo(self, handle: DeviceHandle, clock_type: int) -> int:
        """Maximum clock, MHz."""
        gpu = self._gpu(handle)
        if clock_type in (pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_GRAPHICS):
            return gpu.profile.max_sm_clock_mhz
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return gpu.profile.max_mem_clock_mhz
        raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetUtilizationRates(self, handle: DeviceHandle) -> pynvml.c_nvmlUtilization_t:
        """GPU and memory-controller utilisation, %."""
        state = self._gpu(handle).state
        gpu_pct = round(state.utilization_pct)
        return pynvml.c_nvmlUtilization_t(gpu=gpu_pct, memory=round(gpu_pct * 0.45))

    def nvmlDeviceGetMemoryInfo(self, handle: DeviceHandle, version: int | None = None) -> pynvml.c_nvmlMemory_t:
        """Device memory: total, free, used (bytes)."""
        gpu = self._gpu(handle)
        return pynvml.c_nvmlMemory_t(
            total=gpu.profile.memory_total_bytes, free=gpu.memory_free_bytes, used=gpu.memory_used_bytes
        )

    def nvmlDeviceGetComputeRunningProcesses(self, handle: DeviceHandle) -> list[Any]:
        """Processes with a CUDA context: `.pid`, `.usedGpuMemory` (bytes)."""
        gpu = self._gpu(handle)
        return [
            pynvml.nvmlFriendlyObject(
                {
                    "pid": p.pid,
                    "usedGpuMemory": p.memory_bytes,
                    "gpuInstanceId": 0xFFFFFFFF,
                    "computeInstanceId": 0xFFFFFFFF,
                }
            )
            for p in sorted(gpu.processes.values(), key=lambda p: p.pid)
        ]

    nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses

    def nvmlDeviceGetTotalEccErrors(self, handle: DeviceHandle, error_type: int, counter_type: int) -> int:
        """ECC error count since driver load (volatile) or lifetime (aggregate)."""
        gpu = self._gpu(handle)
        if not gpu.profile.ecc:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return gpu.ecc_corrected
        if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return gpu.ecc_uncorrected
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: DeviceHandle) -> int:
        """Clock-event reason bitmask."""
        return self._gpu(handle).state.reasons_mask

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    def nvmlDeviceGetPcieReplayCounter(self, handle: DeviceHandle) -> int:
        """PCIe replay count."""
        return self._gpu(handle).pcie_replays

    def nvmlDeviceGetFieldValues(self, handle: DeviceHandle, field_ids: list[Any]) -> Any:
        """Several fields at once, as NVML answers them: an array of `c_nvmlFieldValue_t` in the order asked,
        each with its own `nvmlReturn` (NotSupported for a field this GPU or the lab lacks), its `valueType`
        and value, and `timestamp` (µs since 1970). An entry may be a `(fieldId, scopeId)` pair, as in
        pynvml. The call itself fails only for a bad handle or a lost GPU."""
        gpu = self._gpu(handle)
        now_us = self.fleet.sync() // 1000
        answers = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for answer, entry in zip(answers, field_ids):
            field_id, scope_id = entry if isinstance(entry, tuple) else (entry, 0)
            answer.fieldId, answer.scopeId, answer.timestamp = field_id, scope_id, now_us
            read = _FIELD_VALUES.get(field_id)
            value = read(gpu) if read is not None else None
            if value is None:
                answer.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            value_type, number = value
            answer.nvmlReturn, answer.valueType = pynvml.NVML_SUCCESS, value_type
            setattr(answer.value, _VALUE_MEMBER[value_type], number)
        return answers

    def nvmlDeviceGetMigMode(self, handle: DeviceHandle) -> list[int]:
        """[current, pending] MIG mode: disabled on A100/H100, NotSupported elsewhere (as on real cards)."""
        gpu = self._gpu(handle)
        if gpu.profile.key not in MIG_CAPABLE:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]

    # --- XID events ---------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> int:
        """A new event set (an opaque id)."""
        self._check_init()
        key = len(self._event_sets) + 1
        self._event_sets[key] = _EventSet()
        return key

    def nvmlDeviceRegisterEvents(self, handle: DeviceHandle, event_types: int, event_set: int) -> None:
        """Register for XID events; events already past are not delivered, as in NVML."""
        gpu = self._gpu(handle, identity=True)
        if not event_types & pynvml.nvmlEventTypeXidCriticalError:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        events = self._event_set(event_set)
        if gpu not in events.devices:
            events.devices.append(gpu)
            events.cursors[gpu.uuid] = len(gpu.xids)

    def nvmlEventSetWait(self, event_set: int, timeout_ms: int) -> XidEventData:
        """The oldest undelivered XID up to now; NVMLError_Timeout when there is none.

        Simulated time does not pass while waiting: the wait answers at once.
        """
        events = self._event_set(event_set)
        now_ns = self.fleet.sync()
        best: tuple[int, SimGpu] | None = None
        for gpu in events.devices:
            cursor = events.cursors[gpu.uuid]
            due = cursor < len(gpu.xids) and gpu.xids[cursor].ts_ns <= now_ns
            if due and (best is None or gpu.xids[cursor].ts_ns < best[0]):
                best = (gpu.xids[cursor].ts_ns, gpu)
        if best is None:
            raise _error(pynvml.NVML_ERROR_TIMEOUT)
        gpu = best[1]
        record = gpu.xids[events.cursors[gpu.uuid]]
        events.cursors[gpu.uuid] += 1
        return XidEventData(
            DeviceHandle(gpu.host, gpu.index, gpu.uuid), pynvml.nvmlEventTypeXidCriticalError, record.code
        )

    nvmlEventSetWait_v2 = nvmlEventSetWait

    def nvmlEventSetFree(self, event_set: int) -> None:
        """Free an event set."""
        self._event_set(event_set).freed = True

    def _event_set(self, event_set: int) -> _EventSet:
        self._check_init()
        events = self._event_sets.get(event_set)
        if events is None or events.freed:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return events


_ULL = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
_UINT = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
_VALUE_MEMBER = {_ULL: "ullVal", _UINT: "uiVal"}


def _ecc_field(count: Callable[[SimGpu], int]) -> Callable[[SimGpu], tuple[int, int] | None]:
    return lambda gpu: (_ULL, count(gpu)) if gpu.profile.ecc else None


#: The NVML field ids (NVML_FI_DEV_*) the lab answers, each as (nvmlValueType_t, value) or None when this
#: GPU lacks it; every other id answers NotSupported.
_FIELD_VALUES: dict[int, Callable[[SimGpu], tuple[int, int] | None]] = {
    pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL: _ecc_field(lambda gpu: gpu.ecc_corrected),
    pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: _ecc_field(lambda gpu: gpu.ecc_uncorrected),
    pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: lambda gpu: (_ULL, int(gpu.state.energy_mj)),
    pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: lambda gpu: (_UINT, gpu.pcie_replays),
    pynvml.NVML_FI_DEV_POWER_INSTANT: lambda gpu: (_UINT, round(gpu.state.power_w * 1000)),
    pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT: lambda gpu: (_UINT, round(gpu.power_limit_w * 1000)),
}


def simulated_nvml(
    fleet: Iterable[Mapping[str, Any]],
    host: str | None = None,
    clock: Callable[[], int] | None = None,
    *,
    seed: int = 0,
) -> SimulatedNvml:
    """pynvml for one host (the first unless named) of a new simulated fleet; idle until loaded.

    Without a clock it follows wall-clock time. `.devices` holds the GPUs, whose `load()` and
    `set_process()` put work on them.
    """
    return SimulatedNvml(Fleet(fleet, clock=clock or time.time_ns, seed=seed), host)


__all__ = ["DRIVER_VERSION", "DeviceHandle", "SimulatedNvml", "XidEventData", "simulated_nvml"]
