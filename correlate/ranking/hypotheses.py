"""Cause hypotheses: domain knowledge turning per-GPU signals into candidate causes with evidence.

Each builder looks at one cause on one GPU (or the whole fleet) and returns a `Hypothesis`: which failure
families it can explain (the same `error.type` arises from several causes), how strong its evidence is
(0..1), whether that evidence precedes the failures, and the evidence itself. No single signal decides a
cause: strength combines the failure-vs-success contrast of span features, BARO metric anomalies, kernel
XIDs and, for workload causes, the drivers. `rank.py` then lets hypotheses compete for failed spans.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas import attributes as a
from schemas import metrics as m
from schemas import xid as x

from correlate.ranking.drivers import DriverRow, significant
from correlate.ranking.evidence import EvidenceList, gib, pct, short_uuid
from correlate.ranking.signals import GpuSignals, Group, Signals
from correlate.ranking.stats import normalized_score, proportion_p_value, saturate
from correlate.ranking.window import MINUTE_NS, SKEW_NS, SpanSet

#: A hypothesis weaker than this is not a cause.
MIN_STRENGTH = 0.2
WORKLOAD_DRIVERS = frozenset(a.WORKLOAD_ATTRIBUTES)
#: Attributes that locate failures on hardware rather than describe the request.
PLACEMENT_DRIVERS = frozenset({a.GPU_UUID, a.GPU_NAME, a.HOST_NAME, a.K8S_NODE_NAME})
_ECC_XIDS = {c for c, info in x.XIDS_BY_CODE.items() if info.category == x.HARDWARE_MEMORY}
_FAULT_XIDS = {c for c, info in x.XIDS_BY_CODE.items() if info.category in (x.APPLICATION, x.DRIVER, x.FIRMWARE)}


@dataclass
class Hypothesis:
    """One candidate cause on one GPU (or fleet-wide when gpu_uuid is None)."""

    cause: str
    gpu_uuid: str | None
    host: str | None
    families: dict[str, float]
    strength: float
    evidence: EvidenceList
    describe: Callable[[int, EvidenceList], str]
    feature: str | None = None
    off_feature: float = 1.0
    since_ns: int | None = None
    precedes: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def timing(self) -> float:
        """Evidence that starts before the first failure outranks evidence that follows it."""
        return {True: 1.0, None: 0.9, False: 0.75}[self.precedes]


@dataclass(frozen=True)
class Contrast:
    """A span feature's share among failures against its share among successes."""

    failure_share: float
    baseline_share: float
    p_value: float

    @property
    def strength(self) -> float:
        """0..1: how much more often the feature comes with failures, weighted by its significance."""
        gap = max(0.0, self.failure_share - self.baseline_share)
        return gap * (0.4 + 0.6 * normalized_score(self.p_value))


def contrast(failures: Group, feature: str, baseline: Group) -> Contrast:
    """Compare a feature among failures with the fleet's successes."""
    hits = failures.features.get(feature, 0)
    ok_hits = baseline.features.get(feature, 0)
    p = proportion_p_value(hits, failures.n, ok_hits, baseline.n)
    return Contrast(failures.share(feature), baseline.share(feature), p)


def merge_groups(groups: list[Group]) -> Group:
    """Counts of several groups together (medians: the largest group's)."""
    groups = [g for g in groups if g and g.n]
    if not groups:
        return Group()
    big = max(groups, key=lambda g: g.n)
    features: dict[str, int] = {}
    for g in groups:
        for k, v in g.features.items():
            features[k] = features.get(k, 0) + v
    onsets = [g.onset_ns for g in groups if g.onset_ns is not None]
    firsts = [g.first_ns for g in groups if g.first_ns is not None]
    lasts = [g.last_ns for g in groups if g.last_ns is not None]
    return Group(
        sum(g.n for g in groups), features, dict(big.medians),
        min(firsts) if firsts else None, min(onsets) if onsets else None, max(lasts) if lasts else None,
    )


def _precedes(first_ns: int | None, onset_ns: int | None) -> bool | None:
    if first_ns is None or onset_ns is None:
        return None
    return first_ns <= onset_ns + SKEW_NS


