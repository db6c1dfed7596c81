"""Contract 1's stamps: aggregates of a GPU's samples over a span's window, and the transitions inside it."""

from __future__ import annotations

import functools

from collections.abc import Sequence
from typing import Any

from collector._nvml import STAMP_COLUMN_NAMES, STAMP_COLUMNS, DeviceInfo, Sample
from schemas import attributes as A
from schemas.pci import normalize_pci_bus_id
from schemas.throttle import decode_throttle_reasons

#: Stale when the newest sample in the window is older than this many sampling periods at the span's end.
STALE_PERIODS = 3


@functools.lru_cache(maxsize=64)
def _normal_pci(value: str) -> str:
    """Contract 2's `dddd:bb:dd.f` for the span stamp (the exporter keeps NVML's form, as dcgm-exporter does)."""
    try:
        return normalize_pci_bus_id(value)
    except ValueError:
        return value


def identity(device: DeviceInfo, source: str, mig_instance_id: int | None = None) -> dict[str, Any]:
    """The GPU's identity stamps (a MIG slice stamps its parent GPU plus the instance id)."""
    attrs: dict[str, Any] = {
        A.GPU_INDEX: device.index,
        A.GPU_UUID: device.uuid,
        A.GPU_NAME: device.name,
        A.GPU_PCI_BUS_ID: _normal_pci(device.pci_bus_id),
        A.TELEMETRY_SOURCE: source,
    }
    if mig_instance_id is not None:
        attrs[A.GPU_MIG_INSTANCE_ID] = mig_instance_id
    return attrs


def _put(attrs: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        attrs[key] = value


_TEMP, _POWER, _USED, _PROC, _UTIL, _SM, _C_MASK, _C_XIDS = range(len(STAMP_COLUMN_NAMES))


def aggregate(
    device: DeviceInfo,
    samples: list[Sample],
    end_ns: int,
    period_ns: int,
    columns: Sequence[Sequence[Any]] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], int]]]:
    """Window stamps and span events `(name, attributes, ts_ns)` for `samples` (the window, oldest first).

    Every value is a valid OTel attribute value as built (sequences are tuples), so it can be set unchecked.
    Counters (ECC) are deltas from the first sample; XIDs count only those read after the first sample,
    which precedes the span's start. Fields a GPU does not support are left out, never guessed.
    `columns`: the window's STAMP_COLUMNS as the ring keeps them (computed from `samples` when absent).
    """
    events: list[tuple[str, dict[str, Any], int]] = []
    if not samples:
        attrs: dict[str, Any] = {A.TELEMETRY_SAMPLES: 0, A.TELEMETRY_STALE: True, A.THROTTLE_REASONS: (), A.XID: ()}
        _put(attrs, A.TEMPERATURE_SLOWDOWN, device.slowdown_temp_c)
        _put(attrs, A.CLOCK_SM_MAX, device.max_sm_clock_mhz)
        return attrs, events
    first, last = samples[0], samples[-1]
    cols = columns if columns is not None else tuple(zip(*map(STAMP_COLUMNS, samples)))
    temps, powers, used, procs, utils, clocks, masks, xid_col = cols
    attrs = {
        _SAMPLES: len(samples),
        _STALE: end_ns - last.ts_ns > STALE_PERIODS * period_ns,
    }
    # Built-ins over each column; a column holding a None (unsupported field, failed read) takes the slow path.
    if None in temps or None in powers or None in used or None in procs or None in utils or None in clocks:
        _reduce_sparse(attrs, cols)
    else:
        attrs[_TEMP_MAX] = max(temps)
        attrs[_POWER_MAX] = max(powers)
        attrs[_POWER_MEAN] = sum(powers) / len(powers)
        attrs[_USED_MAX] = max(used)
        attrs[_PROC_MAX] = max(procs)
        attrs[_UTIL_MEAN] = sum(utils) / len(utils)
        attrs[_UTIL_MAX] = max(utils)
        attrs[_SM_MIN] = min(clocks)
    mask_union = 0
    for mask in set(masks):
        if mask is not None:
            mask_union |= mask
    attrs[_THROTTLE] = tuple(decode_throttle_reasons(mask_union)) if mask_union else ()
    xids: list[int] = []
    if len(samples) > 1 and (
        masks.count(masks[0]) != len(masks)
        or first.ecc_corrected != last.ecc_corrected
        or first.ecc_uncorrected != last.ecc_uncorrected
        or any(xid_col)
    ):
        _transitions(samples, events, xids)
    attrs[_XID] = tuple(xids)
    if device.slowdown_temp_c is not None:
        attrs[_SLOWDOWN] = device.slowdown_temp_c
    if device.max_sm_clock_mhz is not None:
        attrs[_SM_MAX] = device.max_sm_clock_mhz
    power_limit = last.power_limit_w if last.power_limit_w is not None else _last(samples, "power_limit_w")
    if power_limit is not None:
        attrs[_POWER_LIMIT] = power_limit
    if first.memory_used_bytes is not None:
        attrs[_USED_START] = first.memory_used_bytes
    total = last.memory_total_bytes or device.memory_total_bytes
    if total is not None:
        attrs[_TOTAL] = total
    # A last sample that could not read a counter (a GPU's last words before it was lost) defers to
    # the newest one that did.
    ecc_c = last.ecc_corrected if last.ecc_corrected is not None else _last(samples, "ecc_corrected")
    if first.ecc_corrected is not None and ecc_c is not None:
        attrs[_ECC_C] = ecc_c - first.ecc_corrected
    ecc_u = last.ecc_uncorrected if last.ecc_uncorrected is not None else _last(samples, "ecc_uncorrected")
    if first.ecc_uncorrected is not None and ecc_u is not None:
        attrs[_ECC_U] = ecc_u - first.ecc_uncorrected
    return attrs, events


