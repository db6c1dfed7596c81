"""What every cause hypothesis shares: the record, the failure-vs-baseline contrast, timing and prose helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gpu_rca.correlate.ranking.drivers import DriverRow, significant
from gpu_rca.correlate.ranking.evidence import EvidenceList, short_uuid
from gpu_rca.correlate.ranking.footprint import Footprints
from gpu_rca.correlate.ranking.signals import GpuSignals, Group, Signals
from gpu_rca.correlate.ranking.stats import normalized_score, proportion_p_value
from gpu_rca.correlate.ranking.weights import UNCHANGED
from gpu_rca.correlate.ranking.window import SKEW_NS, SpanSet
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas import xid as x

WORKLOAD_DRIVERS = frozenset(a.WORKLOAD_ATTRIBUTES)
#: Attributes that locate failures on hardware rather than describe the request.
PLACEMENT_DRIVERS = frozenset({a.GPU_UUID, a.GPU_NAME, a.HOST_NAME, a.K8S_NODE_NAME})
ECC_XIDS = {c for c, info in x.XIDS_BY_CODE.items() if info.category == x.HARDWARE_MEMORY}
FAULT_XIDS = {c for c, info in x.XIDS_BY_CODE.items() if info.category in (x.APPLICATION, x.DRIVER, x.FIRMWARE)}


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
class Context:
    """What every cause builder is given: the window's signals, and the GPU or host it looks at (None: the fleet)."""

    sig: Signals
    family_drivers: dict[str, list[DriverRow]]
    spans: SpanSet
    #: Requests per minute around the slow failures' onset, and before it (None: no slow failures).
    traffic: tuple[float, float] | None
    fp: Footprints
    gpu: GpuSignals | None = None
    host: str | None = None
    #: A host-scoped builder's GPUs on `host`.
    host_gpus: tuple[GpuSignals, ...] = ()
    #: Per GPU, the CUDA error strings its failures state, most frequent first.
    cuda_errors: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def g(self) -> GpuSignals:
        """The GPU a GPU-scoped builder looks at."""
        if self.gpu is None:
            raise ValueError("a GPU-scoped cause builder was called without a GPU")
        return self.gpu


#: Every cause builder: a context in, a hypothesis (or nothing) out.
Builder = Callable[[Context], "Hypothesis | None"]


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


def merge_groups(candidates: Iterable[Group | None]) -> Group:
    """Counts of several groups together (medians: the largest group's); None and empty groups count nothing."""
    groups = [g for g in candidates if g is not None and g.n]
    if not groups:
        return Group()
    big = max(groups, key=lambda g: g.n)
    features: dict[str, int] = {}
    for g in groups:
        for k, v in g.features.items():
            features[k] = features.get(k, 0) + v
    firsts = [g.first_ns for g in groups if g.first_ns is not None]
    lasts = [g.last_ns for g in groups if g.last_ns is not None]
    return Group(
        sum(g.n for g in groups),
        features,
        dict(big.medians),
        min(firsts) if firsts else None,
        big.onset_ns,
        max(lasts) if lasts else None,
    )


def precedes(first_ns: int | None, onset_ns: int | None) -> bool | None:
    if first_ns is None or onset_ns is None:
        return None
    return first_ns <= onset_ns + SKEW_NS


def earliest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def where(g: GpuSignals) -> str:
    return f"GPU {short_uuid(g.gpu_uuid)} on {g.host or 'an unknown host'}"


def count_sentence(n: int, ev: EvidenceList, what: str = "failed requests") -> str:
    shown = ev.add("count", "failed_spans", n)
    return f"{shown} {what}"


def metric_evidence(ev: EvidenceList, g: GpuSignals, metric: str, min_z: float = 3.0) -> None:
    anomaly = g.metrics.get(metric)
    if anomaly is None:
        return
    if anomaly.z_up >= min_z:
        ev.add(
            "metric",
            metric,
            anomaly.peak,
            baseline=anomaly.baseline,
            gpu_uuid=g.gpu_uuid,
            host=g.host,
            start_ns=anomaly.first_up_ns,
            end_ns=anomaly.last_up_ns,
            unit=m.METRICS_BY_NAME[metric].unit,
        )
    elif anomaly.z_down >= min_z:
        ev.add(
            "metric",
            metric,
            anomaly.trough,
            baseline=anomaly.baseline,
            gpu_uuid=g.gpu_uuid,
            host=g.host,
            start_ns=anomaly.first_down_ns,
            end_ns=anomaly.last_down_ns,
            unit=m.METRICS_BY_NAME[metric].unit,
        )


def best_driver(rows: list[DriverRow], attributes: frozenset[str]) -> DriverRow | None:
    """The strongest significant driver among `attributes` with a lift of at least 1.5."""
    kept = [r for r in significant(rows, limit=50) if r.attribute in attributes and (r.lift or 10.0) >= 1.5]
    return kept[0] if kept else None


#: The parts of a completed request's latency: queue time, GPU time, and its trace's other spans.
LATENCY_PARTS = (
    ("done_queue_ms", "queue time"),
    ("gpu_ms", "GPU time"),
    ("other_ms", "time in other spans of the trace (preprocess, decode)"),
)


def latency_growth(failures: Group, baseline: Group, part: str) -> float | None:
    """How many times longer a latency part is among completed slow requests than among the baseline's."""
    v, v0 = failures.medians.get(part), baseline.medians.get(part)
    if v is None or v0 is None:
        return None
    return max(v, 1.0) / max(v0, 1.0)


def latency_split(ev: EvidenceList, failures: Group, baseline: Group, g: GpuSignals | None = None) -> str | None:
    """Which part of the slow requests' latency grew against before: queue, GPU time or the trace's other spans.

    Medians over completed slow requests (a timed-out request has no whole latency) against the baseline's
    successes; `None` when no slow request completed.
    """
    if failures.medians.get("dur_ms") is None or baseline.medians.get("dur_ms") is None:
        return None
    uuid, host = (g.gpu_uuid, g.host) if g else (None, None)
    parts = []
    for key, label in LATENCY_PARTS:
        growth = latency_growth(failures, baseline, key)
        if growth is None:
            continue
        now = ev.add(
            "latency",
            f"{label}, median of completed slow requests",
            failures.medians[key] or 0.0,
            baseline=baseline.medians[key],
            unit="ms",
            gpu_uuid=uuid,
            host=host,
        )
        before = ev.base()
        if 1 / UNCHANGED <= growth <= UNCHANGED:
            parts.append(f"{label} unchanged ({before} ms → {now} ms)")
            continue
        if (baseline.medians[key] or 0.0) < 1.0:
            parts.append(f"{label} {before} ms → {now} ms")
            continue
        times = ev.add("latency", f"{label} growth", growth, unit="x", gpu_uuid=uuid, host=host)
        parts.append(f"{label} {before} ms → {now} ms (×{times})")
    return "latency split: " + "; ".join(parts) if parts else None
