"""The physical model of one GPU, stepped in fixed increments: power, clocks, temperature, throttling.

- power = idle + k × utilization × f(clock), with f(clock) = (clock / max)^2.5 (dynamic power goes as
  frequency × voltage², and voltage rises with frequency) and k = full-load power − idle power;
- at the power limit the SM clock falls until power ≤ limit (`sw_power_cap`);
- steady-state temperature = ambient + power × thermal resistance / cooling, approached as a first-order
  lag with the profile's time constant;
- at the slowdown temperature the driver cuts clocks (`sw_thermal`) to the power that holds the die just
  under the threshold, and releases only below threshold − hysteresis; `hw_thermal` (with the umbrella
  `hw_slowdown` bit) joins when the die still overshoots by 3 °C;
- an external slowdown (power brake) forces clocks down (`hw_slowdown` + `hw_power_brake`).

Faults change only `PhysicsInputs` (cooling, power limit, slowdown, load), never the outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpu_rca.lab.profiles import GpuProfile
from gpu_rca.schemas.throttle import encode_throttle_reasons

CLOCK_POWER_EXPONENT = 2.5
THERMAL_HYSTERESIS_C = 3.0
HW_THERMAL_OVERSHOOT_C = 3.0
UTILIZATION_AVERAGING_S = 1.0  # NVML reports utilization over roughly the last second

_IDLE = encode_throttle_reasons(["gpu_idle"])
_POWER_CAP = encode_throttle_reasons(["sw_power_cap"])
_SW_THERMAL = encode_throttle_reasons(["sw_thermal"])
_HW_THERMAL = encode_throttle_reasons(["hw_slowdown", "hw_thermal"])
_POWER_BRAKE = encode_throttle_reasons(["hw_slowdown", "hw_power_brake"])


@dataclass(frozen=True)
class PhysicsInputs:
    """What drives one GPU during a step: load and environment (the only things faults change)."""

    busy_fraction: float  # share of the step with a kernel running, 0..1
    power_limit_w: float
    ambient_c: float = 30.0
    cooling: float = 1.0  # 1 = normal; a thermal fault lowers it
    slowdown: float = 0.0  # 0..1 external clock cut (power brake)
    idle_power_cap_noise: bool = False


@dataclass(frozen=True)
class PhysicsState:
    """One GPU's physical outputs after a step."""

    temperature_c: float
    power_w: float
    sm_clock_mhz: int
    reasons_mask: int
    utilization_pct: float
    thermal_active: bool = False
    energy_mj: float = 0.0


def idle_state(profile: GpuProfile, ambient_c: float = 30.0) -> PhysicsState:
    """A GPU that has been idle long enough to settle."""
    temperature = steady_state_temperature_c(profile, profile.idle_power_w, ambient_c, 1.0)
    mask = _IDLE | (_POWER_CAP if profile.idle_power_cap_noise else 0)
    return PhysicsState(temperature, profile.idle_power_w, profile.idle_sm_clock_mhz, mask, 0.0)


def steady_state_temperature_c(profile: GpuProfile, power_w: float, ambient_c: float, cooling: float) -> float:
    """Where the die temperature settles at constant power."""
    return ambient_c + power_w * profile.thermal_resistance_c_per_w / max(cooling, 1e-3)


def power_w(profile: GpuProfile, busy_fraction: float, sm_clock_mhz: float) -> float:
    """Board power for a load at a clock."""
    dynamic_w = profile.full_load_power_w - profile.idle_power_w
    ratio = sm_clock_mhz / profile.max_sm_clock_mhz
    return profile.idle_power_w + dynamic_w * busy_fraction * ratio**CLOCK_POWER_EXPONENT


