"""The service's own GPU memory growing until it runs out: kept-alive tensors (a leak) or allocator fragmentation."""

from __future__ import annotations

from gpu_rca.correlate.ranking.causes.base import Context, Hypothesis, count_sentence, where
from gpu_rca.correlate.ranking.evidence import EvidenceList, gib, pct
from gpu_rca.correlate.ranking.weights import (
    FRAGMENTED_OOM_SHARE,
    LEAK_CLIMB_FLOOR,
    LEAK_CLIMB_SHARE,
    LEAK_GROWTH,
    LEAK_MIN_RISES,
    MIN_STRENGTH,
)
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import causes as c


def _clip(x: float) -> float:
    return max(0.0, min(1.0, x))


def memory_leak(ctx: Context) -> Hypothesis | None:
    """OOMs on a GPU whose service's own memory climbed minute after minute, or whose OOM texts show fragmentation."""
    g, fp = ctx.g, ctx.fp
    oom = g.failed.get("oom")
    if not oom or not oom.n:
        return None
    climb = fp.climbs.get(g.gpu_uuid)
    own, own0 = oom.medians.get("mem_process_bytes"), g.baseline.medians.get("mem_process_bytes")
    growth = own / own0 if own is not None and own0 else None
    climbing = 0.0
    if climb is not None and climb.rises >= LEAK_MIN_RISES:
        climbing = _clip((climb.share - LEAK_CLIMB_FLOOR) / (LEAK_CLIMB_SHARE - LEAK_CLIMB_FLOOR))
    grown = _clip((growth - 1.0) / (LEAK_GROWTH - 1.0)) if growth is not None else 0.5
    leak = 0.85 * climbing * (0.5 + 0.5 * grown)
    fragmented = oom.share("fragmented")
    frag = _clip(fragmented / FRAGMENTED_OOM_SHARE) * 0.9
    strength = max(leak, frag) * (1.0 - 0.8 * oom.share("foreign_mem"))
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = []
    if climb is not None and climb.rises:
        r = ev.add("climb", "minutes the service's own GPU memory rose", climb.rises, gpu_uuid=g.gpu_uuid, host=g.host)
        f = ev.add("climb", "minutes it fell (restarts)", climb.falls, gpu_uuid=g.gpu_uuid, host=g.host)
        parts.append(f"the service's own GPU memory rose in {r} minutes and fell in {f}")
    if own is not None:
        pv = ev.add(
            "stamp",
            a.MEMORY_PROCESS_MAX,
            gib(own) or 0.0,
            baseline=gib(own0),
            unit="GiB",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        parts.append(f"it held {pv} GiB at the OOMs" + ("" if ev.base() is None else f" (normally {ev.base()} GiB)"))
    if fragmented:
        fs = ev.add(
            "oom_text",
            "OOMs with reserved-but-unallocated memory >= the allocation tried",
            pct(fragmented),
            unit="%",
            gpu_uuid=g.gpu_uuid,
            host=g.host,
        )
        parts.append(f"{fs} % of the OOM texts show at least the size tried reserved but unallocated (fragmentation)")
        unalloc = oom.medians.get("oom_unallocated_bytes")
        if unalloc is not None:
            ub = ev.add(
                "oom_text",
                "reserved but unallocated",
                gib(unalloc) or 0.0,
                unit="GiB",
                gpu_uuid=g.gpu_uuid,
                host=g.host,
            )
            parts.append(f"median {ub} GiB reserved but unallocated")
    kind = "fragmentation of the caching allocator" if frag >= leak else "memory kept alive across requests"
    return Hypothesis(
        c.GPU_MEMORY_LEAK,
        g.gpu_uuid,
        g.host,
        {"oom": 1.0},
        strength,
        ev,
        lambda n, e: (
            f"{count_sentence(n, e, 'requests')} ran out of memory on {where(g)} as the service's own memory grew"
            f" ({kind}): " + "; ".join(parts) + "."
        ),
        feature="fragmented" if frag > leak else "own_mem",
        off_feature=0.6 if frag > leak else 0.5,
        precedes=None,
    )