def _last(samples: list[Sample], field: str) -> Any:
    """The newest value of `field` that was read in the window, or None."""
    for sample in reversed(samples):
        value = getattr(sample, field)
        if value is not None:
            return value
    return None


def _reduce_sparse(attrs: dict[str, Any], cols: Sequence[Sequence[Any]]) -> None:
    """The reductions over the values that were read; a column never read gives no stamp."""
    for index, reducers in _REDUCERS:
        column = [v for v in cols[index] if v is not None]
        if column:
            for key, fn in reducers:
                attrs[key] = fn(column)


def _mean(values: Sequence[Any]) -> float:
    return sum(values) / len(values)


_SAMPLES, _STALE, _THROTTLE, _XID = A.TELEMETRY_SAMPLES, A.TELEMETRY_STALE, A.THROTTLE_REASONS, A.XID
_SLOWDOWN, _SM_MAX, _POWER_LIMIT, _USED_START = A.TEMPERATURE_SLOWDOWN, A.CLOCK_SM_MAX, A.POWER_LIMIT, A.MEMORY_USED_START
_TOTAL, _ECC_C, _ECC_U = A.MEMORY_TOTAL, A.ECC_CORRECTED_DELTA, A.ECC_UNCORRECTED_DELTA
_TEMP_MAX, _POWER_MAX, _POWER_MEAN, _USED_MAX = A.TEMPERATURE_MAX, A.POWER_MAX, A.POWER_MEAN, A.MEMORY_USED_MAX
_PROC_MAX, _UTIL_MEAN, _UTIL_MAX, _SM_MIN = A.MEMORY_PROCESS_MAX, A.UTILIZATION_MEAN, A.UTILIZATION_MAX, A.CLOCK_SM_MIN
#: column -> the stamps reduced from it (over the samples where it was read)
_REDUCERS: tuple[tuple[int, tuple[tuple[str, Any], ...]], ...] = (
    (_TEMP, ((A.TEMPERATURE_MAX, max),)),
    (_POWER, ((A.POWER_MAX, max), (A.POWER_MEAN, _mean))),
    (_USED, ((A.MEMORY_USED_MAX, max),)),
    (_PROC, ((A.MEMORY_PROCESS_MAX, max),)),
    (_UTIL, ((A.UTILIZATION_MEAN, _mean), (A.UTILIZATION_MAX, max))),
    (_SM, ((A.CLOCK_SM_MIN, min),)),
)


def _ecc(sample: Sample) -> tuple[int, int] | None:
    if sample.ecc_corrected is None or sample.ecc_uncorrected is None:
        return None
    return sample.ecc_corrected, sample.ecc_uncorrected


def _transitions(samples: list[Sample], events: list[tuple[str, dict[str, Any], int]], xids: list[int]) -> None:
    """Span events for what changed between consecutive samples (each change happened inside the span).
    A field that could not be read in some sample is compared with its last known value."""
    prev_mask = samples[0].throttle_mask
    prev_ecc = _ecc(samples[0])
    for s in samples[1:]:
        if s.throttle_mask is not None:
            if prev_mask is not None and s.throttle_mask != prev_mask:
                reasons = tuple(decode_throttle_reasons(s.throttle_mask))
                events.append((A.EVENT_THROTTLE, {A.THROTTLE_REASONS: reasons}, s.ts_ns))
            prev_mask = s.throttle_mask
        ecc = _ecc(s)
        if ecc is not None:
            if prev_ecc is not None and ecc != prev_ecc:
                delta = {A.ECC_CORRECTED_DELTA: ecc[0] - prev_ecc[0], A.ECC_UNCORRECTED_DELTA: ecc[1] - prev_ecc[1]}
                events.append((A.EVENT_ECC, delta, s.ts_ns))
            prev_ecc = ecc
        for code in s.xids:
            xids.append(code)
            events.append((A.EVENT_XID, {A.XID: code}, s.ts_ns))
