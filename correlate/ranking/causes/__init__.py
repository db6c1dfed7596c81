"""Cause hypotheses: domain knowledge turning per-GPU signals into candidate causes with evidence.

Each builder looks at one cause on one GPU (or the whole fleet) and returns a `Hypothesis`: which failure
families it can explain (the same `error.type` arises from several causes), how strong its evidence is
(0..1), whether that evidence precedes the failures, and the evidence itself. No single signal decides a
cause: strength combines the failure-vs-success contrast of span features, BARO metric anomalies, kernel
XIDs and, for workload causes, the drivers. `rank.py` then lets hypotheses compete for failed spans.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from gpu_rca.correlate.ranking.causes.base import Builder, Context, Hypothesis
from gpu_rca.correlate.ranking.causes.fleet import application, saturation
from gpu_rca.correlate.ranking.causes.hardware import ecc, fallen_off_bus, kernel_fault
from gpu_rca.correlate.ranking.causes.host import host_bottleneck
from gpu_rca.correlate.ranking.causes.leak import memory_leak
from gpu_rca.correlate.ranking.causes.memory import foreign_process, oom_large_inputs
from gpu_rca.correlate.ranking.causes.throttling import power_cap, slowdown, thermal
from gpu_rca.correlate.ranking.drivers import DriverRow
from gpu_rca.correlate.ranking.footprint import Footprints
from gpu_rca.correlate.ranking.signals import GpuSignals, Signals
from gpu_rca.correlate.ranking.window import SpanSet
from gpu_rca.schemas import causes as c

Scope = Literal["gpu", "host", "fleet"]


@dataclass(frozen=True)
class Registration:
    """One cause of the catalog, where its builder looks (each GPU with failures, each host, the fleet), and it."""

    cause: str
    scope: Scope
    build: Builder


#: Every cause builder, once, with its catalog id (docs/contracts.md §4).
BUILDERS: tuple[Registration, ...] = (
    Registration(c.THERMAL_THROTTLING, "gpu", thermal),
    Registration(c.POWER_CAPPING, "gpu", power_cap),
    Registration(c.HW_SLOWDOWN, "gpu", slowdown),
    Registration(c.GPU_MEMORY_FOREIGN_PROCESS, "gpu", foreign_process),
    Registration(c.GPU_MEMORY_LEAK, "gpu", memory_leak),
    Registration(c.ECC_MEMORY_ERRORS, "gpu", ecc),
    Registration(c.GPU_FALLEN_OFF_BUS, "gpu", fallen_off_bus),
    Registration(c.CUDA_KERNEL_FAULT, "gpu", kernel_fault),
    Registration(c.HOST_BOTTLENECK, "host", host_bottleneck),
    Registration(c.COMPUTE_SATURATION, "fleet", saturation),
    Registration(c.GPU_OOM_LARGE_INPUTS, "fleet", oom_large_inputs),
    Registration(c.APPLICATION_ERROR, "fleet", application),
)


def build(
    sig: Signals,
    family_drivers: dict[str, list[DriverRow]],
    spans: SpanSet,
    traffic: tuple[float, float] | None,
    fp: Footprints,
    cuda_errors: dict[str, list[tuple[str, int]]] | None = None,
) -> list[Hypothesis]:
    """Every hypothesis with enough evidence: each registered builder on each GPU with failures, host, or the fleet."""
    errors = cuda_errors or {}
    fleet = Context(sig, family_drivers, spans, traffic, fp, cuda_errors=errors)
    failing = [g for g in sig.gpus.values() if g.n_failed]
    by_host: dict[str, list[GpuSignals]] = defaultdict(list)
    for g in failing:
        if g.host:
            by_host[g.host].append(g)
    contexts: dict[Scope, list[Context]] = {
        "gpu": [Context(sig, family_drivers, spans, traffic, fp, gpu=g, cuda_errors=errors) for g in failing],
        "host": [
            Context(sig, family_drivers, spans, traffic, fp, host=h, host_gpus=tuple(gs)) for h, gs in by_host.items()
        ],
        "fleet": [fleet],
    }
    out: list[Hypothesis] = []
    for scope in ("gpu", "host", "fleet"):
        for ctx in contexts[scope]:
            for reg in BUILDERS:
                if reg.scope != scope:
                    continue
                hyp = reg.build(ctx)
                if hyp is not None:
                    if hyp.cause != reg.cause:
                        raise ValueError(f"builder for {reg.cause} returned a {hyp.cause} hypothesis")
                    out.append(hyp)
    return out


__all__ = ["BUILDERS", "Context", "Hypothesis", "Registration", "build"]
