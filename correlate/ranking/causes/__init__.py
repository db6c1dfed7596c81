"""Cause hypotheses: domain knowledge turning per-GPU signals into candidate causes with evidence.

Each builder looks at one cause on one GPU (or the whole fleet) and returns a `Hypothesis`: which failure
families it can explain (the same `error.type` arises from several causes), how strong its evidence is
(0..1), whether that evidence precedes the failures, and the evidence itself. No single signal decides a
cause: strength combines the failure-vs-success contrast of span features, BARO metric anomalies, kernel
XIDs and, for workload causes, the drivers. `rank.py` then lets hypotheses compete for failed spans.
"""

from __future__ import annotations

from gpu_rca.correlate.ranking.causes.base import Hypothesis
from gpu_rca.correlate.ranking.causes.fleet import application, saturation
from gpu_rca.correlate.ranking.causes.hardware import ecc, fallen_off_bus, kernel_fault
from gpu_rca.correlate.ranking.causes.host import host_bottleneck
from gpu_rca.correlate.ranking.causes.leak import memory_leak
from gpu_rca.correlate.ranking.causes.memory import foreign_process, oom_large_inputs
from gpu_rca.correlate.ranking.causes.throttling import THROTTLE_CAUSES, throttle
from gpu_rca.correlate.ranking.drivers import DriverRow
from gpu_rca.correlate.ranking.footprint import Footprints
from gpu_rca.correlate.ranking.signals import Signals
from gpu_rca.correlate.ranking.window import SpanSet


def build(
    sig: Signals,
    family_drivers: dict[str, list[DriverRow]],
    spans: SpanSet,
    traffic: tuple[float, float] | None,
    fp: Footprints,
) -> list[Hypothesis]:
    """Every hypothesis with enough evidence, GPU by GPU and fleet-wide."""
    out: list[Hypothesis | None] = []
    for g in sig.gpus.values():
        if not g.n_failed:
            continue
        for cause in THROTTLE_CAUSES:
            out.append(throttle(cause, g, sig))
        out.append(foreign_process(g, sig, family_drivers, fp))
        out.append(memory_leak(g, sig, fp))
        out.append(ecc(g, sig))
        out.append(fallen_off_bus(g, sig))
        out.append(kernel_fault(g, sig))
    out.extend(host_bottleneck(sig))
    out.append(saturation(sig, traffic))
    out.append(oom_large_inputs(sig, family_drivers, fp))
    out.append(application(sig, family_drivers, spans))
    return [h for h in out if h is not None]


__all__ = ["Hypothesis", "build"]
