"""Clock-event (throttle) reason bits, one name per NVML bit (docs/contracts.md §1)."""

from __future__ import annotations

from collections.abc import Iterable

#: NVML clock-event reason bit -> the name gpu-rca writes in `gpu.throttle.reasons`.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
    0x200: "board_limit",
    0x400: "reliability",
}
_BITS_BY_NAME = {name: bit for bit, name in THROTTLE_REASONS.items()}

#: Reasons that cut clocks because of heat or power, as opposed to idling or a clock setting.
THERMAL_REASONS = frozenset({"sw_thermal", "hw_thermal"})
POWER_REASONS = frozenset({"sw_power_cap"})
SLOWDOWN_REASONS = frozenset({"hw_slowdown", "hw_power_brake"})


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event mask, lowest bit first; unknown bits as `bit_0x…`."""
    names = []
    bit = 1
    remaining = int(mask)
    while remaining:
        if remaining & bit:
            names.append(THROTTLE_REASONS.get(bit, f"bit_{bit:#x}"))
            remaining &= ~bit
        bit <<= 1
    return names


def encode_throttle_reasons(names: Iterable[str]) -> int:
    """The inverse of :func:`decode_throttle_reasons`."""
    mask = 0
    for name in names:
        if name in _BITS_BY_NAME:
            mask |= _BITS_BY_NAME[name]
        elif name.startswith("bit_0x"):
            mask |= int(name[4:], 16)
        else:
            raise ValueError(f"unknown throttle reason {name!r}")
    return mask
