"""Reading one GPU through an NVML-shaped module (real `pynvml` or the lab's simulated GPUs).

Every call goes through :class:`DeviceReader`, which remembers fields a GPU does not support (GeForce cards
have no ECC) so they are recorded as unsupported once and never retried, turns `GpuIsLost` into
:class:`DeviceLost`, and counts any other failure instead of raising it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from gpu_rca.collector._health import Health
from gpu_rca.collector._nvml_source import NvmlEventSet, NvmlHandle, NvmlSource

T = TypeVar("T")

# NVML return codes (pynvml's NVML_ERROR_*), so the module passed in needs no constants of its own for them.
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_TIMEOUT = 10
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_UNSUPPORTED_CODES = frozenset({_NOT_SUPPORTED, _NO_PERMISSION, _FUNCTION_NOT_FOUND})
_MAX_EVENTS_PER_TICK = 64

#: Counter names in Health (the exporter turns them into `gpu_rca_*` series).
ERRORS = "errors"
DROPPED = "dropped"
SAMPLES = "samples"
UNSUPPORTED = "unsupported"


class DeviceLost(Exception):
    """The GPU answered `GpuIsLost` (XID 79, fallen off the bus)."""


def nvml_code(exc: BaseException) -> int | None:
    """The NVML return code of a pynvml `NVMLError_*` (its `.value`), or None for other exceptions."""
    value = getattr(exc, "value", None)
    return value if type(exc).__name__.startswith("NVMLError") and isinstance(value, int) else None


def text(value: Any) -> str:
    """pynvml returns `bytes` from older bindings and `str` from newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class MigInfo:
    """A MIG slice of a GPU: its own UUID and its GPU instance id."""

    uuid: str
    instance_id: int


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What does not change while a GPU is up: identity, thresholds, maxima."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str  # as NVML writes it: 00000000:3B:00.0
    slowdown_temp_c: int | None
    shutdown_temp_c: int | None
    max_sm_clock_mhz: int | None
    max_mem_clock_mhz: int | None
    memory_total_bytes: int | None
    mig: tuple[MigInfo, ...] = ()
    driver_version: str | None = None  # the host's NVIDIA driver (nvmlSystemGetDriverVersion), e.g. 550.127.05


class Sample(NamedTuple):
    """One reading of one GPU; None where the GPU does not support the field or the read failed.

    A NamedTuple rather than a dataclass: stamping transposes a window with one `zip(*samples)`.
    """

    ts_ns: int
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    energy_mj: int | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    utilization_pct: float | None
    memory_utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    process_memory_bytes: int | None
    ecc_corrected: int | None
    ecc_uncorrected: int | None
    throttle_mask: int | None
    pcie_replays: int | None
    xids: tuple[int, ...] = ()


def _ecc(error_type: int) -> Callable[[NvmlSource, NvmlHandle], int]:
    # NVML_MEMORY_ERROR_TYPE_CORRECTED=0 / UNCORRECTED=1, NVML_VOLATILE_ECC=0 (since driver load).
    return lambda nv, h: int(nv.nvmlDeviceGetTotalEccErrors(h, error_type, 0))


