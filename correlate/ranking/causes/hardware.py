"""Hardware faults on one GPU: uncorrectable ECC errors, falling off the bus, faulting kernels."""

from __future__ import annotations

from gpu_rca.correlate.ranking.causes.base import (
    ECC_XIDS,
    FAULT_XIDS,
    Context,
    Hypothesis,
    contrast,
    count_sentence,
    earliest,
    merge_groups,
    metric_evidence,
    precedes,
    where,
)
from gpu_rca.correlate.ranking.evidence import EvidenceList, pct
from gpu_rca.correlate.ranking.signals import GpuSignals, KernelXid
from gpu_rca.correlate.ranking.weights import MIN_STRENGTH
from gpu_rca.correlate.ranking.window import MINUTE_NS, SKEW_NS
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas import xid as x
from gpu_rca.schemas.causes import CUDA_KERNEL_FAULT, ECC_MEMORY_ERRORS, GPU_FALLEN_OFF_BUS


def _kernel(g: GpuSignals, codes: set[int]) -> list[KernelXid]:
    """Kernel XIDs of `codes` on this GPU that overlap its failures (from 10 min before to 1 min after)."""
    onset = g.onset_ns
    lasts = [grp.last_ns for grp in g.failed.values() if grp.last_ns is not None]
    if onset is None or not lasts:
        return []
    start, end = onset - 10 * MINUTE_NS, max(lasts) + SKEW_NS
    return [k for k in g.kernel if k.xid in codes and k.last_ns >= start and k.first_ns <= end]


def _kernel_evidence(g: GpuSignals, kernel: list[KernelXid], ev: EvidenceList) -> list[str]:
    """Evidence rows for the GPU's kernel XIDs, oldest first, and the summary phrases quoting them."""
    parts = []
    for k in sorted(kernel, key=lambda k: k.first_ns):
        meaning = x.xid_info(k.xid).meaning
        gauge = k.source == "dcgm"
        code = ev.add(
            "metric" if gauge else "kernel",
            f"{m.XID_ERRORS} changed to XID {k.xid} {meaning}" if gauge else f"XID {k.xid} {meaning}",
            k.xid,
            gpu_uuid=g.gpu_uuid,
            host=k.host,
            start_ns=k.first_ns,
            end_ns=k.last_ns,
        )
        if gauge:  # the gauge shows the last code only: how often it repeated is unknown
            parts.append(f"dcgm-exporter's last-XID gauge turned to {code} ({meaning}; no kernel log)")
            continue
        cnt = ev.add("count", f"kernel XID {k.xid} events", k.count, gpu_uuid=g.gpu_uuid, host=k.host)
        parts.append(f"the kernel logged XID {code} ({meaning}) {cnt} times")
    return parts


def _cuda_text(ctx: Context, ev: EvidenceList) -> list[str]:
    """The commonest CUDA error string this GPU's failures state, as evidence and a summary part."""
    g = ctx.g
    named = ctx.cuda_errors.get(g.gpu_uuid)
    if not named:
        return []
    error, count = named[0]
    n = ev.add("cuda_text", f"CUDA error: {error}", count, gpu_uuid=g.gpu_uuid, host=g.host)
    return [f"{n} of the failures' own texts say “CUDA error: {error}”"]


def ecc(ctx: Context) -> Hypothesis | None:
    """Uncorrectable memory errors on this GPU: ECC counters, XID 48/63/64/94/95."""
    g, sig = ctx.g, ctx.sig
    failures = merge_groups([g.failed.get(f) for f in ("cuda", "app", "lost")])
    if not failures.n:
        return None
    c = contrast(failures, "ecc", sig.baseline)
    kernel = _kernel(g, ECC_XIDS)
    dbe = g.metrics.get(m.ECC_DBE_VOL_TOTAL)
    strength = c.strength
    if kernel:
        strength = max(strength, 0.9)
    if dbe and dbe.z_up >= 1:
        strength = max(strength, 0.85)
    cuda_share = (g.failed["cuda"].n if "cuda" in g.failed else 0) / failures.n
    strength *= 0.6 + 0.4 * cuda_share
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = _kernel_evidence(g, kernel, ev)
    if c.failure_share > 0 or not kernel:
        sh = ev.add(
            "share",
            "failed requests with uncorrected ECC errors or memory XIDs in their window",
            pct(c.failure_share),
            baseline=pct(c.baseline_share),
            unit="%",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
            start_ns=g.first_seen_ns.get("ecc"),
        )
        parts.append(f"{sh} % of the failed requests saw ECC errors or memory XIDs (baseline {ev.base()} %)")
    metric_evidence(ev, g, m.ECC_DBE_VOL_TOTAL, min_z=1)
    first = earliest(g.first_seen_ns.get("ecc"), min((k.first_ns for k in kernel), default=None))
    parts += _cuda_text(ctx, ev)
    return Hypothesis(
        ECC_MEMORY_ERRORS,
        g.gpu_uuid,
        g.host,
        {"cuda": 1.0, "app": 0.6, "lost": 0.5},
        strength,
        ev,
        lambda n, e: (
            f"{count_sentence(n, e)} on {where(g)} after uncorrectable memory errors: " + "; ".join(parts) + "."
        ),
        feature="ecc",
        off_feature=0.8,
        precedes=precedes(first, failures.onset_ns),
    )


