"""RCAEval's accuracy measures over ranked cause lists, plus driver accuracy and calibration per confidence."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

K_MAX = 5
#: The rows a suite is reported in: incidents that errored, latency incidents (2× or more; `moderate`: a
#: generated 1.5-2× slowdown), and quiet windows.
CLASSES = ("error", "latency", "moderate", "quiet")


@dataclass(frozen=True)
class Case:
    """One scenario's truth and what a method ranked for it."""

    name: str
    truth: dict[str, Any]
    ranked: list[str]
    causes: list[dict[str, Any]] = field(default_factory=list)  # the full entries (ours only)


def hit_at(case: Case, k: int) -> bool:
    """The truth cause is in the top k; for a quiet scenario (truth null), nothing was ranked at all."""
    if case.truth.get("cause") is None:
        return not case.ranked
    return case.truth["cause"] in case.ranked[:k]


def ac_at(cases: list[Case], k: int) -> float | None:
    """AC@k: the share of cases whose truth is in the top k."""
    return sum(hit_at(c, k) for c in cases) / len(cases) if cases else None


def avg_at(cases: list[Case], k: int = K_MAX) -> float | None:
    """Avg@k = (1/k) Σ_{j=1..k} AC@j (RCAEval)."""
    if not cases:
        return None
    return sum(ac_at(cases, j) or 0.0 for j in range(1, k + 1)) / k


def also_recall(cases: list[Case]) -> float | None:
    """Share of the secondary real incidents (`truth.also`) found in the top 3."""
    wanted = [(c, a["cause"]) for c in cases for a in c.truth.get("also") or []]
    if not wanted:
        return None
    return sum(cause in c.ranked[:3] for c, cause in wanted) / len(wanted)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def drivers_found(case: Case) -> bool | None:
    """The truth cause's entry lists every truth driver (None when the truth names no driver)."""
    truth = case.truth
    wanted = truth.get("drivers") or {}
    if truth.get("cause") is None or not wanted:
        return None
    entry = next((c for c in case.causes if c["cause"] == truth["cause"]), None)
    if entry is None:
        return False
    listed = entry["drivers"]
    return all(
        any(d["attribute"] == attr and _same(d["value"], value) for d in listed) for attr, value in wanted.items()
    )


def driver_accuracy(cases: list[Case]) -> float | None:
    """Share of cases with truth drivers whose truth cause lists them all."""
    found = [f for f in (drivers_found(c) for c in cases) if f is not None]
    return sum(found) / len(found) if found else None


def by_confidence(cases: list[Case]) -> dict[str, dict[str, float | int]]:
    """For each confidence label of the top cause: how many cases, and how often that top cause was right."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case in cases:
        if not case.causes:
            continue
        label = case.causes[0]["confidence"]
        counts[label][0] += 1
        counts[label][1] += int(case.truth.get("cause") == case.causes[0]["cause"])
    return {label: {"cases": n, "right": right, "accuracy": right / n} for label, (n, right) in sorted(counts.items())}


def summarize(cases: list[Case], *, visible: frozenset[str] | None = None) -> dict[str, Any]:
    """AC@1, AC@3, Avg@5 (all cases, and — for a baseline — on the causes its own signal shows)."""
    result: dict[str, Any] = {
        "cases": len(cases),
        "ac1": ac_at(cases, 1),
        "ac3": ac_at(cases, 3),
        "avg5": avg_at(cases),
    }
    if visible is not None:
        shown = [c for c in cases if c.truth.get("cause") in visible]
        result["visible_cases"] = len(shown)
        result["ac1_visible"] = ac_at(shown, 1)
    return result


def high_precision(cases: list[Case]) -> float | None:
    """Of the cases whose top cause is labelled `high`, the share where it is the truth (None: no such case)."""
    high = [c for c in cases if c.causes and c.causes[0]["confidence"] == "high"]
    return sum(c.truth.get("cause") == c.causes[0]["cause"] for c in high) / len(high) if high else None


def any_cause_share(cases: list[Case]) -> float | None:
    """The share of cases in which any cause was reported at all (for slowdowns: called an incident)."""
    return sum(bool(c.ranked) for c in cases) / len(cases) if cases else None


def false_alarms(cases: list[Case]) -> int:
    """Quiet cases (truth null) in which some cause was reported."""
    return sum(1 for c in cases if c.truth.get("cause") is None and c.ranked)


def robustness_row(cases: list[Case], classes: list[str]) -> dict[str, Any]:
    """One perturbation's numbers: AC@1 and AC@3 overall and per class, `high` precision, false alarms, misses."""
    row: dict[str, Any] = {
        **summarize(cases),
        "high_precision": high_precision(cases),
        "false_alarms": false_alarms(cases),
    }
    row["ac1_by_class"] = {
        kind: ac_at([c for c, k in zip(cases, classes) if k == kind], 1) for kind in CLASSES if kind in classes
    }
    row["misses"] = [
        {"name": c.name, "truth": c.truth.get("cause"), "ranked": c.ranked[:3]} for c in cases if not hit_at(c, 1)
    ]
    return row
