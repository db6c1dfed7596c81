"""Clocks cut on one GPU: for heat, at the power limit, or by an external slowdown."""

from __future__ import annotations

from gpu_rca.correlate.ranking.causes.base import (
    Context,
    Hypothesis,
    contrast,
    count_sentence,
    earliest,
    latency_split,
    metric_evidence,
    precedes,
    where,
)
from gpu_rca.correlate.ranking.evidence import EvidenceList, pct
from gpu_rca.correlate.ranking.signals import GpuSignals, Signals
from gpu_rca.correlate.ranking.stats import saturate
from gpu_rca.correlate.ranking.weights import MIN_STRENGTH
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.causes import HW_SLOWDOWN, POWER_CAPPING, THERMAL_THROTTLING

#: Throttling causes: the span feature that shows each, and how a summary names it.
THROTTLE_CAUSES = {
    THERMAL_THROTTLING: ("thermal", "thermal throttling (sw_thermal/hw_thermal) or temperature at slowdown"),
    POWER_CAPPING: ("power_cap", "sw_power_cap while busy"),
    HW_SLOWDOWN: ("slowdown", "hw_slowdown/hw_power_brake"),
}


def thermal(ctx: Context) -> Hypothesis | None:
    """Clocks cut for heat on this GPU."""
    return _throttle(THERMAL_THROTTLING, ctx.g, ctx.sig)


def power_cap(ctx: Context) -> Hypothesis | None:
    """Clocks cut at this GPU's power limit."""
    return _throttle(POWER_CAPPING, ctx.g, ctx.sig)


def slowdown(ctx: Context) -> Hypothesis | None:
    """Clocks forced down on this GPU by an external slowdown or power brake."""
    return _throttle(HW_SLOWDOWN, ctx.g, ctx.sig)


def _throttle(cause: str, g: GpuSignals, sig: Signals) -> Hypothesis | None:
    """Clocks cut on this GPU (for heat, at the power limit, or by an external slowdown) while requests timed out."""
    slow = g.failed.get("slow")
    if not slow or not slow.n:
        return None
    feature, label = THROTTLE_CAUSES[cause]
    c = contrast(slow, feature, sig.baseline)
    clock_share = slow.share("clock_low")
    strength = c.strength * (0.7 + 0.3 * clock_share)
    ev = EvidenceList()
    ok = g.baseline.medians
    med = slow.medians
    first = g.first_seen_ns.get(feature)
    metric_first = None
    if cause == "thermal_throttling":
        temp = g.metrics.get(m.GPU_TEMP)
        slowdown_c = med.get("slowdown_c") or ok.get("slowdown_c")
        # A warmer GPU under load is normal: heat counts only when it nears the slowdown threshold.
        if temp and temp.z_up >= 3 and slowdown_c is not None and temp.peak >= slowdown_c - 5:
            strength = max(strength, 0.7 * saturate(temp.z_up) * (0.5 + 0.5 * clock_share))
            metric_first = temp.first_up_ns
    elif cause == "power_capping":
        limit = g.metrics.get(m.ENFORCED_POWER_LIMIT)
        limit_now, limit_before = med.get("power_limit_w"), ok.get("power_limit_w")
        lowered = bool(limit_now is not None and limit_before and limit_now < 0.95 * limit_before)
        if limit and limit.z_down >= 3:
            lowered = True
            metric_first = limit.first_down_ns
        if lowered:
            strength = min(1.0, strength + 0.15) if c.failure_share > 0.2 else strength
    if strength < MIN_STRENGTH:
        return None
    share = ev.add(
        "share",
        f"failed requests with {label}",
        pct(c.failure_share),
        baseline=pct(c.baseline_share),
        unit="%",
        gpu_uuid=g.gpu_uuid,
        host=g.host,
        start_ns=first,
        end_ns=slow.last_ns,
    )
    share_base = ev.base()
    parts = [f"{share} % of them ran with {label} (baseline {share_base} %)"]
    if cause == "thermal_throttling" and (temp_c := med.get("temp_c")) is not None:
        t = ev.add(
            "stamp",
            a.TEMPERATURE_MAX,
            temp_c,
            baseline=ok.get("temp_c"),
            unit="Cel",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        if (slowdown_c := med.get("slowdown_c")) is not None:
            sd = ev.add("stamp", a.TEMPERATURE_SLOWDOWN, slowdown_c, unit="Cel", gpu_uuid=g.gpu_uuid, host=g.host)
            parts.append(f"at {t} °C against a slowdown threshold of {sd} °C")
        else:
            parts.append(f"at {t} °C")
    if cause == "power_capping" and (power_limit_w := med.get("power_limit_w")) is not None:
        lim = ev.add(
            "stamp",
            a.POWER_LIMIT,
            power_limit_w,
            baseline=ok.get("power_limit_w"),
            unit="W",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        was = ev.base()
        parts.append(f"power limit {lim} W (was {was} W)" if was is not None and was != lim else f"power limit {lim} W")
        if (power_w := med.get("power_w")) is not None:
            pw = ev.add(
                "stamp",
                a.POWER_MEAN,
                power_w,
                baseline=ok.get("power_w"),
                unit="W",
                gpu_uuid=g.gpu_uuid,
                host=g.host,
            )
            parts.append(f"drawing {pw} W")
    if (clock_min := med.get("clock_min_mhz")) is not None and (clock_max := med.get("clock_max_mhz")):
        ck = ev.add(
            "stamp",
            a.CLOCK_SM_MIN,
            clock_min,
            baseline=ok.get("clock_min_mhz"),
            unit="MHz",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        mx = ev.add("stamp", a.CLOCK_SM_MAX, clock_max, unit="MHz", gpu_uuid=g.gpu_uuid, host=g.host)
        share_of_max = ev.add(
            "ratio",
            "SM clock as a share of its max",
            pct(clock_min / clock_max),
            unit="%",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        parts.append(f"SM clock down to {ck} MHz of {mx} MHz ({share_of_max} % of max)")
    split = latency_split(ev, slow, g.baseline, g)
    if split:
        parts.append(split)
    for metric in (m.GPU_TEMP, m.SM_CLOCK, m.ENFORCED_POWER_LIMIT, m.POWER_USAGE):
        metric_evidence(ev, g, metric)
    onset = slow.onset_ns
    hyp = Hypothesis(
        cause,
        g.gpu_uuid,
        g.host,
        {"slow": 1.0, "cuda": 0.2},
        strength,
        ev,
        lambda n, e: f"{count_sentence(n, e)} on {where(g)} while its clocks were cut: " + "; ".join(parts) + ".",
        feature=feature,
        off_feature=0.4,
        precedes=precedes(earliest(first, metric_first), onset),
    )
    return hyp
