"""The simulated GPUs' physical invariants, through the pynvml-compatible interface."""

from __future__ import annotations

import math

import pytest

from gpu_rca import lab
from gpu_rca.lab.physics import THERMAL_HYSTERESIS_C, PhysicsInputs, idle_state, power_w, step
from gpu_rca.schemas.throttle import decode_throttle_reasons

SECOND_NS = 1_000_000_000


def _host(model: str = "L4", gpus: int = 1):
    clock = lab.VirtualClock(1_700_000_000 * SECOND_NS)
    nvml = lab.simulated_nvml([{"host": "node-a", "gpus": gpus, "model": model}], clock=clock.now_ns)
    nvml.nvmlInit()
    return clock, nvml, nvml.nvmlDeviceGetHandleByIndex(0), nvml.devices[0]


def _reasons(nvml, handle) -> list[str]:
    return decode_throttle_reasons(nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))


@pytest.mark.parametrize("model", sorted(lab.PROFILES))
def test_steady_state_temperature_is_ambient_plus_power_times_resistance(model):
    clock, nvml, handle, gpu = _host(model)
    gpu.load(0.6)
    clock.advance(40 * 60 * SECOND_NS)  # many time constants
    power = nvml.nvmlDeviceGetPowerUsage(handle) / 1000
    expected = gpu.ambient_c + power * gpu.profile.thermal_resistance_c_per_w
    assert nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU) == round(expected)
    assert _reasons(nvml, handle) == []


def test_temperature_follows_a_first_order_lag_with_the_stated_time_constant():
    profile = lab.get_profile("A100-40GB")
    start = idle_state(profile)
    inputs = PhysicsInputs(busy_fraction=1.0, power_limit_w=profile.power_limit_default_w)
    state = start
    for _ in range(int(profile.thermal_time_constant_s * 10)):
        state = step(profile, state, inputs, 0.1)
    target = inputs.ambient_c + state.power_w * profile.thermal_resistance_c_per_w
    covered = (state.temperature_c - start.temperature_c) / (target - start.temperature_c)
    assert covered == pytest.approx(1 - math.exp(-1), abs=0.01)


def test_power_is_idle_plus_k_times_utilization_times_clock_factor():
    profile = lab.get_profile("L4")
    assert power_w(profile, 0.0, profile.max_sm_clock_mhz) == profile.idle_power_w
    assert power_w(profile, 1.0, profile.max_sm_clock_mhz) == profile.full_load_power_w
    half = power_w(profile, 0.5, profile.max_sm_clock_mhz) - profile.idle_power_w
    assert half == pytest.approx((profile.full_load_power_w - profile.idle_power_w) / 2)
    slower = power_w(profile, 1.0, profile.max_sm_clock_mhz / 2) - profile.idle_power_w
    assert slower == pytest.approx((profile.full_load_power_w - profile.idle_power_w) * 0.5**2.5)


def test_a_lower_power_limit_sets_sw_power_cap_under_load_and_holds_power_under_it():
    clock, nvml, handle, gpu = _host("A100-80GB")
    gpu.power_limit_w = 200.0
    gpu.load(1.0)
    clock.advance(10 * SECOND_NS)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(handle) == 200_000
    assert nvml.nvmlDeviceGetPowerUsage(handle) <= 200_000
    assert nvml.nvmlDeviceGetPowerUsage(handle) >= 199_000
    assert "sw_power_cap" in _reasons(nvml, handle)
    assert nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) < gpu.profile.max_sm_clock_mhz
    gpu.power_limit_w = gpu.profile.power_limit_default_w
    clock.advance(SECOND_NS)
    assert _reasons(nvml, handle) == []
    assert nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) == gpu.profile.max_sm_clock_mhz


def test_idle_gpus_report_gpu_idle_and_some_report_sw_power_cap_harmlessly():
    _, nvml, handle, _ = _host("T4")
    assert _reasons(nvml, handle) == ["gpu_idle", "sw_power_cap"]
    _, nvml, handle, _ = _host("L4")
    assert _reasons(nvml, handle) == ["gpu_idle"]


def test_thermal_slowdown_cuts_clocks_with_hysteresis():
    clock, nvml, handle, gpu = _host("L4")
    slowdown = nvml.nvmlDeviceGetTemperatureThreshold(handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
    gpu.load(1.0)
    gpu.cooling = 0.4
    clock.advance(5 * 60 * SECOND_NS)
    assert "sw_thermal" in _reasons(nvml, handle)
    assert slowdown - THERMAL_HYSTERESIS_C < nvml.nvmlDeviceGetTemperature(handle, 0) <= slowdown
    throttled_mhz = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
    assert throttled_mhz < 0.9 * gpu.profile.max_sm_clock_mhz
    # Cooling restored: the throttle holds until the die is below slowdown − hysteresis, then clears.
    gpu.cooling = 1.0
    clock.advance(SECOND_NS)
    assert "sw_thermal" in _reasons(nvml, handle)
    assert nvml.nvmlDeviceGetTemperature(handle, 0) > slowdown - THERMAL_HYSTERESIS_C
    clock.advance(5 * 60 * SECOND_NS)
    assert "sw_thermal" not in _reasons(nvml, handle)
    assert nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) == gpu.profile.max_sm_clock_mhz


def test_external_slowdown_forces_clocks_down_with_power_brake_bits():
    clock, nvml, handle, gpu = _host("H100-80GB")
    gpu.load(1.0)
    gpu.slowdown = 0.7
    clock.advance(SECOND_NS)
    assert {"hw_slowdown", "hw_power_brake"} <= set(_reasons(nvml, handle))
    assert nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) == round(gpu.profile.max_sm_clock_mhz * 0.3)


def test_memory_is_processes_plus_their_contexts():
    _clock, nvml, handle, gpu = _host("L4")
    gib = 1024**3
    gpu.set_process(4242, "python3", 3 * gib)
    gpu.set_process(777, "other", 5 * gib)
    info = nvml.nvmlDeviceGetMemoryInfo(handle)
    assert (info.used, info.total, info.free) == (8 * gib, gpu.profile.memory_total_bytes, info.total - 8 * gib)
    processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    assert [(p.pid, p.usedGpuMemory) for p in processes] == [(777, 5 * gib), (4242, 3 * gib)]
    gpu.remove_process(777)
    assert nvml.nvmlDeviceGetMemoryInfo(handle).used == 3 * gib
