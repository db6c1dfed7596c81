"""The fleet's metrics as Prometheus would hold them after scraping dcgm-exporter: `/api/v1/query_range` JSON.

Each scrape reads the simulated GPUs through the same pynvml calls an exporter makes and converts to
dcgm-exporter's units (W, MiB). One document per metric holds a series per GPU, labelled with
`__name__`, dcgm-exporter's labels (`gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`, `Hostname`) and
Prometheus' `instance`/`job`. Real-fleet noise: one host misses one scrape, one sample is NaN, a lost
GPU's series stop.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pynvml

from gpu_rca.lab.device import Fleet, SimGpu
from gpu_rca.lab.nvml import SimulatedNvml
from gpu_rca.lab.scenario import Scenario
from gpu_rca.schemas import metrics as M

NS = 1_000_000_000
MIB = 1024 * 1024


def _readings(nvml: Any, handle: Any, gpu: SimGpu) -> dict[str, float]:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    values = {
        M.GPU_TEMP: nvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        M.POWER_USAGE: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        M.TOTAL_ENERGY_CONSUMPTION: nvml.nvmlDeviceGetTotalEnergyConsumption(handle),
        M.SM_CLOCK: nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
        M.MEM_CLOCK: nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        M.GPU_UTIL: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
        M.MEM_COPY_UTIL: nvml.nvmlDeviceGetUtilizationRates(handle).memory,
        M.FB_USED: memory.used // MIB,
        M.FB_FREE: memory.free // MIB,
        M.CLOCKS_EVENT_REASONS: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle),
        M.ENFORCED_POWER_LIMIT: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
        M.SLOWDOWN_TEMP: nvml.nvmlDeviceGetTemperatureThreshold(handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
        M.MAX_SM_CLOCK: nvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
        M.PCIE_REPLAY_COUNTER: nvml.nvmlDeviceGetPcieReplayCounter(handle),
        # The exporter's XID gauge holds the last XID seen until it restarts (dcgm-exporter#500).
        M.XID_ERRORS: gpu.xids[-1].code if gpu.xids else 0,
    }
    if gpu.profile.ecc:
        values[M.ECC_SBE_VOL_TOTAL] = nvml.nvmlDeviceGetTotalEccErrors(
            handle, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC
        )
        values[M.ECC_DBE_VOL_TOTAL] = nvml.nvmlDeviceGetTotalEccErrors(
            handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
        )
    return values


def _format(value: int | float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 6))


class Scraper:
    """Scrapes the fleet every `scrape_interval` of simulated time and keeps the series."""

    def __init__(self, fleet: Fleet, scenario: Scenario, rng: random.Random, keep: bool = True) -> None:
        self.fleet = fleet
        self.interval_ns = scenario.scrape_interval_ns
        self.start_ns = scenario.start_ns
        self._next_ns = scenario.start_ns
        self._nvml = {host: SimulatedNvml(fleet, host) for host in fleet.hosts}
        for nvml in self._nvml.values():
            nvml.nvmlInit()
        self._handles = {gpu.uuid: self._nvml[gpu.host].nvmlDeviceGetHandleByIndex(gpu.index) for gpu in fleet.gpus}
        scrapes = max(1, scenario.duration_ns // self.interval_ns)
        self._missed = (rng.choice(fleet.hosts), rng.randrange(1, scrapes + 1) if scrapes > 2 else -1)
        self._nan_at = (rng.randrange(len(fleet.gpus)), rng.randrange(1, scrapes + 1) if scrapes > 2 else -1)
        self._series: dict[tuple[str, str], list[list[Any]]] = {}
        self._count = 0
        self.keep = keep

    def maybe_scrape(self, now_ns: int) -> None:
        """Scrape if a scrape is due at or before `now_ns` (never when not keeping series)."""
        while self.keep and self._next_ns <= now_ns:
            self._scrape(self._next_ns)
            self._next_ns += self.interval_ns

    def _scrape(self, ts_ns: int) -> None:
        self._count += 1
        for position, gpu in enumerate(self.fleet.gpus):
            if (gpu.host, self._count) == self._missed:
                continue
            nvml = self._nvml[gpu.host]
            try:
                values = _readings(nvml, self._handles[gpu.uuid], gpu)
            except pynvml.NVMLError_GpuIsLost:
                continue  # the exporter can no longer read it: the series stop
            if (position, self._count) == self._nan_at:
                values[M.POWER_USAGE] = float("nan")
            for name, value in values.items():
                self._series.setdefault((name, gpu.uuid), []).append([round(ts_ns / NS, 3), _format(value)])

    def documents(self) -> list[dict[str, Any]]:
        """One Prometheus `query_range` response per metric, series in fleet order."""
        labels = {gpu.uuid: _labels(gpu) for gpu in self.fleet.gpus}
        names: list[str] = []
        for name, _ in self._series:
            if name not in names:
                names.append(name)
        order = [m.name for m in M.METRICS if m.name in names]
        documents = []
        for name in order:
            result = [
                {"metric": {"__name__": name} | labels[gpu.uuid], "values": self._series[(name, gpu.uuid)]}
                for gpu in self.fleet.gpus
                if (name, gpu.uuid) in self._series
            ]
            documents.append({"status": "success", "data": {"resultType": "matrix", "result": result}})
        return documents


def _labels(gpu: SimGpu) -> dict[str, str]:
    return {
        M.LABEL_GPU: str(gpu.index),
        M.LABEL_UUID: gpu.uuid,
        M.LABEL_PCI_BUS_ID: gpu.pci_bus_id,
        M.LABEL_DEVICE: f"nvidia{gpu.index}",
        M.LABEL_MODEL_NAME: gpu.profile.nvml_name,
        M.LABEL_HOSTNAME: gpu.host,
        "instance": f"{gpu.host}:9400",
        "job": "dcgm-exporter",
    }


__all__ = ["Scraper"]