def _earliest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _where(g: GpuSignals) -> str:
    return f"GPU {short_uuid(g.gpu_uuid)} on {g.host or 'an unknown host'}"


def _count_sentence(n: int, ev: EvidenceList, what: str = "failed requests") -> str:
    shown = ev.add("count", "failed_spans", n)
    return f"{shown} {what}"


# --- throttling: thermal, power cap, hardware slowdown ------------------------------------------------
_THROTTLE = {
    "thermal_throttling": ("thermal", "thermal throttling (sw_thermal/hw_thermal) or temperature at slowdown"),
    "power_capping": ("power_cap", "sw_power_cap while busy"),
    "hw_slowdown": ("slowdown", "hw_slowdown/hw_power_brake"),
}


def throttle(cause: str, g: GpuSignals, sig: Signals) -> Hypothesis | None:
    """Clocks cut on this GPU (for heat, at the power limit, or by an external slowdown) while requests timed out."""
    slow = g.failed.get("slow")
    if not slow or not slow.n:
        return None
    feature, label = _THROTTLE[cause]
    c = contrast(slow, feature, sig.baseline)
    clock_share = slow.share("clock_low")
    strength = c.strength * (0.7 + 0.3 * clock_share)
    ev = EvidenceList()
    ok = g.ok.medians
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
        lowered = (
            med.get("power_limit_w") is not None and ok.get("power_limit_w")
            and med["power_limit_w"] < 0.95 * ok["power_limit_w"]
        )
        if limit and limit.z_down >= 3:
            lowered = True
            metric_first = limit.first_down_ns
        if lowered:
            strength = min(1.0, strength + 0.15) if c.failure_share > 0.2 else strength
    if strength < MIN_STRENGTH:
        return None
    share = ev.add("share", f"failed requests with {label}", pct(c.failure_share),
                   baseline=pct(c.baseline_share), unit="%", gpu_uuid=g.gpu_uuid, host=g.host,
                   start_ns=first, end_ns=slow.last_ns)
    share_base = ev.base()
    parts = [f"{share} % of them ran with {label} (baseline {share_base} %)"]
    if cause == "thermal_throttling" and med.get("temp_c") is not None:
        t = ev.add("stamp", a.TEMPERATURE_MAX, med["temp_c"], baseline=ok.get("temp_c"), unit="Cel",
                   gpu_uuid=g.gpu_uuid, host=g.host)
        if med.get("slowdown_c") is not None:
            sd = ev.add("stamp", a.TEMPERATURE_SLOWDOWN, med["slowdown_c"], unit="Cel", gpu_uuid=g.gpu_uuid, host=g.host)
            parts.append(f"at {t} °C against a slowdown threshold of {sd} °C")
        else:
            parts.append(f"at {t} °C")
    if cause == "power_capping" and med.get("power_limit_w") is not None:
        lim = ev.add("stamp", a.POWER_LIMIT, med["power_limit_w"], baseline=ok.get("power_limit_w"), unit="W",
                     gpu_uuid=g.gpu_uuid, host=g.host)
        parts.append(f"power limit {lim} W (was {ev.base()} W)" if ev.base() is not None else f"power limit {lim} W")
        if med.get("power_w") is not None:
            pw = ev.add("stamp", a.POWER_MEAN, med["power_w"], baseline=ok.get("power_w"), unit="W",
                        gpu_uuid=g.gpu_uuid, host=g.host)
            parts.append(f"drawing {pw} W")
    if med.get("clock_min_mhz") is not None and med.get("clock_max_mhz"):
        ck = ev.add("stamp", a.CLOCK_SM_MIN, med["clock_min_mhz"], baseline=ok.get("clock_min_mhz"), unit="MHz",
                    gpu_uuid=g.gpu_uuid, host=g.host)
        mx = ev.add("stamp", a.CLOCK_SM_MAX, med["clock_max_mhz"], unit="MHz", gpu_uuid=g.gpu_uuid, host=g.host)
        parts.append(f"SM clock down to {ck} MHz of {mx} MHz")
    for metric in (m.GPU_TEMP, m.SM_CLOCK, m.ENFORCED_POWER_LIMIT, m.POWER_USAGE):
        _metric_evidence(ev, g, metric)
    onset = slow.onset_ns
    hyp = Hypothesis(
        cause, g.gpu_uuid, g.host, {"slow": 1.0, "cuda": 0.2}, strength, ev,
        lambda n, e: f"{_count_sentence(n, e)} on {_where(g)} while its clocks were cut: " + "; ".join(parts) + ".",
        feature=feature, off_feature=0.4, precedes=_precedes(_earliest(first, metric_first), onset),
    )
    return hyp


