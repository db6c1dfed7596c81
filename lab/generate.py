"""`lab generate`: random scenarios drawn from documented ranges, each with its truth.

Ranking is measured on these as well as on the shipped scenarios, so nobody can tune it to a fixed list.
Scenario `index` is drawn from `random.Random(f"generate/{seed}/{index}")`. Indexes below `TEST_FIRST`
are the development range; indexes from `TEST_FIRST` on are the held-out test range (`bench ranking
--split test`), only ever measured. The ranges (see `RANGES`):

- class, by index (`CLASS_CYCLE`, 20 long): 9 `error` incidents (clients give up: failures), 4 `latency`
  incidents (clients wait, nothing errors, the slowdown is 2× or more), 2 `moderate` slowdowns (1.5-2×,
  nothing errors) and 5 `quiet` windows (truth null). The class ends the scenario's name
  (`gen-SEED-INDEX-CLASS`);
- fleet: 1-5 hosts, 1-4 GPUs each, each host one model of the six profiles; half the fleets use one model
  on every host, the other half draw a model per host (mixed);
- workload: 12-20 min, arrivals Poisson, 1-3 input sizes from {256, 512, 768, 1024} (only sizes of which
  three concurrent requests fit the smallest GPU) with random weights, 1-2 of the four checkpoints, 1-3
  task types; the rate puts the slowest GPU at a base utilisation drawn per cause (below); to keep runs
  small, a fleet needing more than 10 requests/s gets larger inputs, then fewer GPUs;
- client deadline: `error` 10-60 s (60 s for memory causes, so OOMs stay the dominant failure);
  `latency` and `moderate` 900-1800 s (long enough that nothing errors); `quiet` 10-60 s or, half the
  time, 900-1800 s;
- `error` (uniform over `ERROR_CAUSES`):
  gpu_oom_large_inputs: a traffic shift to the large model at the smallest size (multiple of 128) of which
  two concurrent requests overflow the smallest GPU; gpu_memory_foreign_process: foreign process, severity
  0.9-0.98; compute_saturation: traffic shift to 1.6-2.6 × the slowest GPU's capacity; thermal_throttling:
  thermal 0.9-0.97 at base utilisation 0.6-0.7; power_capping: power_cap 0.9-1.0 at 0.85-0.9 for 7-12 min;
  hw_slowdown: 0.7-0.9 at 0.45-0.6; ecc_memory_errors: ecc_uncorrectable 0.4-0.9 (an ECC GPU);
  gpu_fallen_off_bus: gpu_lost; cuda_kernel_fault: xid 13/31/43 at 0.3-0.7; application_error: app_bug
  0.2-0.5 on one model (70 %, when the mix has two) or all; host_bottleneck: host_cpu_starvation 0.85-0.95
  at 0.4-0.6; gpu_memory_leak: memory_leak on the worker of a GPU with the least memory, from 0-3 min in
  to the end, its severity (up to 1: 64 MiB a request) what exhausts that GPU after 45-70 % of the span at
  the requests the GPU is sent, the traffic raised (to at most 0.8 of capacity) where severity 1 is not
  enough (`_leak`); other causes run at base utilisation 0.2-0.45;
- `latency` (uniform over `LATENCY_CAUSES`): thermal 0.8-0.95 at 0.5-0.65; power_cap 0.9-1.0 at 0.6-0.8;
  hw_slowdown 0.5-0.65 (clocks at 35-50 % of max) at 0.2-0.3; compute_saturation: traffic shift to
  1.2-1.8 × capacity for 3-6 min; host_bottleneck: host_cpu_starvation 0.55-0.8 at 0.3-0.5;
- `moderate` (uniform over `MODERATE_CAUSES`): hw_slowdown 0.33-0.5 (clocks at 50-67 % of max: GPU work
  1.5-2× as long) at 0.2-0.35; host_bottleneck: host_cpu_starvation 0.33-0.5 (CPU work 1.5-2× as long)
  at 0.2-0.35. The truth is the cause; whether latency detection calls it an incident is what is measured;
- `quiet` (truth null) at base utilisation 0.2-0.5: half the windows have a diurnal ramp (the rate climbs
  in 3-5 steps of 2-4 min to 1.3-1.8 × the start, at most 0.75 of capacity), 40 % a shift toward larger
  inputs (from a minute 3-8 to the end, the largest fitting size takes 60-85 % of requests, at the same
  utilisation), so latency spreads as it ordinarily does;
- faults start 3-6 min in and last 5-10 min (a lost GPU stays lost);
- how far a fault reaches (`fault_scope`), for the causes that strike many GPUs at once in real incidents
  (thermal_throttling: a rack's or a room's cooling fails; power_capping: a node's PSU budget or a facility's
  DCGM power policy; hw_slowdown: a node's power brake; gpu_memory_foreign_process: a co-tenant job with a
  replica on every GPU): one GPU 55 %, every GPU of the fault's host 30 %, every GPU of the fleet 15 %.
  host_cpu_starvation always strikes one host (all its GPUs).
  A wider fault has the same severity on every GPU it strikes (heat: ± 0.03 per GPU, as slots differ).
  Truth drivers: `gpu.uuid` for one GPU, `host.name` for a host of a fleet of several hosts, none when the
  fault covers the whole fleet (nothing is left to contrast with; so too any GPU fault on a one-GPU fleet).
  The scope is drawn from its own stream, `random.Random(f"generate/{seed}/{index}/scope")`;
- benign anomalies at the same time, every class: 0-2 of a mild thermal blip (severity 0.1-0.3, never
  reaches slowdown) on another GPU, an idle power cap (power_cap 0.2-0.4: the limit lowered 12-24 %, which
  the load never reaches) on another GPU, and (where the cause is not a slowdown) a benign traffic bump
  (+10-30 % for 1-3 min; in a quiet window on top of the ramp step or larger-input mix in force, kept
  under 0.8 of the fleet's capacity at that mix);
- 20 % of `error` scenarios add a smaller second fault (foreign process, kernel fault or ECC; 3 min, milder)
  on another GPU (one the first fault spared), in `truth.also`: two faults at once.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import yaml

from gpu_rca.lab import ddcolor
from gpu_rca.lab.device import CUDA_CONTEXT_BYTES
from gpu_rca.lab.faults import LEAK_BYTES_PER_REQUEST
from gpu_rca.lab.profiles import PROFILES
from gpu_rca.lab.scenario import MODELS, parse_scenario
from gpu_rca.lab.workload import MAX_CONCURRENCY
from gpu_rca.schemas.errors import InputError

RANGES: dict[str, Any] = {
    "hosts": (1, 5),
    "gpus_per_host": (1, 4),
    "models": tuple(PROFILES),
    "mixed_fleet_share": 0.5,
    "duration_min": (12, 20),
    "input_sizes": (256, 512, 768, 1024),
    "timeout_s": (10, 60),
    "patient_timeout_s": (900, 1800),
    "base_utilization": (0.2, 0.45),
    "quiet_utilization": (0.2, 0.5),
    "fault_start_min": (3, 6),
    "fault_length_min": (5, 10),
    "second_fault_share": 0.20,
    "distractors": (0, 2),
    "fault_scope": {"gpu": 0.55, "host": 0.30, "fleet": 0.15},
    "diurnal_share": 0.5,
    "diurnal_peak": (1.3, 1.8),
    "larger_inputs_share": 0.4,
}
#: The class of scenario `index` is CLASS_CYCLE[index % 20]: 9 error, 4 latency, 2 moderate, 5 quiet.
CLASS_CYCLE = (
    "error", "quiet", "latency", "error", "moderate", "error", "quiet", "latency", "error", "error",
    "quiet", "error", "latency", "error", "moderate", "quiet", "error", "latency", "error", "quiet",
)  # fmt: skip
CLASSES = ("error", "latency", "moderate", "quiet")
#: The first index of the held-out test range; indexes below it are the development range.
TEST_FIRST = 100_000
ERROR_CAUSES = (
    "gpu_oom_large_inputs",
    "gpu_memory_foreign_process",
    "compute_saturation",
    "thermal_throttling",
    "power_capping",
    "hw_slowdown",
    "ecc_memory_errors",
    "gpu_fallen_off_bus",
    "cuda_kernel_fault",
    "application_error",
    "host_bottleneck",
    "gpu_memory_leak",
)
LATENCY_CAUSES = ("thermal_throttling", "power_capping", "hw_slowdown", "compute_saturation", "host_bottleneck")
MODERATE_CAUSES = ("hw_slowdown", "host_bottleneck")
#: Causes whose fault may strike every GPU of a host or of the fleet (`fault_scope`).
SCOPED_CAUSES = ("thermal_throttling", "power_capping", "hw_slowdown", "gpu_memory_foreign_process")
#: Causes that slow the GPU (or its host) down: no benign traffic bump is drawn beside them.
_SLOWING = ("thermal_throttling", "power_capping", "hw_slowdown", "compute_saturation", "host_bottleneck")
#: (class, cause) -> base utilisation of the slowest GPU; absent: RANGES["base_utilization"].
_UTILIZATION: dict[tuple[str, str | None], tuple[float, float]] = {
    ("error", "thermal_throttling"): (0.6, 0.7),
    ("error", "power_capping"): (0.85, 0.9),
    ("error", "hw_slowdown"): (0.45, 0.6),
    ("error", "host_bottleneck"): (0.4, 0.6),
    ("latency", "thermal_throttling"): (0.5, 0.65),
    ("latency", "power_capping"): (0.6, 0.8),
    ("latency", "hw_slowdown"): (0.2, 0.3),
    ("latency", "host_bottleneck"): (0.3, 0.5),
    ("moderate", "hw_slowdown"): (0.2, 0.35),
    ("moderate", "host_bottleneck"): (0.2, 0.35),
    ("quiet", None): (0.2, 0.5),
}
#: (class, fault kind) -> severity range, where the class changes it.
_SEVERITY: dict[tuple[str, str], tuple[float, float]] = {
    ("error", "thermal"): (0.9, 0.97),
    ("error", "power_cap"): (0.9, 1.0),
    ("error", "hw_slowdown"): (0.7, 0.9),
    ("error", "host_cpu_starvation"): (0.85, 0.95),
    ("latency", "thermal"): (0.8, 0.95),
    ("latency", "power_cap"): (0.9, 1.0),
    ("latency", "hw_slowdown"): (0.5, 0.65),
    ("latency", "host_cpu_starvation"): (0.55, 0.8),
    ("moderate", "hw_slowdown"): (0.33, 0.5),
    ("moderate", "host_cpu_starvation"): (0.33, 0.5),
}
MAX_RATE_PER_S = 10.0
# A second fault must stay the smaller incident: a lost GPU fails everything to the end, so it is never second.
_SECOND_CAUSES = ("gpu_memory_foreign_process", "cuda_kernel_fault", "ecc_memory_errors")


def _fits(size: int, models: dict[str, float], memory_bytes: int) -> bool:
    resident = CUDA_CONTEXT_BYTES + ddcolor.weights_bytes(set(models))
    peak = max(ddcolor.peak_memory_bytes(m, size) for m in models)
    return MAX_CONCURRENCY * peak + resident <= 0.95 * memory_bytes


def _mean_work_s(sizes: dict[int, float], models: dict[str, float]) -> float:
    return sum(ws * wm * ddcolor.work_s(m, s) for s, ws in sizes.items() for m, wm in models.items())


def _weights(rng: random.Random, values: list[Any]) -> dict[Any, float]:
    raw = [rng.uniform(0.2, 1.0) for _ in values]
    return {v: round(w / sum(raw), 2) or 0.01 for v, w in zip(values, raw)}


def scenario_class(index: int) -> str:
    """The class of generated scenario `index`: error, latency, moderate or quiet."""
    return CLASS_CYCLE[index % len(CLASS_CYCLE)]


def _draw_fleet(rng: random.Random, cause: str | None) -> list[dict[str, Any]]:
    mixed = rng.random() < RANGES["mixed_fleet_share"]
    one_model = rng.choice(RANGES["models"])
    fleet = []
    for h in range(rng.randint(*RANGES["hosts"])):
        model = rng.choice(RANGES["models"]) if mixed else one_model
        if cause == "ecc_memory_errors" and h == 0 and not PROFILES[model].ecc:
            model = "A100-40GB"
        fleet.append({"host": f"gpu-node-{h + 1}", "gpus": rng.randint(*RANGES["gpus_per_host"]), "model": model})
    return fleet


def _gpu_refs(fleet: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(f"{e['host']}/{i}", PROFILES[e["model"]]) for e in fleet for i in range(e["gpus"])]


def generate_scenario(seed: int, index: int) -> dict[str, Any]:
    """One scenario (a mapping of docs/contracts.md §5 with truth), a pure function of (seed, index)."""
    rng = random.Random(f"generate/{seed}/{index}")
    scope_rng = random.Random(f"generate/{seed}/{index}/scope")
    kind = scenario_class(index)
    pool = {"error": ERROR_CAUSES, "latency": LATENCY_CAUSES, "moderate": MODERATE_CAUSES}.get(kind)
    cause = rng.choice(pool) if pool else None
    fleet = _draw_fleet(rng, cause)
    gpus = _gpu_refs(fleet)
    slowest = min(p.relative_speed for _, p in gpus)
    smallest_memory = min(p.memory_total_bytes for _, p in gpus)
    models = _weights(rng, rng.sample(MODELS, rng.randint(1, 2)))
    tasks = _weights(rng, rng.sample(["person", "building", "landscape"], rng.randint(1, 3)))
    # Sizes whose concurrent peak fits the smallest GPU: memory causes come only from faults.
    fits = [s for s in RANGES["input_sizes"] if _fits(s, models, smallest_memory)] or [256]
    candidates = sorted(rng.sample(fits, min(len(fits), rng.randint(1, 3))))
    util = rng.uniform(*_UTILIZATION.get((kind, cause), RANGES["base_utilization"]))
    while True:
        # Keep runs small: bigger inputs, then fewer GPUs, until the fleet needs at most MAX_RATE_PER_S.
        sizes = _weights(rng, candidates)
        gpus = _gpu_refs(fleet)
        slowest = min(p.relative_speed for _, p in gpus)
        capacity_per_gpu = slowest / _mean_work_s(sizes, models)
        rate = round(util * capacity_per_gpu * len(gpus), 2)
        if rate <= MAX_RATE_PER_S:
            break
        larger = [s for s in fits if s > candidates[-1]]
        if len(candidates) > 1:
            candidates = candidates[1:]
        elif larger:
            candidates = [larger[0]]
        elif fleet[-1]["gpus"] > 1:
            fleet[-1]["gpus"] -= 1
        elif len(fleet) > 1:
            fleet.pop()
        else:
            break
    duration_min = rng.randint(*RANGES["duration_min"])
    start_min = rng.randint(*RANGES["fault_start_min"])
    length_min = rng.randint(*RANGES["fault_length_min"]) + (2 if cause == "power_capping" else 0)
    end_min = min(start_min + length_min, duration_min - 1)
    patient = kind in ("latency", "moderate") or (kind == "quiet" and rng.random() < 0.5)
    if patient:
        timeout_s = rng.randint(*RANGES["patient_timeout_s"])
    elif cause in ("gpu_oom_large_inputs", "gpu_memory_foreign_process"):
        timeout_s = 60
    else:
        timeout_s = rng.randint(*RANGES["timeout_s"])
    # The fault's GPU: the slowest kind for the clock-cutting causes (where load is measured), else any.
    slow_gpus = [ref for ref, p in gpus if p.relative_speed == slowest]
    least_memory = min(p.memory_total_bytes for _, p in gpus)
    smallest_gpus = [ref for ref, p in gpus if p.memory_total_bytes == least_memory]
    # A leak is drawn where it can run its course (memory exhausted) inside the window: the smallest GPU.
    target = rng.choice(
        slow_gpus if cause in _SLOWING else smallest_gpus if cause == "gpu_memory_leak" else [r for r, _ in gpus]
    )
    if cause == "ecc_memory_errors":
        target = rng.choice([r for r, p in gpus if p.ecc])
    faults: list[dict[str, Any]] = []
    drivers: dict[str, Any] = {}
    struck = [target]
    window = {"start": f"{start_min}m", "end": f"{end_min}m"}
    if cause == "gpu_oom_large_inputs":
        usable = smallest_memory - CUDA_CONTEXT_BYTES - ddcolor.weights_bytes(set(models) | {"ddcolor_paper"})
        size = (
            math.ceil(512 * math.sqrt(usable / 2 / ddcolor.MODEL_COSTS["ddcolor_paper"].activation_bytes_512) / 128)
            * 128
            + 128
        )
        shift_sizes = {size: round(rng.uniform(0.5, 0.8), 2)}
        shift_sizes[512] = round(1 - shift_sizes[size], 2)
        shift_rate = round(0.6 * slowest / _mean_work_s(shift_sizes, {"ddcolor_paper": 1.0}) * len(gpus), 2)
        faults.append(
            {
                "kind": "traffic_shift",
                **window,
                "rate": f"{shift_rate}/s",
                "input_size": shift_sizes,
                "model": {"ddcolor_paper": 1},
            }
        )
        drivers = {"ddcolor.input_size": size}
    elif cause == "compute_saturation":
        factor = rng.uniform(1.6, 2.6) if kind == "error" else rng.uniform(1.2, 1.8)
        if kind != "error":
            window["end"] = f"{min(start_min + rng.randint(3, 6), duration_min - 1)}m"
        faults.append(
            {"kind": "traffic_shift", **window, "rate": f"{round(factor * capacity_per_gpu * len(gpus), 2)}/s"}
        )
    elif cause == "application_error":
        bug: dict[str, Any] = {"kind": "app_bug", **window, "severity": round(rng.uniform(0.2, 0.5), 2)}
        if rng.random() < 0.7:
            model = rng.choice(list(models))
            if len(models) > 1:  # with one model in the mix no failure-vs-success contrast could show it
                bug["model"] = model
                drivers = {"ddcolor.model": model}
        faults.append(bug)
    elif cause == "host_bottleneck":
        fault = _gpu_fault(rng, cause, target, window, kind=kind)
        host = target.rpartition("/")[0]
        struck = [f"{host}/{i}" for e in fleet if e["host"] == host for i in range(e["gpus"])]
        drivers = {"host.name": host} if len(fleet) > 1 else {}
        faults.append(fault)
    elif cause == "gpu_memory_leak":
        fault, rate = _leak(rng, target, rate, len(gpus), capacity_per_gpu, least_memory, models, sizes,
                            start_min, duration_min)  # fmt: skip
        struck, drivers = _scope(scope_rng, cause, target, fleet)
        faults.append(fault)
    elif cause is not None:
        fault = _gpu_fault(rng, cause, target, window, kind=kind)
        struck, drivers = _scope(scope_rng, cause, target, fleet)
        faults.extend(_on(fault, ref, scope_rng) for ref in struck)
    else:
        faults.extend(_quiet_traffic(rng, rate, sizes, models, fits, capacity_per_gpu * len(gpus), duration_min))
    others = [r for r, _ in gpus if r not in struck]
    also = []
    if kind == "error" and others and rng.random() < RANGES["second_fault_share"]:
        second_cause = rng.choice(_SECOND_CAUSES)
        candidates = [r for r in others if second_cause != "ecc_memory_errors" or PROFILES[_model(fleet, r)].ecc]
        if candidates:
            second = rng.choice(candidates)
            others.remove(second)
            short = {"start": f"{start_min + 1}m", "end": f"{min(start_min + 4, duration_min - 1)}m"}
            faults.append(_gpu_fault(rng, second_cause, second, short, mild=True))
            also.append({"cause": second_cause, "drivers": {"gpu.uuid": second}})
    faults.extend(_benign(rng, cause, others, rate, duration_min, faults, sizes, models, capacity_per_gpu * len(gpus)))
    truth: dict[str, Any] = {"cause": cause, "drivers": drivers}
    if also:
        truth["also"] = also
    scenario: dict[str, Any] = {
        "name": f"gen-{seed}-{index:04d}-{kind}",
        "seed": rng.randrange(10**6),
        "start": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
        "duration": f"{duration_min}m",
        "fleet": fleet,
        "workload": {
            "rate": f"{rate}/s",
            "input_size": sizes,
            "task_type": tasks,
            "model": models,
            "timeout": f"{timeout_s}s",
        },
        "faults": faults,
        "truth": truth,
    }
    parse_scenario(scenario, scenario["name"])  # every draw must be a valid scenario
    return scenario


def _quiet_traffic(
    rng: random.Random,
    rate: float,
    sizes: dict[int, float],
    models: dict[str, float],
    fits: list[int],
    capacity: float,
    duration_min: int,
) -> list[dict[str, Any]]:
    """A quiet window's ordinary traffic changes: a diurnal ramp, a shift toward larger inputs (or both)."""
    shifts: list[dict[str, Any]] = []
    if rng.random() < RANGES["diurnal_share"]:
        peak = min(rng.uniform(*RANGES["diurnal_peak"]) * rate, 0.75 * capacity)
        steps, at = rng.randint(3, 5), 2
        for k in range(1, steps + 1):
            length = rng.randint(2, 4)
            if at >= duration_min:
                break
            step_rate = max(rate, rate + (peak - rate) * k / steps)
            shifts.append(
                {
                    "kind": "traffic_shift",
                    "start": f"{at}m",
                    "end": f"{min(at + length, duration_min)}m",
                    "rate": f"{round(step_rate, 2)}/s",
                }
            )
            at += length
    if rng.random() < RANGES["larger_inputs_share"] and len(fits) > 1:
        largest = fits[-1]
        share = round(rng.uniform(0.6, 0.85), 2)
        rest = [s for s in sizes if s != largest] or [fits[0]]
        shifted = {largest: share, **{s: round((1 - share) / len(rest), 2) for s in rest}}
        # The same utilisation with heavier requests: fewer of them per second.
        same_util = rate * _mean_work_s(sizes, models) / _mean_work_s(shifted, models)
        at = rng.randint(3, 8)
        shifts.append(
            {
                "kind": "traffic_shift",
                "start": f"{at}m",
                "end": f"{duration_min}m",
                "rate": f"{round(max(same_util, 0.05), 2)}/s",
                "input_size": shifted,
            }
        )
    return shifts


