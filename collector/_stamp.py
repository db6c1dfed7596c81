"""The span stamps (docs/contracts.md §1): aggregates of a GPU's samples over a span's window, and the transitions inside it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from gpu_rca.collector._nvml import DeviceInfo, Sample
from gpu_rca.collector._ring import REDUCED_STAMPS, QuietWindow, RingWindow, reduce_samples, transition_between
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas.pci import normalize_pci_bus_id_or_keep as _normal_pci
from gpu_rca.schemas.throttle import decode_throttle_reasons

#: Stale when the newest sample in the window is older than this many sampling periods at the span's end.
STALE_PERIODS = 3


def identity(device: DeviceInfo, source: str, mig_instance_id: int | None = None) -> dict[str, Any]:
    """The stamps that hold for every span on this GPU: its identity (a MIG slice stamps its parent GPU plus
    the instance id), the telemetry source, and the GPU's constants (slowdown temperature, max SM clock).

    Built once per GPU by the collector and merged into each span's window stamps; never changed after."""
    attrs: dict[str, Any] = {
        A.GPU_INDEX: device.index,
        A.GPU_UUID: device.uuid,
        A.GPU_NAME: device.name,
        A.GPU_PCI_BUS_ID: _normal_pci(device.pci_bus_id),  # docs/contracts.md §2 (the exporter keeps NVML's form)
        A.TELEMETRY_SOURCE: source,
    }
    if mig_instance_id is not None:
        attrs[A.GPU_MIG_INSTANCE_ID] = mig_instance_id
    _put(attrs, A.TEMPERATURE_SLOWDOWN, device.slowdown_temp_c)
    _put(attrs, A.CLOCK_SM_MAX, device.max_sm_clock_mhz)
    return attrs


def _put(attrs: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        attrs[key] = value


@functools.lru_cache(maxsize=256)
def _reasons(mask: int) -> tuple[str, ...]:
    """The reasons a clock-event mask names (a GPU shows a handful of distinct masks)."""
    return tuple(decode_throttle_reasons(mask))


def aggregate(
    device: DeviceInfo,
    samples: list[Sample],
    end_ns: int,
    period_ns: int,
    window: RingWindow | None = None,
    static: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], int]]]:
    """RingWindow stamps and span events `(name, attributes, ts_ns)` for `samples` (the window, oldest first).

    Every value is a valid OTel attribute value as built (sequences are tuples), so it can be set unchecked.
    Counters (ECC) are deltas from the first sample; XIDs count only those read after the first sample,
    which precedes the span's start. Fields a GPU does not support are left out, never guessed.
    `window`: the ring's `window_stats` for the same window (reduced as samples arrived); computed from
    `samples` when absent. `static`: the GPU's `identity()` stamps, merged in (its constants alone when absent).
    """
    events: list[tuple[str, dict[str, Any], int]] = []
    if static is None:
        static = {}
        _put(static, A.TEMPERATURE_SLOWDOWN, device.slowdown_temp_c)
        _put(static, A.CLOCK_SM_MAX, device.max_sm_clock_mhz)
    if not samples:
        return {**static, _SAMPLES: 0, _STALE: True, _THROTTLE: (), _XID: ()}, events
    if window is None:
        window = samples, reduce_samples(samples), not any(map(transition_between, samples, samples[1:]))
    samples, reductions, quiet = window
    first, last = samples[0], samples[-1]
    stale = end_ns - last.ts_ns > STALE_PERIODS * period_ns
    attrs = {**static, _SAMPLES: len(samples), _STALE: stale}
    if None in reductions:  # a field some GPU or sample could not read: stamp what was read
        for key, value in zip(REDUCED_STAMPS, reductions):
            _put(attrs, key, value)
    else:  # the common case
        attrs.update(zip(REDUCED_STAMPS, reductions))
    if quiet:  # every mask is the first one's, and nothing happened inside the window
        mask = first.throttle_mask
        attrs[_THROTTLE] = _reasons(mask) if mask else ()
        attrs[_XID] = ()
    else:
        mask_union = 0
        for mask in {s.throttle_mask for s in samples}:
            if mask is not None:
                mask_union |= mask
        attrs[_THROTTLE] = _reasons(mask_union) if mask_union else ()
        xids: list[int] = []
        _transitions(samples, events, xids)
        attrs[_XID] = tuple(xids)
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


def _quiet_entries() -> list[tuple[str, str]]:
    """The quiet window's stamps as (name, expression), in `aggregate`'s order (see `_compile_quiet_stamps`)."""
    return [
        (_SAMPLES, "n"),
        (_STALE, f"end_ns - last.ts_ns > {STALE_PERIODS} * period_ns"),
        *((key, f"r{i}") for i, key in enumerate(REDUCED_STAMPS)),
        (_THROTTLE, "_reasons(mask) if mask else ()"),
        (_XID, "()"),
        (_POWER_LIMIT, "power_limit"),
        (_USED_START, "first.memory_used_bytes"),
        (_TOTAL, "total"),
        (_ECC_C, "ecc_c1 - ecc_c0"),
        (_ECC_U, "ecc_u1 - ecc_u0"),
    ]


