"""Contract 1's stamps: aggregates of a GPU's samples over a span's window, and the transitions inside it."""

from __future__ import annotations

from typing import Any

from collector._nvml import DeviceInfo, Sample
from schemas import attributes as A
from schemas.throttle import decode_throttle_reasons

#: Stale when the newest sample in the window is older than this many sampling periods at the span's end.
STALE_PERIODS = 3


def identity(device: DeviceInfo, source: str, mig_instance_id: int | None = None) -> dict[str, Any]:
    """The GPU's identity stamps (a MIG slice stamps its parent GPU plus the instance id)."""
    attrs: dict[str, Any] = {
        A.GPU_INDEX: device.index,
        A.GPU_UUID: device.uuid,
        A.GPU_NAME: device.name,
        A.GPU_PCI_BUS_ID: device.pci_bus_id,
        A.TELEMETRY_SOURCE: source,
    }
    if mig_instance_id is not None:
        attrs[A.GPU_MIG_INSTANCE_ID] = mig_instance_id
    return attrs


def _put(attrs: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        attrs[key] = value


def aggregate(
    device: DeviceInfo, samples: list[Sample], end_ns: int, period_ns: int
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], int]]]:
    """Window stamps and span events `(name, attributes, ts_ns)` for `samples` (the window, oldest first).

    Counters (ECC) are deltas from the first sample; XIDs count only those read after the first sample,
    which precedes the span's start. Fields a GPU does not support are left out, never guessed.
    """
    attrs: dict[str, Any] = {A.TELEMETRY_SAMPLES: len(samples)}
    _put(attrs, A.TEMPERATURE_SLOWDOWN, device.slowdown_temp_c)
    _put(attrs, A.CLOCK_SM_MAX, device.max_sm_clock_mhz)
    events: list[tuple[str, dict[str, Any], int]] = []
    if not samples:
        attrs[A.TELEMETRY_STALE] = True
        attrs[A.THROTTLE_REASONS] = []
        attrs[A.XID] = []
        return attrs, events
    first, last = samples[0], samples[-1]
    attrs[A.TELEMETRY_STALE] = end_ns - last.ts_ns > STALE_PERIODS * period_ns

    temp_max = power_max = used_max = proc_max = util_max = sm_min = None
    power_sum = util_sum = 0.0
    power_n = util_n = 0
    mask_union = 0
    xids: list[int] = []
    prev_mask = first.throttle_mask
    prev_ecc = (first.ecc_corrected, first.ecc_uncorrected)
    for i, s in enumerate(samples):
        if s.temperature_c is not None and (temp_max is None or s.temperature_c > temp_max):
            temp_max = s.temperature_c
        if s.power_w is not None:
            power_sum += s.power_w
            power_n += 1
            if power_max is None or s.power_w > power_max:
                power_max = s.power_w
        if s.memory_used_bytes is not None and (used_max is None or s.memory_used_bytes > used_max):
            used_max = s.memory_used_bytes
        if s.process_memory_bytes is not None and (proc_max is None or s.process_memory_bytes > proc_max):
            proc_max = s.process_memory_bytes
        if s.utilization_pct is not None:
            util_sum += s.utilization_pct
            util_n += 1
            if util_max is None or s.utilization_pct > util_max:
                util_max = s.utilization_pct
        if s.sm_clock_mhz is not None and (sm_min is None or s.sm_clock_mhz < sm_min):
            sm_min = s.sm_clock_mhz
        if s.throttle_mask is not None:
            mask_union |= s.throttle_mask
        if i == 0:
            continue
        # Transitions between the previous sample and this one happened inside the span.
        if s.throttle_mask is not None and s.throttle_mask != prev_mask:
            events.append((A.EVENT_THROTTLE, {A.THROTTLE_REASONS: decode_throttle_reasons(s.throttle_mask)}, s.ts_ns))
            prev_mask = s.throttle_mask
        ecc = (s.ecc_corrected, s.ecc_uncorrected)
        if ecc != prev_ecc and None not in ecc and None not in prev_ecc:
            events.append(
                (A.EVENT_ECC, {A.ECC_CORRECTED_DELTA: ecc[0] - prev_ecc[0], A.ECC_UNCORRECTED_DELTA: ecc[1] - prev_ecc[1]}, s.ts_ns)
            )
        prev_ecc = ecc
        for code in s.xids:
            xids.append(code)
            events.append((A.EVENT_XID, {A.XID: code}, s.ts_ns))

    _put(attrs, A.TEMPERATURE_MAX, temp_max)
    _put(attrs, A.POWER_MAX, power_max)
    if power_n:
        attrs[A.POWER_MEAN] = power_sum / power_n
    _put(attrs, A.POWER_LIMIT, last.power_limit_w)
    _put(attrs, A.MEMORY_USED_START, first.memory_used_bytes)
    _put(attrs, A.MEMORY_USED_MAX, used_max)
    _put(attrs, A.MEMORY_TOTAL, last.memory_total_bytes or device.memory_total_bytes)
    _put(attrs, A.MEMORY_PROCESS_MAX, proc_max)
    if util_n:
        attrs[A.UTILIZATION_MEAN] = util_sum / util_n
        attrs[A.UTILIZATION_MAX] = util_max
    _put(attrs, A.CLOCK_SM_MIN, sm_min)
    attrs[A.THROTTLE_REASONS] = decode_throttle_reasons(mask_union)
    if first.ecc_corrected is not None and last.ecc_corrected is not None:
        attrs[A.ECC_CORRECTED_DELTA] = last.ecc_corrected - first.ecc_corrected
    if first.ecc_uncorrected is not None and last.ecc_uncorrected is not None:
        attrs[A.ECC_UNCORRECTED_DELTA] = last.ecc_uncorrected - first.ecc_uncorrected
    attrs[A.XID] = xids
    return attrs, events