def _leak(
    rng: random.Random,
    gpu: str,
    rate: float,
    n_gpus: int,
    capacity_per_gpu: float,
    memory_bytes: int,
    models: dict[str, float],
    sizes: dict[int, float],
    start_min: int,
    duration_min: int,
) -> tuple[dict[str, Any], float]:
    """A memory_leak on `gpu` that exhausts its memory inside the window, and the workload rate it needs.

    The leaking version runs from 0-3 min in to the end (a leak does not stop by itself). Its severity is
    what makes the worker run out of memory after a drawn 45-70 % of that span, given the requests the
    router sends `gpu` (the rate shared by the fleet). Where even severity 1 (64 MiB a request, docs/contracts.md §5)
    would not get there, the traffic rises until it does, up to 0.8 of capacity (past `MAX_RATE_PER_S` if
    need be: a large fleet of large GPUs takes many requests to fill); the truth would otherwise name a
    cause that never struck.
    """
    begin_min = max(0, start_min - 3)
    at = rng.uniform(0.45, 0.7)
    span_s = (duration_min - begin_min) * 60 * at
    resident = CUDA_CONTEXT_BYTES + ddcolor.weights_bytes(set(models))
    working = max(ddcolor.peak_memory_bytes(m, s) for m in models for s in sizes)
    usable = memory_bytes - resident - working
    need_requests = usable / LEAK_BYTES_PER_REQUEST  # at severity 1
    rate_needed = need_requests / span_s * n_gpus
    rate = round(min(max(rate, rate_needed), 0.8 * capacity_per_gpu * n_gpus), 2)
    severity = min(1.0, math.ceil(100 * need_requests / (rate / n_gpus * span_s)) / 100)
    fault = {"kind": "memory_leak", "gpu": gpu, "start": f"{begin_min}m", "severity": severity}
    return fault, rate


