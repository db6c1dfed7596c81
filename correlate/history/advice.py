"""Plain advice from a GPU's record, only where the record supports it: RMA, reseat, drain, check cooling.

The rules (docs/gpus.md): **RMA** on an uncorrectable-memory XID that row remapping could not contain
(64, 95, 140), XID 48 (double-bit ECC) more than once, or dcgm-exporter's row-remap-failure gauge, quoting
the XID counts and days; **reseat** when the GPU fell off the bus (XID 79) more than once; **drain** after
repeated incidents blamed on a hardware cause; **check cooling** after a thermal incident or a long time at
or above the slowdown temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpu_rca.correlate.history.hardware import Hardware
from gpu_rca.correlate.history.incidents import Incident
from gpu_rca.schemas import causes as C
from gpu_rca.schemas.xid import XID_FALLEN_OFF_BUS

#: Row-remap failure / uncontained memory errors: one is enough to send the board back.
RMA_XIDS = (64, 95, 140)
#: Double-bit ECC: RMA when it repeats.
XID_DBE = 48
#: Causes that point at the GPU's hardware (not its workload or settings).
HARDWARE_CAUSES = (C.ECC_MEMORY_ERRORS, C.GPU_FALLEN_OFF_BUS, C.HW_SLOWDOWN, C.THERMAL_THROTTLING)
#: Incidents blamed on a hardware cause before `drain` is advised.
DRAIN_INCIDENTS = 2
#: Seconds at or above the slowdown temperature in the period before `check_cooling` is advised.
COOLING_SECONDS = 600.0

ACTIONS = ("rma", "reseat", "drain", "check_cooling")


@dataclass(frozen=True)
class Advice:
    """One action and the evidence for it, in a line."""

    action: str
    text: str


def advise(incidents: Sequence[Incident], hardware: Hardware) -> list[Advice]:
    """The actions the record supports, most drastic first; none when it supports none."""
    counts = hardware.xid_counts()
    advice: list[Advice] = []
    rma = [x for x in RMA_XIDS if counts.get(x)] + ([XID_DBE] if counts.get(XID_DBE, 0) > 1 else [])
    if rma or hardware.row_remap_failure:
        evidence = [_xid_evidence(hardware, x) for x in sorted(rma)]
        if hardware.row_remap_failure:
            evidence.append("row remapping failed (DCGM_FI_DEV_ROW_REMAP_FAILURE)")
        if hardware.ecc_uncorrected:
            evidence.append(f"{hardware.ecc_uncorrected} uncorrectable ECC errors")
        advice.append(Advice("rma", "RMA, with this evidence: " + "; ".join(evidence)))
    lost = counts.get(XID_FALLEN_OFF_BUS, 0)
    lost_incidents = sum(1 for i in incidents if C.GPU_FALLEN_OFF_BUS in i.causes)
    if lost > 1 or lost_incidents > 1:
        times = _xid_evidence(hardware, XID_FALLEN_OFF_BUS) if lost > 1 else f"{lost_incidents} incidents"
        advice.append(
            Advice("reseat", f"reseat it (and check its slot, riser and power cables): fell off the bus, {times}")
        )
    hardware_incidents = [i for i in incidents if any(c in HARDWARE_CAUSES for c in i.causes)]
    if len(hardware_incidents) >= DRAIN_INCIDENTS:
        named = _cause_counts(hardware_incidents, HARDWARE_CAUSES)
        advice.append(
            Advice("drain", f"drain it: {len(hardware_incidents)} incidents blamed on its hardware ({named})")
        )
    thermal = sum(1 for i in incidents if C.THERMAL_THROTTLING in i.causes)
    hot = hardware.seconds_above_slowdown or 0.0
    if thermal or hot >= COOLING_SECONDS:
        said = [f"{thermal} thermal incident{'s' if thermal != 1 else ''}"] if thermal else []
        if hot > 0:
            said.append(f"{hot / 60:.0f} min at or above its slowdown temperature")
        advice.append(Advice("check_cooling", "check cooling (fans, airflow, inlet temperature): " + ", ".join(said)))
    return advice


def _xid_evidence(hardware: Hardware, xid: int) -> str:
    days = [d for d in hardware.xid_days if d.xid == xid]
    total = sum(d.count for d in days)
    return f"XID {xid} ×{total} ({', '.join(d.day for d in days)})"


def _cause_counts(incidents: Sequence[Incident], only: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for incident in incidents:
        for cause in incident.causes:
            if cause in only:
                counts[cause] = counts.get(cause, 0) + 1
    return ", ".join(f"{cause} ×{n}" for cause, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


__all__ = ["ACTIONS", "Advice", "advise"]