def _metric_evidence(ev: EvidenceList, g: GpuSignals, metric: str, min_z: float = 3.0) -> None:
    anomaly = g.metrics.get(metric)
    if anomaly is None:
        return
    if anomaly.z_up >= min_z:
        ev.add("metric", metric, anomaly.peak, baseline=anomaly.baseline, gpu_uuid=g.gpu_uuid, host=g.host,
               start_ns=anomaly.first_up_ns, end_ns=anomaly.last_up_ns, unit=m.METRICS_BY_NAME[metric].unit)
    elif anomaly.z_down >= min_z:
        ev.add("metric", metric, anomaly.trough, baseline=anomaly.baseline, gpu_uuid=g.gpu_uuid, host=g.host,
               start_ns=anomaly.first_down_ns, end_ns=anomaly.last_down_ns, unit=m.METRICS_BY_NAME[metric].unit)


# --- saturation -------------------------------------------------------------------------------------
def saturation(sig: Signals, traffic: tuple[float, float] | None) -> Hypothesis | None:
    """Busy GPUs, long queues and more requests in flight, with no memory or clock problem."""
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
    share = ev.add("share", "failed requests on a busy GPU (utilization >= 90 %) with no throttling",
                   pct(c.failure_share), baseline=pct(c.baseline_share), unit="%")
    parts = [f"{share} % of them ran on a busy GPU with no throttling (baseline {ev.base()} %)"]
    if med.get("util_pct") is not None:
        u = ev.add("stamp", a.UTILIZATION_MEAN, med["util_pct"], baseline=ok.get("util_pct"), unit="%")
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
    return Hypothesis(
        "compute_saturation", None, None, {"slow": 1.0}, strength, ev,
        lambda n, e: f"{_count_sentence(n, e)} timed out or ran slow on saturated GPUs: " + "; ".join(parts) + ".",
        feature="saturated", off_feature=0.35, precedes=None,
    )


# --- memory ------------------------------------------------------------------------------------------
def _best(rows: list[DriverRow], attributes: frozenset[str]) -> DriverRow | None:
    kept = [r for r in significant(rows, limit=50) if r.attribute in attributes and (r.lift or 10.0) >= 1.5]
    return kept[0] if kept else None


def oom_large_inputs(sig: Signals, family_drivers: dict[str, list[DriverRow]]) -> Hypothesis | None:
    """The workload's own memory: OOMs at full memory that concentrate on large inputs, no foreign memory."""
    oom = sig.fleet_failed.get("oom")
    if not oom or not oom.n:
        return None
    mem = contrast(oom, "mem_high", sig.baseline)
    driver = _best(family_drivers.get("oom", []), WORKLOAD_DRIVERS)
    foreign_share = oom.share("foreign_mem")
    d = driver.strength if driver else 0.0
    strength = 0.35 + 0.25 * mem.strength + 0.4 * d
    strength *= 1.0 - 0.8 * foreign_share
    if driver is None:
        strength *= 0.6
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = []
    if driver is not None:
        fs = ev.add("driver", f"{driver.attribute}={driver.value}", pct(driver.failure_share),
                    baseline=pct(driver.baseline_share), unit="%")
        parts.append(f"{fs} % of them had {driver.attribute}={driver.value} against {ev.base()} % of successes")
    sh = ev.add("share", "OOM failures with device memory >= 95 % used", pct(mem.failure_share),
                baseline=pct(mem.baseline_share), unit="%")
    parts.append(f"{sh} % of them found device memory nearly full (baseline {ev.base()} %)")
    if oom.medians.get("mem_process_bytes") is not None:
        pv = ev.add("stamp", a.MEMORY_PROCESS_MAX, gib(oom.medians["mem_process_bytes"]),
                    baseline=gib(sig.baseline.medians.get("mem_process_bytes")), unit="GiB")
        parts.append(f"the service itself held {pv} GiB (normally {ev.base()} GiB)")
    return Hypothesis(
        "gpu_oom_large_inputs", None, None, {"oom": 1.0}, strength, ev,
        lambda n, e: f"{_count_sentence(n, e, 'requests')} ran out of GPU memory on their own: " + "; ".join(parts) + ".",
        feature="own_mem", off_feature=0.3, precedes=None,
    )


