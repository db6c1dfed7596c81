"""The host, not the GPU, limits the service: CPU preprocessing, data loading or host memory starve the GPU."""

from __future__ import annotations

import math
from functools import partial

from gpu_rca.correlate.ranking.causes.base import (
    Context,
    Hypothesis,
    count_sentence,
    latency_growth,
    latency_split,
    merge_groups,
)
from gpu_rca.correlate.ranking.evidence import EvidenceList, pct
from gpu_rca.correlate.ranking.weights import MIN_STRENGTH
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.causes import HOST_BOTTLENECK

#: The trace's non-GPU spans must take at least this many times longer than before: the time moved there.
MIN_HOST_GROWTH = 1.5
#: Features that put the slowness on the GPU itself; a host bottleneck needs them nearly absent.
GPU_FEATURES = ("thermal", "power_cap", "slowdown", "clock_low", "mem_high", "foreign_mem")


def host_bottleneck(ctx: Context) -> Hypothesis | None:
    """A host's slow requests whose preprocess/decode spans grew while its GPUs idled and stayed healthy.

    Never without traces that carry the non-GPU spans (no `other_ms` means no evidence) and never when the
    slow requests ran with cut clocks, heat or full memory. The hypothesis covers every GPU of the host.
    """
    host = ctx.host
    gpus = [g for g in ctx.host_gpus if g.failed.get("slow") and g.failed["slow"].n]
    if host is None or not gpus:
        return None
    slow = merge_groups([g.failed["slow"] for g in gpus])
    base = merge_groups([g.baseline for g in gpus])
    growth = latency_growth(slow, base, "other_ms")
    if growth is None or growth < MIN_HOST_GROWTH:
        return None
    gpu_share = max(slow.share(f) for f in GPU_FEATURES)
    util, util0 = slow.medians.get("util_pct"), base.medians.get("util_pct")
    idle = util is not None and util0 is not None and util < 0.9 * util0
    strength = min(1.0, math.log2(growth) / 2) * (1.0 - gpu_share) * (1.0 if idle else 0.6)
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = []
    if util is not None:
        u = ev.add("stamp", a.UTILIZATION_MEAN, util, baseline=util0, unit="%", host=host)
        parts.append(f"GPU utilization {u} % (normally {ev.base()} %)")
    shown = ev.add("share", "failed requests with cut clocks, heat or full memory", pct(gpu_share), unit="%")
    parts.append(f"{shown} % of them ran with cut clocks, heat or full memory")
    split = latency_split(ev, slow, base)
    if split:
        parts.append(split)
    text = "; ".join(parts)
    # Host-scoped: no GPU, the host named; it claims the slow failures of every GPU on that host.
    return Hypothesis(
        HOST_BOTTLENECK,
        None,
        host,
        {"slow": 1.0},
        strength,
        ev,
        partial(_describe, host, text),
        precedes=None,
    )


def _describe(host: str, text: str, n: int, ev: EvidenceList) -> str:
    return f"{count_sentence(n, ev)} on host {host} waited for the host, not the GPU: {text}."
