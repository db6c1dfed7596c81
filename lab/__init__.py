"""gpu-rca lab: simulated GPUs, DDColor workload model, fault injection, scenarios, virtual clock."""

from __future__ import annotations

from lab.clock import ScaledClock, VirtualClock
from lab.device import Fleet, SimGpu
from lab.device import gpu_uuid as gpu_uuid_for
from lab.engine import LabRun, run_scenario
from lab.generate import generate_scenarios, write_generated
from lab.live import LiveFleet
from lab.nvml import SimulatedNvml, simulated_nvml
from lab.outputs import write_run
from lab.profiles import PROFILES, GpuProfile, get_profile
from lab.scenario import Scenario, load_scenario, parse_scenario, shipped_scenarios

__all__ = [
    "PROFILES",
    "Fleet",
    "GpuProfile",
    "LabRun",
    "LiveFleet",
    "ScaledClock",
    "Scenario",
    "SimGpu",
    "SimulatedNvml",
    "VirtualClock",
    "generate_scenarios",
    "get_profile",
    "gpu_uuid_for",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "shipped_scenarios",
    "simulated_nvml",
    "write_generated",
    "write_run",
]