#: Read at every tick: what changes within a request (the stamps' maxima and minimum, the clock-event mask
#: whose every set bit a span reports). NVML power is mW (exported in W); memory is bytes.
_FAST: tuple[tuple[str, Callable[[NvmlSource, NvmlHandle], Any]], ...] = (
    ("temperature_c", lambda nv, h: int(nv.nvmlDeviceGetTemperature(h, 0))),  # NVML_TEMPERATURE_GPU
    ("power_w", lambda nv, h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
    ("sm_clock_mhz", lambda nv, h: int(nv.nvmlDeviceGetClockInfo(h, 1))),  # NVML_CLOCK_SM
    ("memory", lambda nv, h: nv.nvmlDeviceGetMemoryInfo(h)),
    ("throttle_mask", lambda nv, h: int(nv.nvmlDeviceGetCurrentClocksEventReasons(h))),
)
#: Read on slow ticks (`SLOW_HZ` in the sampler), and carried into the samples between: utilisation (NVML
#: measures it over its own sample period of 1/6 s to 1 s, nvmlUtilization_t), the power limit and the
#: memory clock, which change when someone sets them.
_SLOW: tuple[tuple[str, Callable[[NvmlSource, NvmlHandle], Any]], ...] = (
    ("utilization", lambda nv, h: nv.nvmlDeviceGetUtilizationRates(h)),
    ("power_limit_w", lambda nv, h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
    ("mem_clock_mhz", lambda nv, h: int(nv.nvmlDeviceGetClockInfo(h, 2))),  # NVML_CLOCK_MEM
)
#: The counters, also slow, read in one `nvmlDeviceGetFieldValues` call: (Sample field, NVML field id, the
#: single call it stands for where a driver lacks field values).
COUNTERS: tuple[tuple[str, int, Callable[[NvmlSource, NvmlHandle], int]], ...] = (
    # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: mJ since the driver loaded
    ("energy_mj", 83, lambda nv, h: int(nv.nvmlDeviceGetTotalEnergyConsumption(h))),
    ("ecc_corrected", 3, _ecc(0)),  # NVML_FI_DEV_ECC_SBE_VOL_TOTAL: volatile single-bit (corrected) errors
    ("ecc_uncorrected", 4, _ecc(1)),  # NVML_FI_DEV_ECC_DBE_VOL_TOTAL: volatile double-bit (uncorrected)
    ("pcie_replays", 94, lambda nv, h: int(nv.nvmlDeviceGetPcieReplayCounter(h))),  # NVML_FI_DEV_PCIE_REPLAY_COUNTER
)
#: nvmlValue_t's member for each nvmlValueType_t (DOUBLE, UNSIGNED_INT, UNSIGNED_LONG, UNSIGNED_LONG_LONG,
#: SIGNED_LONG_LONG, SIGNED_INT, UNSIGNED_SHORT).
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
_NO_COUNTERS: tuple[None, ...] = (None,) * len(COUNTERS)


class DeviceReader:
    """Reads one GPU each tick; remembers what it does not support; never raises but :class:`DeviceLost`."""

    def __init__(self, nvml: NvmlSource, index: int, handle: NvmlHandle, health: Health, pid: int) -> None:
        self.nvml = nvml
        self.index = index
        self.handle = handle
        self.health = health
        self.pid = pid
        self.unsupported: set[str] = set()
        self._event_set: NvmlEventSet = None
        self._xid_event = 0
        #: The slow fields last read (see `read`), carried into the samples between slow ticks.
        self._slow: tuple[Any, ...] | None = None
        self.info = self._discover()
        self._open_xid_events()

    def _call(self, field: str, fn: Callable[[NvmlSource, NvmlHandle], T]) -> T | None:
        """Run one NVML read; None when unsupported (remembered) or failed (counted)."""
        if field in self.unsupported:
            return None
        try:
            return fn(self.nvml, self.handle)
        except Exception as exc:
            code = nvml_code(exc)
            if code == _GPU_IS_LOST:
                raise DeviceLost(str(exc)) from exc
            if code in _UNSUPPORTED_CODES or isinstance(exc, AttributeError):
                self.unsupported.add(field)
                # Normal on many GPUs (no ECC on GeForce, no MIG): worth a note, not a warning.
                message = f"GPU {self.index}: {field} unsupported, not read again"
                self.health.failure(UNSUPPORTED, field, message, exc, level=logging.INFO)
                return None
            self.health.failure(ERRORS, f"nvml_{field}", f"GPU {self.index}: reading {field} failed", exc)
            return None

    def _discover(self) -> DeviceInfo:
        nv = self.nvml
        uuid = text(self._call("uuid", lambda nv, h: nv.nvmlDeviceGetUUID(h)) or f"unknown-{self.index}")
        pci = self._call("pci", lambda nv, h: nv.nvmlDeviceGetPciInfo(h))
        total = self._call("memory", lambda nv, h: nv.nvmlDeviceGetMemoryInfo(h))
        return DeviceInfo(
            index=self.index,
            uuid=uuid,
            name=text(self._call("name", lambda nv, h: nv.nvmlDeviceGetName(h)) or ""),
            pci_bus_id=text(pci.busId) if pci is not None else "",
            slowdown_temp_c=self._call("slowdown_temp", lambda nv, h: int(nv.nvmlDeviceGetTemperatureThreshold(h, 1))),
            shutdown_temp_c=self._call("shutdown_temp", lambda nv, h: int(nv.nvmlDeviceGetTemperatureThreshold(h, 0))),
            max_sm_clock_mhz=self._call("max_sm_clock", lambda nv, h: int(nv.nvmlDeviceGetMaxClockInfo(h, 1))),
            max_mem_clock_mhz=self._call("max_mem_clock", lambda nv, h: int(nv.nvmlDeviceGetMaxClockInfo(h, 2))),
            memory_total_bytes=int(total.total) if total is not None else None,
            mig=self._discover_mig(nv),
            driver_version=text(self._call("driver_version", lambda nv, h: nv.nvmlSystemGetDriverVersion()) or "")
            or None,
        )

    def _discover_mig(self, nv: NvmlSource) -> tuple[MigInfo, ...]:
        mode = self._call("mig", lambda nv, h: nv.nvmlDeviceGetMigMode(h))
        if not mode or not mode[0]:
            return ()
        slices = []
        count = self._call("mig", lambda nv, h: int(nv.nvmlDeviceGetMaxMigDeviceCount(h))) or 0
        for i in range(count):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(self.handle, i)
                slices.append(MigInfo(text(nv.nvmlDeviceGetUUID(mig)), int(nv.nvmlDeviceGetGpuInstanceId(mig))))
            except Exception:
                continue
        return tuple(slices)

    def _open_xid_events(self) -> None:
        nv = self.nvml
        try:
            xid_event = int(nv.nvmlEventTypeXidCriticalError)
            event_set = nv.nvmlEventSetCreate()
            nv.nvmlDeviceRegisterEvents(self.handle, xid_event, event_set)
            self._event_set, self._xid_event = event_set, xid_event
        except Exception as exc:
            self.unsupported.add("xid_events")
            self.health.failure(
                UNSUPPORTED, "xid_events", f"GPU {self.index}: XID events unavailable", exc, level=logging.INFO
            )

    def _drain_xids(self) -> tuple[int, ...]:
        if self._event_set is None:
            return ()
        xids = []
        for _ in range(_MAX_EVENTS_PER_TICK):
            try:
                data = self.nvml.nvmlEventSetWait(self._event_set, 0)
            except Exception as exc:
                code = nvml_code(exc)
                if code == _GPU_IS_LOST:
                    raise DeviceLost(str(exc)) from exc
                if code != _TIMEOUT:  # Timeout: no event pending
                    self.health.failure(ERRORS, "nvml_xid_events", f"GPU {self.index}: reading XID events failed", exc)
                break
            if data.eventType & self._xid_event:
                xids.append(int(data.eventData))
        return tuple(xids)

    def last_words(self, ts_ns: int) -> Sample | None:
        """After `GpuIsLost`: the XIDs still pending (79, "fallen off the bus", usually) as a sample with
        no readings, so spans and the exporter see them; None when there are none or they cannot be read."""
        try:
            xids = self._drain_xids()
        except DeviceLost:
            return None
        return Sample._make((ts_ns, *([None] * (len(Sample._fields) - 2)), xids)) if xids else None

    def read(self, ts_ns: int, slow: bool = True) -> Sample | None:
        """One sample: the fast fields read now, the slow ones read now when `slow` (else the last ones read,
        and no XIDs); None when no field could be read (a driver failure). Raises :class:`DeviceLost` only."""
        call = self._call
        fast = temperature, power, sm_clock, memory, mask = tuple(call(field, fn) for field, fn in _FAST)
        nothing = fast.count(None) == len(fast)
        if slow or self._slow is None:  # a reader's first tick reads everything
            *carried, xids = self._read_slow()
            self._slow = tuple(carried)
            nothing = nothing and carried.count(None) == len(carried)
        else:
            xids = ()
        if nothing:
            return None
        util, util_memory, limit, mem_clock, energy, ecc_corrected, ecc_uncorrected, replays, process = self._slow
        return Sample(
            ts_ns,
            temperature,
            power,
            limit,
            energy,
            sm_clock,
            mem_clock,
            util,
            util_memory,
            int(memory.used) if memory is not None else None,
            int(memory.total) if memory is not None else None,
            process,
            ecc_corrected,
            ecc_uncorrected,
            mask,
            replays,
            xids,
        )

    def _read_slow(self) -> tuple[Any, ...]:
        """(utilisation, memory utilisation, power limit, memory clock, the COUNTERS, process memory, XIDs)."""
        util, limit, mem_clock = (self._call(field, fn) for field, fn in _SLOW)
        return (
            float(util.gpu) if util is not None else None,
            float(util.memory) if util is not None else None,
            limit,
            mem_clock,
            *self._counters(),
            self._process_memory(),
            self._drain_xids(),
        )

    def _counters(self) -> tuple[int | None, ...]:
        """COUNTERS' values, in one `nvmlDeviceGetFieldValues` call where the driver has it (each field's own
        `nvmlReturn` checked: one the GPU lacks is remembered and not asked again), else one call each."""
        if "field_values" in self.unsupported:
            return tuple(self._call(field, fn) for field, _, fn in COUNTERS)
        wanted = [
            (i, field, field_id) for i, (field, field_id, _) in enumerate(COUNTERS) if field not in self.unsupported
        ]
        if not wanted:
            return _NO_COUNTERS
        try:
            answers = self.nvml.nvmlDeviceGetFieldValues(self.handle, [field_id for _, _, field_id in wanted])
        except Exception as exc:
            code = nvml_code(exc)
            if code == _GPU_IS_LOST:
                raise DeviceLost(str(exc)) from exc
            if code in _UNSUPPORTED_CODES or isinstance(exc, AttributeError):  # an older driver: one call each
                self.unsupported.add("field_values")
                message = f"GPU {self.index}: field values unsupported, counters read one call each"
                self.health.failure(UNSUPPORTED, "field_values", message, exc, level=logging.INFO)
                return self._counters()
            self.health.failure(ERRORS, "nvml_field_values", f"GPU {self.index}: reading field values failed", exc)
            return _NO_COUNTERS
        values: list[int | None] = [None] * len(COUNTERS)
        for (i, field, _), answer in zip(wanted, answers):
            code = int(answer.nvmlReturn)
            if code == 0:  # NVML_SUCCESS
                values[i] = int(getattr(answer.value, _VALUE_MEMBERS[int(answer.valueType)]))
            elif code == _GPU_IS_LOST:
                raise DeviceLost(f"GPU {self.index}: field {field}: GPU is lost")
            elif code in _UNSUPPORTED_CODES:
                self.unsupported.add(field)
                message = f"GPU {self.index}: {field} unsupported, not read again"
                self.health.failure(UNSUPPORTED, field, message, level=logging.INFO)
            else:
                self.health.failure(ERRORS, f"nvml_{field}", f"GPU {self.index}: reading {field} failed (NVML {code})")
        return tuple(values)

    def _process_memory(self) -> int | None:
        procs = self._call("processes", lambda nv, h: nv.nvmlDeviceGetComputeRunningProcesses(h))
        if procs is None:
            return None
        total = 0
        for process in procs:
            if process.pid == self.pid:
                if process.usedGpuMemory is None:  # NVML could not attribute memory (some containers, WDDM)
                    return None
                total += int(process.usedGpuMemory)
        return total

    def close(self) -> None:
        """Free the XID event set (best effort)."""
        if self._event_set is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlEventSetFree(self._event_set)
            self._event_set = None