def fallen_off_bus(ctx: Context) -> Hypothesis | None:
    """The GPU was lost (XID 79): every later request on it fails."""
    g, sig = ctx.g, ctx.sig
    failures = merge_groups(list(g.failed.values()))
    if not failures.n:
        return None
    kernel = _kernel(g, {x.XID_FALLEN_OFF_BUS})
    lost = g.failed.get("lost")
    c = contrast(failures, "xid_lost", sig.baseline)
    strength = c.strength
    if kernel:
        strength = max(strength, 0.95)
    if lost and lost.n >= 2:
        strength = max(strength, 0.8)
    if strength < MIN_STRENGTH:
        return None
    event = earliest(min((k.first_ns for k in kernel), default=None), g.first_seen_ns.get("xid_lost"))
    ev = EvidenceList()
    parts = _kernel_evidence(g, kernel, ev)
    if lost:
        lv = ev.add(
            "count",
            f"failed requests with error.type={a.ERROR_GPU_LOST}",
            lost.n,
            gpu_uuid=g.gpu_uuid,
            host=g.host,
            start_ns=lost.first_ns,
            end_ns=lost.last_ns,
        )
        parts.append(f"{lv} requests failed with {a.ERROR_GPU_LOST}")
    if g.last_metric_ns is not None and event is not None and g.last_metric_ns >= event - SKEW_NS:
        pass
    elif g.last_metric_ns is not None:
        ev.add(
            "metric",
            "last metric sample",
            "metrics stopped",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
            start_ns=g.last_metric_ns,
        )
        parts.append("its metrics stopped")
    parts += _cuda_text(ctx, ev)
    return Hypothesis(
        GPU_FALLEN_OFF_BUS,
        g.gpu_uuid,
        g.host,
        {"lost": 1.0, "cuda": 0.9, "slow": 0.7, "app": 0.5, "oom": 0.3},
        strength,
        ev,
        lambda n, e: f"{count_sentence(n, e)} on {where(g)}, which fell off the bus: " + "; ".join(parts) + ".",
        feature=None,
        since_ns=None if event is None else event - SKEW_NS,
        precedes=precedes(event, failures.onset_ns),
    )


def kernel_fault(ctx: Context) -> Hypothesis | None:
    """A faulting kernel or driver error: CUDA errors with XID 13/31/43-style events and no hardware evidence."""
    g, sig = ctx.g, ctx.sig
    cuda = g.failed.get("cuda")
    if not cuda or not cuda.n:
        return None
    kernel = _kernel(g, FAULT_XIDS)
    c = contrast(cuda, "xid_fault", sig.baseline)
    strength = c.strength
    if kernel:
        strength = max(strength, 0.85)
    hardware = cuda.share("ecc") + (1.0 if _kernel(g, ECC_XIDS | {x.XID_FALLEN_OFF_BUS}) else 0.0)
    if not kernel and c.failure_share == 0 and hardware == 0:
        # CUDA errors on one GPU with no XID and no hardware evidence: a fault, weakly.
        strength = 0.35
    strength *= 1.0 - min(1.0, hardware) * 0.7
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = _kernel_evidence(g, kernel, ev)
    if c.failure_share > 0 or not kernel:
        sh = ev.add(
            "share",
            "CUDA-error failures with a kernel-fault XID in their window",
            pct(c.failure_share),
            baseline=pct(c.baseline_share),
            unit="%",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        parts.append(f"{sh} % of them carried a fault XID (baseline {ev.base()} %)")
    first = earliest(g.first_seen_ns.get("xid_fault"), min((k.first_ns for k in kernel), default=None))
    parts += _cuda_text(ctx, ev)
    return Hypothesis(
        CUDA_KERNEL_FAULT,
        g.gpu_uuid,
        g.host,
        {"cuda": 1.0, "app": 0.3},
        strength,
        ev,
        lambda n, e: f"{count_sentence(n, e)} with CUDA errors on {where(g)}: " + "; ".join(parts) + ".",
        feature="xid_fault",
        off_feature=0.8,
        precedes=precedes(first, cuda.onset_ns),
    )