def _compile_quiet_stamps() -> tuple[Callable[[QuietWindow, int, int], dict[str, Any] | None], WriteQuietStamps]:
    """`aggregate` for the common window (`Ring.quiet_window`: quiet, every reduced field read), two ways
    from one definition, each declining where the window's first or last sample lacks a field the stamps
    read from them (then `aggregate` decides):

    - `quiet_stamps(window, end_ns, period_ns)`: the same stamps, values and order as `aggregate` less the
      GPU's `identity()` (which the caller writes first, unchanged, rather than copying it into every
      span's dict), as one dict display with constant keys; None where it declines;
    - `write_quiet_stamps(store, identity, window, end_ns, period_ns, inflight_max)`: `identity`, the same
      stamps and `gpu.inflight.max` written straight into `store` (the SDK span's own attribute dict, under
      its locks), with no dict in between; False, writing nothing, where it declines. Building that dict and
      merging it into the span's cost about 1 µs of a stamp's 7.

    Generated from REDUCED_STAMPS, as `_ring` generates its range reduction: stamping is on every
    request's path, and building the dict key by key cost about as much as reading the window.
    """
    entries = _quiet_entries()
    names = ", ".join(f"r{i}" for i in range(len(REDUCED_STAMPS)))

    def check(declined: str) -> list[str]:
        return [
            f"    n, first, last, {names}, = window",
            "    power_limit = last.power_limit_w",
            "    total = last.memory_total_bytes",
            "    ecc_c0, ecc_u0, ecc_c1, ecc_u1 = first.ecc_corrected, first.ecc_uncorrected, last.ecc_corrected, last.ecc_uncorrected",
            "    if power_limit is None or not total or ecc_c0 is None or ecc_u0 is None or ecc_c1 is None or ecc_u1 is None:",
            f"        return {declined}",
            "    mask = first.throttle_mask",
        ]

    source = "\n".join(
        [
            "def quiet_stamps(window, end_ns, period_ns):",
            *check("None"),
            "    return {",
            *(f"        {key!r}: {value}," for key, value in entries),
            "    }",
            "",
            "def write_quiet_stamps(store, identity, window, end_ns, period_ns, inflight_max):",
            *check("False"),
            "    store.update(identity)",
            *(f"    store[{key!r}] = {value}" for key, value in entries),
            f"    store[{A.INFLIGHT_MAX!r}] = inflight_max",
            "    return True",
        ]
    )
    namespace: dict[str, Any] = {"_reasons": _reasons}
    exec(compile(source, f"<{__name__} quiet_stamps>", "exec"), namespace)
    as_dict: Callable[[QuietWindow, int, int], dict[str, Any] | None] = namespace["quiet_stamps"]
    write: WriteQuietStamps = namespace["write_quiet_stamps"]
    return as_dict, write


#: `(store, identity, window, end_ns, period_ns, inflight_max) -> written` (see `_compile_quiet_stamps`).
WriteQuietStamps = Callable[[dict[str, Any], dict[str, Any], QuietWindow, int, int, int], bool]


def _last(samples: list[Sample], field: str) -> Any:
    """The newest value of `field` that was read in the window, or None."""
    for sample in reversed(samples):
        value = getattr(sample, field)
        if value is not None:
            return value
    return None


_SAMPLES, _STALE, _THROTTLE, _XID = A.TELEMETRY_SAMPLES, A.TELEMETRY_STALE, A.THROTTLE_REASONS, A.XID
_SLOWDOWN, _SM_MAX, _POWER_LIMIT, _USED_START = (
    A.TEMPERATURE_SLOWDOWN,
    A.CLOCK_SM_MAX,
    A.POWER_LIMIT,
    A.MEMORY_USED_START,
)
_TOTAL, _ECC_C, _ECC_U = A.MEMORY_TOTAL, A.ECC_CORRECTED_DELTA, A.ECC_UNCORRECTED_DELTA


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


#: `aggregate`'s stamps less `identity()` (and no events: there are none) for a `Ring.quiet_window`: as a
#: dict, or written into a span's attribute dict (see `_compile_quiet_stamps`).
quiet_stamps, write_quiet_stamps = _compile_quiet_stamps()
#: How many attributes `write_quiet_stamps` writes besides the identity (`gpu.inflight.max` included).
QUIET_STAMP_COUNT = len(_quiet_entries()) + 1