def clock_for_power_mhz(profile: GpuProfile, busy_fraction: float, budget_w: float) -> float:
    """The highest SM clock whose power stays within `budget_w` (inverse of :func:`power_w`)."""
    dynamic_w = (profile.full_load_power_w - profile.idle_power_w) * busy_fraction
    headroom_w = budget_w - profile.idle_power_w
    if dynamic_w <= 0:
        return float(profile.max_sm_clock_mhz)
    if headroom_w <= 0:
        return 0.0
    return profile.max_sm_clock_mhz * min(1.0, headroom_w / dynamic_w) ** (1.0 / CLOCK_POWER_EXPONENT)


def step(profile: GpuProfile, state: PhysicsState, inputs: PhysicsInputs, dt_s: float) -> PhysicsState:
    """Advance one GPU by `dt_s` seconds under constant inputs."""
    busy = min(max(inputs.busy_fraction, 0.0), 1.0)
    if busy == 0 and inputs.slowdown == 0 and not state.thermal_active and state.utilization_pct < 1e-3:
        # Settled idle (most GPU-steps of a run): the full step below would return the same state.
        idle_c = steady_state_temperature_c(profile, profile.idle_power_w, inputs.ambient_c, inputs.cooling)
        if abs(state.temperature_c - idle_c) < 1e-3 and state.power_w == profile.idle_power_w:
            mask = _IDLE | (_POWER_CAP if inputs.idle_power_cap_noise else 0)
            return PhysicsState(
                idle_c,
                state.power_w,
                profile.idle_sm_clock_mhz,
                mask,
                0.0,
                False,
                state.energy_mj + state.power_w * dt_s * 1000.0,
            )
    mask = 0
    if busy > 0:
        clock = float(profile.max_sm_clock_mhz)
    else:
        clock = float(profile.idle_sm_clock_mhz)
        mask |= _IDLE | (_POWER_CAP if inputs.idle_power_cap_noise else 0)

    power_cap_clock = clock_for_power_mhz(profile, busy, inputs.power_limit_w)
    if busy > 0 and power_cap_clock < clock:
        clock = power_cap_clock
        mask |= _POWER_CAP

    temperature = state.temperature_c
    thermal_active = temperature >= profile.slowdown_temp_c or (
        state.thermal_active and temperature > profile.slowdown_temp_c - THERMAL_HYSTERESIS_C
    )
    if thermal_active:
        # Hold the die just under the threshold: the power whose steady state is slowdown − 1 °C.
        budget_w = (profile.slowdown_temp_c - 1.0 - inputs.ambient_c) * inputs.cooling
        budget_w /= profile.thermal_resistance_c_per_w
        clock = min(clock, clock_for_power_mhz(profile, busy, budget_w)) if busy > 0 else clock
        mask |= _SW_THERMAL
        if temperature >= profile.slowdown_temp_c + HW_THERMAL_OVERSHOOT_C:
            mask |= _HW_THERMAL

    if inputs.slowdown > 0:
        clock = min(clock, profile.max_sm_clock_mhz * (1.0 - inputs.slowdown))
        mask |= _POWER_BRAKE

    clock = max(clock, float(profile.min_sm_clock_mhz))
    power = power_w(profile, busy, clock)
    target_c = steady_state_temperature_c(profile, power, inputs.ambient_c, inputs.cooling)
    temperature += (target_c - temperature) * (1.0 - math.exp(-dt_s / profile.thermal_time_constant_s))
    utilization = state.utilization_pct + (100.0 * busy - state.utilization_pct) * (
        1.0 - math.exp(-dt_s / UTILIZATION_AVERAGING_S)
    )
    return PhysicsState(
        temperature_c=temperature,
        power_w=power,
        sm_clock_mhz=round(clock),
        reasons_mask=mask,
        utilization_pct=utilization,
        thermal_active=thermal_active,
        energy_mj=state.energy_mj + power * dt_s * 1000.0,
    )


__all__ = [
    "CLOCK_POWER_EXPONENT",
    "THERMAL_HYSTERESIS_C",
    "PhysicsInputs",
    "PhysicsState",
    "clock_for_power_mhz",
    "idle_state",
    "power_w",
    "steady_state_temperature_c",
    "step",
]
