"""GPU profiles for the simulated fleet: memory, power, clocks, temperatures, ECC, and thermal constants.

Memory sizes, power limits and max clocks follow NVIDIA's public datasheets and what `nvidia-smi -q`
prints for each card. Slowdown/shutdown temperatures for these SKUs are NOT VERIFIED (no public
per-SKU source was found), so every temperature threshold here is an estimate, as are idle power, full-load
power, thermal resistance and time constant: they are chosen so a busy card settles at 60-75 °C with
a 30 °C inlet, which is what operators usually see.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_rca.schemas.errors import InputError

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuProfile:
    """One GPU model's constants (NVML units in the names: MHz, W, bytes, °C)."""

    key: str  # the scenario vocabulary: L4, T4, A100-40GB, ...
    nvml_name: str  # what nvmlDeviceGetName answers
    memory_total_bytes: int
    power_limit_default_w: float
    power_limit_min_w: float
    idle_power_w: float  # estimate
    full_load_power_w: float  # estimate: busy at max clock, unconstrained
    max_sm_clock_mhz: int
    idle_sm_clock_mhz: int
    min_sm_clock_mhz: int
    max_mem_clock_mhz: int
    slowdown_temp_c: int  # estimate (NOT VERIFIED for these SKUs)
    shutdown_temp_c: int  # estimate
    ecc: bool
    thermal_resistance_c_per_w: float  # estimate: steady-state rise per watt at normal cooling
    thermal_time_constant_s: float  # estimate: first-order lag of die temperature
    relative_speed: float  # estimate: DDColor throughput relative to an L4 at max clock
    idle_power_cap_noise: bool = False  # some cards show sw_power_cap while idle (nvidia-smi -q of an idle A40 in P8)


PROFILES: dict[str, GpuProfile] = {
    p.key: p
    for p in (
        GpuProfile(
            "L4", "NVIDIA L4", 23034 * MIB, 72.0, 40.0, 16.0, 66.0, 2040, 210, 210, 6251, 90, 95, True, 0.60, 45.0, 1.0
        ),
        GpuProfile(
            "T4",
            "Tesla T4",
            15360 * MIB,
            70.0,
            60.0,
            10.0,
            64.0,
            1590,
            300,
            300,
            5001,
            89,
            94,
            True,
            0.62,
            45.0,
            0.45,
            idle_power_cap_noise=True,
        ),
        GpuProfile(
            "A100-40GB",
            "NVIDIA A100-SXM4-40GB",
            40960 * MIB,
            400.0,
            100.0,
            55.0,
            330.0,
            1410,
            210,
            210,
            1215,
            92,
            97,
            True,
            0.115,
            60.0,
            2.3,
        ),
        GpuProfile(
            "A100-80GB",
            "NVIDIA A100-SXM4-80GB",
            81920 * MIB,
            400.0,
            100.0,
            60.0,
            340.0,
            1410,
            210,
            210,
            1593,
            92,
            97,
            True,
            0.112,
            60.0,
            2.4,
        ),
        GpuProfile(
            "H100-80GB",
            "NVIDIA H100 80GB HBM3",
            81559 * MIB,
            700.0,
            200.0,
            70.0,
            560.0,
            1980,
            345,
            345,
            2619,
            92,
            97,
            True,
            0.068,
            60.0,
            4.0,
        ),
        GpuProfile(
            "RTX-4090",
            "NVIDIA GeForce RTX 4090",
            24564 * MIB,
            450.0,
            150.0,
            22.0,
            380.0,
            3105,
            210,
            210,
            10501,
            88,
            93,
            False,
            0.10,
            40.0,
            2.6,
            idle_power_cap_noise=True,
        ),
    )
}


def get_profile(key: str) -> GpuProfile:
    """The profile named `key`; an unknown name is an InputError listing the known ones."""
    try:
        return PROFILES[key]
    except KeyError:
        raise InputError(f"unknown GPU model {key!r}; known: {', '.join(PROFILES)}") from None


__all__ = ["MIB", "PROFILES", "GpuProfile", "get_profile"]