def _load(at_min: float, base: float, faults: list[dict[str, Any]]) -> tuple[float, dict[int, float] | None]:
    """The (rate, input-size mix or None for the base mix) the traffic shifts in `faults` put in force at a minute."""
    rate, sizes = base, None
    for fault in faults:
        if fault["kind"] == "traffic_shift" and int(fault["start"][:-1]) <= at_min < int(fault["end"][:-1]):
            rate = float(fault["rate"][:-2])
            sizes = fault.get("input_size", sizes)
    return rate, sizes


def _benign(
    rng: random.Random,
    cause: str | None,
    others: list[str],
    rate: float,
    duration_min: int,
    drawn: list[dict[str, Any]],
    sizes: dict[int, float],
    models: dict[str, float],
    capacity: float,
) -> list[dict[str, Any]]:
    """0-2 harmless anomalies at the same time: a mild thermal blip, an idle power cap, a traffic bump.

    A bump raises the traffic in force (a diurnal step, a larger-input mix) by 10-30 %, kept under 0.8 of
    the fleet's capacity at the mix in force: a benign bump that overloads the fleet is an incident.
    """
    faults: list[dict[str, Any]] = []
    for _ in range(rng.randint(*RANGES["distractors"])):
        pick = rng.random()
        if others and pick < 0.4:
            faults.append(
                {
                    "kind": "thermal",
                    "gpu": rng.choice(others),
                    "start": f"{rng.randint(1, 5)}m",
                    "end": f"{rng.randint(6, duration_min)}m",
                    "severity": round(rng.uniform(0.1, 0.3), 2),
                }
            )
        elif others and pick < 0.7:
            faults.append(
                {
                    "kind": "power_cap",
                    "gpu": rng.choice(others),
                    "start": f"{rng.randint(1, 5)}m",
                    "end": f"{rng.randint(6, duration_min)}m",
                    "severity": round(rng.uniform(0.2, 0.4), 2),
                }
            )
        elif cause not in _SLOWING:
            at = rng.randint(1, duration_min - 4)
            end = at + rng.randint(1, 3)
            factor = rng.uniform(1.1, 1.3)
            if cause is None:  # a quiet window: the bump rides on the ramp or mix in force, under capacity
                loads = [_load(m, rate, drawn + faults) for m in range(at, end)]
                in_force = max(r for r, _ in loads)
                mixes = [mix for _, mix in loads if mix is not None]
                mix = mixes[-1] if mixes else sizes
                bump = min(in_force * factor, 0.8 * capacity * _mean_work_s(sizes, models) / _mean_work_s(mix, models))
                extra: dict[str, Any] = {"input_size": mix} if mixes else {}
            else:
                bump, extra = rate * factor, {}
            faults.append(
                {"kind": "traffic_shift", "start": f"{at}m", "end": f"{end}m", "rate": f"{round(bump, 2)}/s", **extra}
            )
    return faults