def foreign_process(g: GpuSignals, sig: Signals, family_drivers: dict[str, list[DriverRow]]) -> Hypothesis | None:
    """Another process's memory on this GPU: used memory up while the service's own stays flat."""
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
    sh = ev.add("share", "OOM failures with >= 20 % of device memory held by other processes", pct(c.failure_share),
                baseline=pct(c.baseline_share), unit="%", gpu_uuid=g.gpu_uuid, host=g.host,
                start_ns=g.first_seen_ns.get("foreign_mem"), end_ns=oom.last_ns)
    parts = [f"{sh} % of them found other processes holding at least a fifth of the GPU's memory (baseline {ev.base()} %)"]
    other, other0 = oom.medians.get("other_bytes"), g.ok.medians.get("other_bytes")
    if other is not None:
        ov = ev.add("stamp", "gpu.memory.used.max - gpu.memory.process.max", gib(other), baseline=gib(other0),
                    unit="GiB", gpu_uuid=g.gpu_uuid, host=g.host)
        parts.append(f"memory used by others {ov} GiB (normally {ev.base()} GiB)")
    proc, proc0 = oom.medians.get("mem_process_bytes"), g.ok.medians.get("mem_process_bytes")
    if proc is not None:
        pv = ev.add("stamp", a.MEMORY_PROCESS_MAX, gib(proc), baseline=gib(proc0), unit="GiB",
                    gpu_uuid=g.gpu_uuid, host=g.host)
        parts.append(f"the service's own memory {pv} GiB (normally {ev.base()} GiB)")
    _metric_evidence(ev, g, m.FB_USED)
    return Hypothesis(
        "gpu_memory_foreign_process", g.gpu_uuid, g.host, {"oom": 1.0, "slow": 0.5}, strength, ev,
        lambda n, e: f"{_count_sentence(n, e, 'requests')} ran out of memory on {_where(g)}, taken by another process: "
        + "; ".join(parts) + ".",
        feature="foreign_mem", off_feature=0.5,
        precedes=_precedes(_earliest(g.first_seen_ns.get("foreign_mem"), metric_first), oom.onset_ns),
    )


# --- hardware faults: ECC, fallen off the bus, kernel faults ----------------------------------------
def _kernel(g: GpuSignals, codes: set[int]) -> list:
    """Kernel XIDs of `codes` on this GPU that overlap its failures (from 10 min before to 1 min after)."""
    onset = g.onset_ns
    lasts = [grp.last_ns for grp in g.failed.values() if grp.last_ns is not None]
    if onset is None or not lasts:
        return []
    start, end = onset - 10 * MINUTE_NS, max(lasts) + SKEW_NS
    return [k for k in g.kernel if k.xid in codes and k.last_ns >= start and k.first_ns <= end]


