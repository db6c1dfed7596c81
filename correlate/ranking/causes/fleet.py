"""Fleet-wide causes: compute saturation and application errors."""

from __future__ import annotations

import math

from gpu_rca.correlate.ranking.causes.base import (
    PLACEMENT_DRIVERS,
    Context,
    Hypothesis,
    contrast,
    count_sentence,
    latency_split,
)
from gpu_rca.correlate.ranking.drivers import significant
from gpu_rca.correlate.ranking.evidence import EvidenceList, pct
from gpu_rca.correlate.ranking.stats import DRIVER_P_THRESHOLD
from gpu_rca.correlate.ranking.weights import MIN_STRENGTH
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.causes import APPLICATION_ERROR, COMPUTE_SATURATION


def saturation(ctx: Context) -> Hypothesis | None:
    """Busy GPUs, long queues and more requests in flight, with no memory or clock problem."""
    sig, traffic = ctx.sig, ctx.traffic
    slow = sig.fleet_failed.get("slow")
    if not slow or not slow.n:
        return None
    c = contrast(slow, "saturated", sig.baseline)
    med, ok = slow.medians, sig.baseline.medians
    boosts = []
    q, q0 = med.get("queue_ms"), ok.get("queue_ms")
    if q is not None and q0 is not None:
        boosts.append(min(1.0, math.log2(max(q, 1.0) / max(q0, 1.0)) / 4))
    i, i0 = med.get("inflight"), ok.get("inflight")
    if i is not None and i0:
        boosts.append(min(1.0, max(0.0, (i / i0 - 1.0))))
    if traffic and traffic[1] > 0:
        boosts.append(min(1.0, max(0.0, (traffic[0] / traffic[1] - 1.0))))
    strength = c.strength * (0.5 + 0.5 * max(boosts, default=0.0))
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    share = ev.add(
        "share",
        "failed requests on a busy GPU (utilization >= 90 %) with no throttling",
        pct(c.failure_share),
        baseline=pct(c.baseline_share),
        unit="%",
    )
    parts = [f"{share} % of them ran on a busy GPU with no throttling (baseline {ev.base()} %)"]
    if (util_pct := med.get("util_pct")) is not None:
        u = ev.add("stamp", a.UTILIZATION_MEAN, util_pct, baseline=ok.get("util_pct"), unit="%")
        parts.append(f"utilization {u} %")
    if q is not None:
        qv = ev.add("stamp", a.QUEUE_MS, q, baseline=q0, unit="ms")
        parts.append(f"queue time {qv} ms (normally {ev.base()} ms)" if ev.base() is not None else f"queue {qv} ms")
    if i is not None:
        iv = ev.add("stamp", a.INFLIGHT_MAX, i, baseline=i0)
        parts.append(f"{iv} requests in flight (normally {ev.base()})" if ev.base() is not None else f"{iv} in flight")
    if traffic:
        tv = ev.add("traffic", "requests per minute", traffic[0], baseline=traffic[1])
        parts.append(f"{tv} requests per minute against {ev.base()} before")
    split = latency_split(ev, slow, sig.baseline)
    if split:
        parts.append(split)
    return Hypothesis(
        COMPUTE_SATURATION,
        None,
        None,
        {"slow": 1.0},
        strength,
        ev,
        lambda n, e: f"{count_sentence(n, e)} timed out or ran slow on saturated GPUs: " + "; ".join(parts) + ".",
        feature="saturated",
        off_feature=0.35,
        precedes=None,
    )


def application(ctx: Context) -> Hypothesis | None:
    """Failures with no GPU correlation: exceptions concentrated on a model, version or code path."""
    sig, family_drivers, spans = ctx.sig, ctx.family_drivers, ctx.spans
    app = sig.fleet_failed.get("app")
    if not app or not app.n:
        return None
    rows = family_drivers.get("app", [])
    # Background errors land on every attribute value by chance; with many values tested, one of them looks
    # significant at 0.02 by luck. Bonferroni: a driver must stay significant after multiplying by the tests.
    tests = max(1, len(rows))
    kept = [
        r for r in significant(rows, limit=50) if r.p_value * tests < DRIVER_P_THRESHOLD and (r.lift or 10.0) >= 1.5
    ]
    driver = next((r for r in kept if r.attribute not in PLACEMENT_DRIVERS), None)
    placed = next((r for r in kept if r.attribute in PLACEMENT_DRIVERS), None)
    rate = app.n / max(spans.total, 1)
    strength = 0.0
    if driver is not None:
        strength = 0.45 + 0.5 * driver.strength * driver.failure_share
    elif placed is not None:
        strength = 0.35 + 0.3 * placed.strength * placed.failure_share
    elif rate >= 0.03:
        # No attribute stands out, but far more failures than background noise: still the application.
        strength = 0.3
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = []
    top = driver or placed
    if top is not None:
        fs = ev.add(
            "driver", f"{top.attribute}={top.value}", pct(top.failure_share), baseline=pct(top.baseline_share), unit="%"
        )
        parts.append(f"{fs} % of them had {top.attribute}={top.value} against {ev.base()} % of successes")
    rv = ev.add("share", "requests failing with application exceptions", pct(rate), unit="%")
    parts.append(f"{rv} % of all requests failed this way, with normal GPU telemetry")
    return Hypothesis(
        APPLICATION_ERROR,
        None,
        None,
        {"app": 1.0, "cuda": 0.25, "slow": 0.1, "oom": 0.1, "lost": 0.05},
        strength,
        ev,
        lambda n, e: f"{count_sentence(n, e)} raised application exceptions: " + "; ".join(parts) + ".",
        precedes=None,
    )