def _model(fleet: list[dict[str, Any]], ref: str) -> str:
    host = ref.rpartition("/")[0]
    return next(e["model"] for e in fleet if e["host"] == host)


def _scope(
    rng: random.Random, cause: str, target: str, fleet: list[dict[str, Any]]
) -> tuple[list[str], dict[str, Any]]:
    """The GPUs a fault of `cause` strikes (one, every GPU of `target`'s host, or the fleet) and its truth drivers."""
    scopes = RANGES["fault_scope"]
    scope = rng.choices(list(scopes), weights=list(scopes.values()))[0] if cause in SCOPED_CAUSES else "gpu"
    host = target.rpartition("/")[0]
    entries = [e for e in fleet if scope == "fleet" or e["host"] == host]
    struck = [target] if scope == "gpu" else [f"{e['host']}/{i}" for e in entries for i in range(e["gpus"])]
    # Only a fault on part of the fleet leaves healthy GPUs for the failures to stand out against.
    if len(struck) == sum(e["gpus"] for e in fleet):
        return struck, {}
    return struck, ({"gpu.uuid": target} if scope == "gpu" else {"host.name": host})


def _on(fault: dict[str, Any], gpu: str, rng: random.Random) -> dict[str, Any]:
    """`fault` moved to `gpu`; heat differs a little from slot to slot, policies and co-tenants do not."""
    if gpu == fault["gpu"]:
        return fault
    moved = {**fault, "gpu": gpu}
    if fault["kind"] == "thermal":
        moved["severity"] = round(min(1.0, max(0.0, fault["severity"] + rng.uniform(-0.03, 0.03))), 2)
    return moved