def ecc(g: GpuSignals, sig: Signals) -> Hypothesis | None:
    """Uncorrectable memory errors on this GPU: ECC counters, XID 48/63/64/94/95."""
    failures = merge_groups([g.failed.get(f) for f in ("cuda", "app", "lost")])
    if not failures.n:
        return None
    c = contrast(failures, "ecc", sig.baseline)
    kernel = _kernel(g, _ECC_XIDS)
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
    parts = []
    for k in sorted(kernel, key=lambda k: k.first_ns):
        code = ev.add("kernel", f"XID {k.xid} {x.xid_info(k.xid).meaning}", k.xid, gpu_uuid=g.gpu_uuid, host=k.host,
                      start_ns=k.first_ns, end_ns=k.last_ns)
        cnt = ev.add("count", f"kernel XID {k.xid} events", k.count, gpu_uuid=g.gpu_uuid, host=k.host)
        parts.append(f"the kernel logged XID {code} ({x.xid_info(k.xid).meaning}) {cnt} times")
    if c.failure_share > 0 or not kernel:
        sh = ev.add("share", "failed requests with uncorrected ECC errors or memory XIDs in their window",
                    pct(c.failure_share), baseline=pct(c.baseline_share), unit="%", gpu_uuid=g.gpu_uuid, host=g.host,
                    start_ns=g.first_seen_ns.get("ecc"))
        parts.append(f"{sh} % of the failed requests saw ECC errors or memory XIDs (baseline {ev.base()} %)")
    _metric_evidence(ev, g, m.ECC_DBE_VOL_TOTAL, min_z=1)
    first = _earliest(g.first_seen_ns.get("ecc"), min((k.first_ns for k in kernel), default=None))
    return Hypothesis(
        "ecc_memory_errors", g.gpu_uuid, g.host, {"cuda": 1.0, "app": 0.6, "lost": 0.5}, strength, ev,
        lambda n, e: f"{_count_sentence(n, e)} on {_where(g)} after uncorrectable memory errors: "
        + "; ".join(parts) + ".",
        feature="ecc", off_feature=0.8, precedes=_precedes(first, failures.onset_ns),
    )


def fallen_off_bus(g: GpuSignals, sig: Signals) -> Hypothesis | None:
    """The GPU was lost (XID 79): every later request on it fails."""
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
    event = _earliest(min((k.first_ns for k in kernel), default=None), g.first_seen_ns.get("xid_lost"))
    ev = EvidenceList()
    parts = []
    for k in kernel:
        code = ev.add("kernel", f"XID {k.xid} {x.xid_info(k.xid).meaning}", k.xid, gpu_uuid=g.gpu_uuid, host=k.host,
                      start_ns=k.first_ns, end_ns=k.last_ns)
        parts.append(f"the kernel logged XID {code} (GPU has fallen off the bus)")
    if lost:
        lv = ev.add("count", f"failed requests with error.type={a.ERROR_GPU_LOST}", lost.n, gpu_uuid=g.gpu_uuid,
                    host=g.host, start_ns=lost.first_ns, end_ns=lost.last_ns)
        parts.append(f"{lv} requests failed with {a.ERROR_GPU_LOST}")
    if g.last_metric_ns is not None and event is not None and g.last_metric_ns >= event - SKEW_NS:
        pass
    elif g.last_metric_ns is not None:
        ev.add("metric", "last metric sample", "metrics stopped", gpu_uuid=g.gpu_uuid, host=g.host,
               start_ns=g.last_metric_ns)
        parts.append("its metrics stopped")
    return Hypothesis(
        "gpu_fallen_off_bus", g.gpu_uuid, g.host, {"lost": 1.0, "cuda": 0.9, "slow": 0.7, "app": 0.5, "oom": 0.3},
        strength, ev,
        lambda n, e: f"{_count_sentence(n, e)} on {_where(g)}, which fell off the bus: " + "; ".join(parts) + ".",
        feature=None, since_ns=None if event is None else event - SKEW_NS, precedes=_precedes(event, failures.onset_ns),
    )


