"""gpu-rca lab: simulated GPUs, DDColor workload model, fault injection, scenarios, virtual clock."""

from __future__ import annotations

from lab.clock import ScaledClock, VirtualClock
from lab.device import Fleet, SimGpu
from lab.nvml import SimulatedNvml, simulated_nvml
from lab.profiles import PROFILES, GpuProfile, get_profile

__all__ = [
    "PROFILES",
    "Fleet",
    "GpuProfile",
    "ScaledClock",
    "SimGpu",
    "SimulatedNvml",
    "VirtualClock",
    "get_profile",
    "simulated_nvml",
]
