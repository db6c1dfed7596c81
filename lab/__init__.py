"""gpu-rca lab: simulated GPUs, DDColor workload model, fault injection, scenarios, virtual clock."""

from __future__ import annotations

from gpu_rca.lab.clock import ScaledClock, VirtualClock
from gpu_rca.lab.device import Fleet, SimGpu, gpu_uuid_for
from gpu_rca.lab.engine import LabRun, run_scenario
from gpu_rca.lab.generate import generate_scenarios, write_generated
from gpu_rca.lab.live import LiveFleet
from gpu_rca.lab.nvml import SimulatedNvml, simulated_nvml
from gpu_rca.lab.outputs import write_run
from gpu_rca.lab.profiles import PROFILES, GpuProfile, get_profile
from gpu_rca.lab.scenario import Scenario, load_scenario, parse_scenario, shipped_scenarios

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