def kernel_fault(g: GpuSignals, sig: Signals) -> Hypothesis | None:
    """A faulting kernel or driver error: CUDA errors with XID 13/31/43-style events and no hardware evidence."""
    cuda = g.failed.get("cuda")
    if not cuda or not cuda.n:
        return None
    kernel = _kernel(g, _FAULT_XIDS)
    c = contrast(cuda, "xid_fault", sig.baseline)
    strength = c.strength
    if kernel:
        strength = max(strength, 0.85)
    hardware = cuda.share("ecc") + (1.0 if _kernel(g, _ECC_XIDS | {x.XID_FALLEN_OFF_BUS}) else 0.0)
    if not kernel and c.failure_share == 0 and hardware == 0:
        # CUDA errors on one GPU with no XID and no hardware evidence: a fault, weakly.
        strength = 0.35
    strength *= 1.0 - min(1.0, hardware) * 0.7
    if strength < MIN_STRENGTH:
        return None
    ev = EvidenceList()
    parts = []
    for k in sorted(kernel, key=lambda k: k.first_ns):
        code = ev.add("kernel", f"XID {k.xid} {x.xid_info(k.xid).meaning}", k.xid, gpu_uuid=g.gpu_uuid, host=k.host,
                      start_ns=k.first_ns, end_ns=k.last_ns)
        cnt = ev.add("count", f"kernel XID {k.xid} events", k.count, gpu_uuid=g.gpu_uuid, host=k.host)
        parts.append(f"the kernel logged XID {code} ({x.xid_info(k.xid).meaning}) {cnt} times")
    if c.failure_share > 0 or not kernel:
        sh = ev.add("share", "CUDA-error failures with a kernel-fault XID in their window", pct(c.failure_share),
                    baseline=pct(c.baseline_share), unit="%", gpu_uuid=g.gpu_uuid, host=g.host)
        parts.append(f"{sh} % of them carried a fault XID (baseline {ev.base()} %)")
    first = _earliest(g.first_seen_ns.get("xid_fault"), min((k.first_ns for k in kernel), default=None))
    return Hypothesis(
        "cuda_kernel_fault", g.gpu_uuid, g.host, {"cuda": 1.0, "app": 0.3}, strength, ev,
        lambda n, e: f"{_count_sentence(n, e)} with CUDA errors on {_where(g)}: " + "; ".join(parts) + ".",
        feature="xid_fault", off_feature=0.8, precedes=_precedes(first, cuda.onset_ns),
    )


# --- application --------------------------------------------------------------------------------------
def application(sig: Signals, family_drivers: dict[str, list[DriverRow]], spans: SpanSet) -> Hypothesis | None:
    """Failures with no GPU correlation: exceptions concentrated on a model, version or code path."""
    app = sig.fleet_failed.get("app")
    if not app or not app.n:
        return None
    rows = family_drivers.get("app", [])
    driver = next((r for r in significant(rows, limit=50) if r.attribute not in PLACEMENT_DRIVERS), None)
    placed = next((r for r in significant(rows, limit=50) if r.attribute in PLACEMENT_DRIVERS), None)
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
        fs = ev.add("driver", f"{top.attribute}={top.value}", pct(top.failure_share),
                    baseline=pct(top.baseline_share), unit="%")
        parts.append(f"{fs} % of them had {top.attribute}={top.value} against {ev.base()} % of successes")
    rv = ev.add("share", "requests failing with application exceptions", pct(rate), unit="%")
    parts.append(f"{rv} % of all requests failed this way, with normal GPU telemetry")
    return Hypothesis(
        "application_error", None, None, {"app": 1.0, "cuda": 0.25, "slow": 0.1, "oom": 0.1, "lost": 0.05},
        strength, ev,
        lambda n, e: f"{_count_sentence(n, e)} raised application exceptions: " + "; ".join(parts) + ".",
        precedes=None,
    )


def build(sig: Signals, family_drivers: dict[str, list[DriverRow]], spans: SpanSet,
          traffic: tuple[float, float] | None) -> list[Hypothesis]:
    """Every hypothesis with enough evidence, GPU by GPU and fleet-wide."""
    out: list[Hypothesis | None] = []
    for g in sig.gpus.values():
        if not g.n_failed:
            continue
        for cause in _THROTTLE:
            out.append(throttle(cause, g, sig))
        out.append(foreign_process(g, sig, family_drivers))
        out.append(ecc(g, sig))
        out.append(fallen_off_bus(g, sig))
        out.append(kernel_fault(g, sig))
    out.append(saturation(sig, traffic))
    out.append(oom_large_inputs(sig, family_drivers))
    out.append(application(sig, family_drivers, spans))
    return [h for h in out if h is not None]