def _severity(rng: random.Random, kind: str, fault_kind: str, default: tuple[float, float]) -> float:
    return round(rng.uniform(*_SEVERITY.get((kind, fault_kind), default)), 2)


def _gpu_fault(
    rng: random.Random, cause: str, gpu: str, window: dict[str, str], mild: bool = False, kind: str = "error"
) -> dict[str, Any]:
    """The fault entry that makes `cause` on `gpu` (its severity drawn for the scenario class `kind`)."""
    if cause == "gpu_memory_foreign_process":
        return {"kind": "foreign_process", "gpu": gpu, **window, "severity": round(rng.uniform(0.9, 0.98), 2)}
    if cause == "gpu_memory_leak":
        # The fault's GPU's worker keeps memory alive per request served (a catalog cause must not crash the draw).
        return {"kind": "memory_leak", "gpu": gpu, **window, "severity": round(rng.uniform(0.6, 0.95), 2)}
    simple = {
        "thermal_throttling": "thermal",
        "power_capping": "power_cap",
        "hw_slowdown": "hw_slowdown",
        "host_bottleneck": "host_cpu_starvation",
    }
    if cause in simple:
        fault_kind = simple[cause]
        return {"kind": fault_kind, "gpu": gpu, **window, "severity": _severity(rng, kind, fault_kind, (0.9, 0.97))}
    if cause == "ecc_memory_errors":
        return {
            "kind": "ecc_uncorrectable",
            "gpu": gpu,
            **window,
            "severity": round(rng.uniform(0.4, 0.5 if mild else 0.9), 2),
        }
    if cause == "gpu_fallen_off_bus":
        start = window["end"] if mild else window["start"]
        return {"kind": "gpu_lost", "gpu": gpu, "start": start}
    if cause == "cuda_kernel_fault":
        return {
            "kind": "xid",
            "gpu": gpu,
            "code": rng.choice((13, 31, 43)),
            **window,
            "severity": round(rng.uniform(0.3, 0.4 if mild else 0.7), 2),
        }
    raise ValueError(f"no GPU fault for cause {cause!r}")


def generate_scenarios(seed: int, count: int, first: int = 0) -> list[dict[str, Any]]:
    """`count` scenarios for `seed` from index `first` on (`TEST_FIRST`: the held-out test range), as mappings."""
    return [generate_scenario(seed, index) for index in range(first, first + count)]


def write_generated(seed: int, count: int, out_dir: str | Path) -> list[Path]:
    """Write `count` generated scenarios as YAML files into `out_dir`; return their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    paths = []
    for scenario in generate_scenarios(seed, count):
        path = out / f"{scenario['name']}.yaml"
        header = f"# Generated by `gpu-rca lab generate --seed {seed}`; ranges in lab/generate.py.\n"
        path.write_text(
            header + yaml.safe_dump(scenario, sort_keys=False, default_flow_style=None, width=120), encoding="utf-8"
        )
        paths.append(path)
    return paths


__all__ = [
    "CLASSES",
    "RANGES",
    "TEST_FIRST",
    "generate_scenario",
    "generate_scenarios",
    "scenario_class",
    "write_generated",
]
