"""Memory: OOMs from the workload's own large inputs, or memory taken by another process."""

from __future__ import annotations

from gpu_rca.correlate.ranking.causes.base import (
    WORKLOAD_DRIVERS,
    Context,
    Hypothesis,
    best_driver,
    contrast,
    count_sentence,
    earliest,
    metric_evidence,
    precedes,
    where,
)
from gpu_rca.correlate.ranking.evidence import EvidenceList, gib, pct
from gpu_rca.correlate.ranking.stats import saturate
from gpu_rca.correlate.ranking.weights import LOCAL_FOOTPRINT_DISCOUNT, MIN_STRENGTH
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.causes import GPU_MEMORY_FOREIGN_PROCESS, GPU_OOM_LARGE_INPUTS


def _normally(ev: EvidenceList, unit: str) -> str:
    # No successes to compare with (a digest scoped to a GPU where every request failed): say nothing.
    return "" if ev.base() is None else f" (normally {ev.base()} {unit})"


def oom_large_inputs(ctx: Context) -> Hypothesis | None:
    """The workload's own memory: OOMs at full memory that concentrate on large inputs, no foreign memory.

    Its footprint: the same inputs fail wherever they run. OOMs that the other GPUs' failure rates for the
    same inputs do not predict (local to a GPU) and OOMs whose texts show the memory was there but
    fragmented are not the inputs' doing.
    """
    sig, family_drivers, fp = ctx.sig, ctx.family_drivers, ctx.fp
    oom = sig.fleet_failed.get("oom")
    if not oom or not oom.n:
        return None
    mem = contrast(oom, "mem_high", sig.baseline)
    driver = best_driver(family_drivers.get("oom", []), WORKLOAD_DRIVERS)
    foreign_share = oom.share("foreign_mem")
    d = driver.strength if driver else 0.0
    strength = 0.35 + 0.25 * mem.strength + 0.4 * d
    strength *= 1.0 - 0.8 * foreign_share
    strength *= 1.0 - 0.8 * oom.share("fragmented")
    local = fp.local_share
    if local is not None:
        strength *= 1.0 - LOCAL_FOOTPRINT_DISCOUNT * local
    if driver is None:
        strength *= 0.6
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = []
    if driver is not None:
        fs = ev.add(
            "driver",
            f"{driver.attribute}={driver.value}",
            pct(driver.failure_share),
            baseline=pct(driver.baseline_share),
            unit="%",
        )
        parts.append(f"{fs} % of them had {driver.attribute}={driver.value} against {ev.base()} % of successes")
    sh = ev.add(
        "share",
        "OOM failures with device memory >= 95 % used",
        pct(mem.failure_share),
        baseline=pct(mem.baseline_share),
        unit="%",
    )
    parts.append(f"{sh} % of them found device memory nearly full (baseline {ev.base()} %)")
    if (process_bytes := oom.medians.get("mem_process_bytes")) is not None:
        pv = ev.add(
            "stamp",
            a.MEMORY_PROCESS_MAX,
            gib(process_bytes),
            baseline=gib(sig.baseline.medians.get("mem_process_bytes")),
            unit="GiB",
        )
        parts.append(f"the service itself held {pv} GiB" + _normally(ev, "GiB"))
    if local is not None:
        ls = ev.add("footprint", "OOMs the same inputs on other GPUs do not predict", pct(local), unit="%")
        parts.append(f"{ls} % of them are not predicted by the same inputs' failure rate on the other GPUs")
    return Hypothesis(
        GPU_OOM_LARGE_INPUTS,
        None,
        None,
        {"oom": 1.0},
        strength,
        ev,
        lambda n, e: (
            f"{count_sentence(n, e, 'requests')} ran out of GPU memory on their own: " + "; ".join(parts) + "."
        ),
        feature="own_mem",
        off_feature=0.3,
        precedes=None,
    )


def foreign_process(ctx: Context) -> Hypothesis | None:
    """Another process's memory on this GPU: used memory up while the service's own stays flat."""
    g, sig, fp = ctx.g, ctx.sig, ctx.fp
    oom = g.failed.get("oom")
    if not oom or not oom.n:
        return None
    c = contrast(oom, "foreign_mem", sig.baseline)
    strength = c.strength
    fb = g.metrics.get(m.FB_USED)
    metric_first = None
    if fb and fb.z_up >= 3 and oom.medians.get("mem_process_bytes") is None:
        # No process stamp (old collector): a rise of used memory on this GPU alone is the best signal left.
        strength = max(strength, 0.6 * saturate(fb.z_up))
    if fb and fb.z_up >= 3:
        metric_first = fb.first_up_ns
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    sh = ev.add(
        "share",
        "OOM failures with >= 20 % of device memory held by other processes",
        pct(c.failure_share),
        baseline=pct(c.baseline_share),
        unit="%",
        gpu_uuid=g.gpu_uuid,
        host=g.host,
        start_ns=g.first_seen_ns.get("foreign_mem"),
        end_ns=oom.last_ns,
    )
    parts = [
        f"{sh} % of them found other processes holding at least a fifth of the GPU's memory (baseline {ev.base()} %)"
    ]
    other, other0 = oom.medians.get("other_bytes"), g.baseline.medians.get("other_bytes")
    if other is not None:
        ov = ev.add(
            "stamp",
            "gpu.memory.used.max - gpu.memory.process.max",
            gib(other),
            baseline=gib(other0),
            unit="GiB",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        parts.append(f"memory used by others {ov} GiB" + _normally(ev, "GiB"))
    proc, proc0 = oom.medians.get("mem_process_bytes"), g.baseline.medians.get("mem_process_bytes")
    if proc is not None:
        pv = ev.add(
            "stamp", a.MEMORY_PROCESS_MAX, gib(proc), baseline=gib(proc0), unit="GiB", gpu_uuid=g.gpu_uuid, host=g.host
        )
        parts.append(f"the service's own memory {pv} GiB" + _normally(ev, "GiB"))
    texts = oom.medians.get("oom_others_bytes")
    if texts:
        tv = ev.add(
            "oom_text",
            "memory other processes held, as the OOM texts state",
            gib(texts),
            unit="GiB",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        parts.append(f"the OOM texts name other processes holding {tv} GiB")
    fit = fp.local.get(g.gpu_uuid)
    if fit is not None and fit.observed:
        ls = ev.add(
            "footprint",
            "OOMs the same inputs on other GPUs do not predict",
            pct(fit.local_share),
            unit="%",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        parts.append(f"{ls} % of its OOMs are not predicted by the same inputs' failure rate on the other GPUs")
    metric_evidence(ev, g, m.FB_USED)
    return Hypothesis(
        GPU_MEMORY_FOREIGN_PROCESS,
        g.gpu_uuid,
        g.host,
        {"oom": 1.0, "slow": 0.5},
        strength,
        ev,
        lambda n, e: (
            f"{count_sentence(n, e, 'requests')} ran out of memory on {where(g)}, taken by another process: "
            + "; ".join(parts)
            + "."
        ),
        feature="foreign_mem",
        off_feature=0.5,
        precedes=precedes(earliest(g.first_seen_ns.get("foreign_mem"), metric_first), oom.onset_ns),
    )
