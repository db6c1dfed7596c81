"""The simulated NVML answers pynvml's calls with pynvml's shapes, units and errors."""

from __future__ import annotations

import time

import pynvml
import pytest

from gpu_rca import lab
from gpu_rca.schemas.pci import normalize_pci_bus_id

SECOND_NS = 1_000_000_000
FLEET = [{"host": "node-a", "gpus": 2, "model": "L4"}, {"host": "node-b", "gpus": 1, "model": "RTX-4090"}]


def test_calls_before_init_raise_uninitialized():
    nvml = lab.simulated_nvml(FLEET)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()


def test_identity_and_return_shapes_match_pynvml():
    nvml = lab.simulated_nvml(FLEET, host="node-a")
    nvml.nvmlInit()
    assert nvml.nvmlDeviceGetCount() == 2
    assert isinstance(nvml.nvmlSystemGetDriverVersion(), str)
    uuids = set()
    for index in range(2):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        assert isinstance(uuid, str) and uuid.startswith("GPU-") and len(uuid) == 40
        uuids.add(uuid)
        assert nvml.nvmlDeviceGetIndex(handle) == index
        assert nvml.nvmlDeviceGetName(handle) == "NVIDIA L4"
        pci = nvml.nvmlDeviceGetPciInfo(handle)
        assert isinstance(pci, pynvml.nvmlPciInfo_t)
        assert isinstance(pci.busId, str) and len(pci.busId) == 16
        assert normalize_pci_bus_id(pci.busId).startswith("0000:")
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        assert isinstance(memory, pynvml.c_nvmlMemory_t)
        assert memory.total == 23034 * 1024 * 1024
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
        assert isinstance(util, pynvml.c_nvmlUtilization_t) and util.gpu == 0
        assert 10_000 <= nvml.nvmlDeviceGetPowerUsage(handle) <= 72_000  # mW
        assert nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle) == 72_000
        assert nvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM) == 2040
        assert (
            nvml.nvmlDeviceGetTotalEccErrors(
                handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
            )
            == 0
        )
    assert len(uuids) == 2
    assert nvml.NVML_CLOCK_SM == pynvml.NVML_CLOCK_SM
    assert nvml.NVMLError_GpuIsLost is pynvml.NVMLError_GpuIsLost


def test_same_seed_same_uuids_and_hosts_are_separate():
    a = lab.simulated_nvml(FLEET, host="node-b", seed=3)
    b = lab.simulated_nvml(FLEET, host="node-b", seed=3)
    for nvml in (a, b):
        nvml.nvmlInit()
    handle_a, handle_b = a.nvmlDeviceGetHandleByIndex(0), b.nvmlDeviceGetHandleByIndex(0)
    assert a.nvmlDeviceGetUUID(handle_a) == b.nvmlDeviceGetUUID(handle_b)
    assert a.nvmlDeviceGetCount() == 1
    assert a.nvmlDeviceGetName(handle_a) == "NVIDIA GeForce RTX 4090"
    with pytest.raises(pynvml.NVMLError_NotSupported):  # GeForce: no ECC
        a.nvmlDeviceGetTotalEccErrors(handle_a, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC)


def test_follows_wall_clock_time_without_a_clock():
    nvml = lab.simulated_nvml(FLEET)
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.devices[0].load(1.0)
    deadline = time.monotonic() + 5
    while nvml.nvmlDeviceGetUtilizationRates(handle).gpu < 10:
        assert time.monotonic() < deadline, "utilisation never rose with wall-clock time"
        time.sleep(0.05)


def test_xid_events_arrive_through_the_event_api_and_a_lost_gpu_raises_gpu_is_lost():
    clock = lab.VirtualClock(1_700_000_000 * SECOND_NS)
    nvml = lab.simulated_nvml(FLEET, clock=clock.now_ns)
    nvml.nvmlInit()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(2)]
    events = nvml.nvmlEventSetCreate()
    for handle in handles:
        nvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, events)
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait(events, 100)
    gpu = nvml.devices[1]
    gpu.record_xid(clock.now_ns() + SECOND_NS, 79, "GPU has fallen off the bus.", None, None)
    gpu.lost_at_ns = clock.now_ns() + SECOND_NS
    with pytest.raises(pynvml.NVMLError_Timeout):  # not yet happened
        nvml.nvmlEventSetWait(events, 100)
    clock.advance(2 * SECOND_NS)
    event = nvml.nvmlEventSetWait(events, 100)
    assert (event.eventType, event.eventData) == (pynvml.nvmlEventTypeXidCriticalError, 79)
    assert nvml.nvmlDeviceGetUUID(event.device) == gpu.uuid
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetTemperature(handles[1], pynvml.NVML_TEMPERATURE_GPU)
    assert nvml.nvmlDeviceGetTemperature(handles[0], pynvml.NVML_TEMPERATURE_GPU) > 0
    nvml.nvmlEventSetFree(events)
    nvml.nvmlShutdown()


def test_field_values_answer_each_field_with_its_own_return_code_and_timestamp():
    clock_ns = [1_767_225_600 * SECOND_NS]
    nvml = lab.simulated_nvml(FLEET, clock=lambda: clock_ns[0])
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)  # an L4: ECC memory
    nvml.devices[0].load(0.8)
    clock_ns[0] += 3 * SECOND_NS
    asked = [
        pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
        pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL,
        (pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL, 0),  # pynvml also takes (fieldId, scopeId)
        pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER,
        pynvml.NVML_FI_DEV_NVLINK_BANDWIDTH_C0_TOTAL,  # not answered by the lab: NotSupported, alone
    ]
    answers = nvml.nvmlDeviceGetFieldValues(handle, asked)
    assert [a.fieldId for a in answers] == [e[0] if isinstance(e, tuple) else e for e in asked]
    assert [a.nvmlReturn for a in answers] == [pynvml.NVML_SUCCESS] * 4 + [pynvml.NVML_ERROR_NOT_SUPPORTED]
    assert {a.timestamp for a in answers} == {clock_ns[0] // 1000}  # µs since 1970
    assert answers[0].valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    assert answers[0].value.ullVal == nvml.nvmlDeviceGetTotalEnergyConsumption(handle) > 0
    assert answers[1].value.ullVal == nvml.nvmlDeviceGetTotalEccErrors(handle, 0, 0)
    assert answers[2].value.ullVal == nvml.nvmlDeviceGetTotalEccErrors(handle, 1, 0)
    assert answers[3].value.uiVal == nvml.nvmlDeviceGetPcieReplayCounter(handle)


def test_field_values_of_a_gpu_without_ecc_say_not_supported_per_field():
    nvml = lab.simulated_nvml(FLEET, host="node-b")  # an RTX 4090: no ECC
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    ecc, energy = nvml.nvmlDeviceGetFieldValues(
        handle, [pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL, pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION]
    )
    assert (ecc.nvmlReturn, energy.nvmlReturn) == (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_SUCCESS)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetFieldValues("not a handle", [pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION])
