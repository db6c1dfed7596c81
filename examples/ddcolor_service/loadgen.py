"""A seeded burst of DDColor requests against the service on the lab backend, in-process, on the lab's clock.

Clients upload photos at Poisson arrival times: a warm-up of mixed sizes (the advisor learns from it), then
a burst of large inputs, then quiet while the queue drains. A client told 429 with a suggested size
resubmits at that size at once, as the article's user told "try 680 or less" would; told 429 with no size
that fits, it comes back after `Retry-After`. Same seed, same requests, same results, whatever the machine.

    python -m examples.ddcolor_service.loadgen [--seed 7] [--json]     # advisor off vs on, side by side
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import io
import itertools
import json
import random
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from examples.ddcolor_service.app import AdvisorMode, ServiceConfig, create_app
from examples.ddcolor_service.lab_backend import DEFAULT_START_NS, LabBackend
from examples.ddcolor_service.service import build_service
from examples.ddcolor_service.telemetry import TRACE_ID_HEADER
from gpu_rca.lab.device import STEP_NS
from gpu_rca.lab.workload import MAX_CONCURRENCY
from gpu_rca.schemas import attributes as A

NS = 1_000_000_000


@dataclass(frozen=True)
class Phase:
    """Poisson arrivals at `rate_per_s` for `duration_s`, input sizes drawn from `sizes` (weights)."""

    duration_s: float
    rate_per_s: float
    sizes: dict[int, float]


@dataclass(frozen=True)
class BurstPlan:
    """The whole run: phases in order; the burst is the phase at `burst_phase`."""

    seed: int = 7
    gpu_model: str = "L4"
    model: str = "ddcolor_paper"
    phases: tuple[Phase, ...] = (
        Phase(120.0, 0.4, {512: 0.4, 768: 0.3, 1024: 0.3}),  # warm-up: the advisor learns here
        Phase(60.0, 1.5, {1280: 1.0}),  # the burst of large uploads
        Phase(60.0, 0.0, {512: 1.0}),  # quiet: the queue drains
    )
    burst_phase: int = 1
    timeout_s: float = 30.0
    max_attempts: int = 4
    max_concurrency: int = MAX_CONCURRENCY  # requests the service runs on its GPU at once

    def burst_window_ns(self) -> tuple[int, int]:
        """[burst start, burst end + one minute): where goodput is counted."""
        start = DEFAULT_START_NS + int(sum(p.duration_s for p in self.phases[: self.burst_phase]) * NS)
        return start, start + int((self.phases[self.burst_phase].duration_s + 60.0) * NS)


@dataclass
class Outcome:
    """One user's request, across its attempts."""

    arrival_ns: int
    asked_size: int
    final_size: int
    status: int = 0
    error: str | None = None
    attempts: int = 0
    end_ns: int = 0
    trace_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    """What one mode of the run produced."""

    mode: str
    seed: int
    requests: int
    succeeded: int
    failed: dict[str, int]
    refused: int
    retries: int
    reduced_size: int
    goodput_per_min: float
    first_oom_s: float | None
    first_suggestion_s: float | None
    first_gauge_drop_s: float | None
    mean_served_size: float | None
    outcomes: list[Outcome]

    def summary(self) -> dict[str, Any]:
        """Everything but the per-request outcomes."""
        data = asdict(self)
        data.pop("outcomes")
        return data


def _photo(seed: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (96, 64), seed % 256).save(out, format="PNG")
    return out.getvalue()


def arrivals(plan: BurstPlan) -> list[tuple[int, int]]:
    """(arrival ns, input size) of every user request, in time order."""
    rng = random.Random(f"ddcolor-burst/{plan.seed}")
    result: list[tuple[int, int]] = []
    start = DEFAULT_START_NS
    for phase in plan.phases:
        end = start + int(phase.duration_s * NS)
        t = start
        while phase.rate_per_s > 0:
            t += max(int(rng.expovariate(phase.rate_per_s) * NS), 1)
            if t >= end:
                break
            sizes, weights = zip(*phase.sizes.items())
            result.append((t, rng.choices(sizes, weights)[0]))
        start = end
    return result


async def run_burst(plan: BurstPlan, mode: AdvisorMode, *, otlp_endpoint: str | None = None) -> RunResult:
    """Drive the service in-process through the whole plan and measure it."""
    backend = LabBackend(
        gpu_model=plan.gpu_model,
        models=(plan.model,),
        seed=plan.seed,
        start_ns=DEFAULT_START_NS,
        timeout_s=plan.timeout_s,
        max_concurrency=plan.max_concurrency,
    )
    service = build_service(
        backend,
        config=ServiceConfig(advisor_mode=mode, default_model=plan.model),
        otlp_endpoint=otlp_endpoint,
        export=otlp_endpoint is not None,
        realtime=False,
    )
    app = create_app(service)
    advisor = service.advisor
    burst_start, window_end = plan.burst_window_ns()
    burst_size = max(plan.phases[plan.burst_phase].sizes)
    tasks: list[asyncio.Task[None]] = []
    queue: list[tuple[int, int, int]] = []  # (time, seq, outcome index): arrivals and delayed retries
    outcomes: list[Outcome] = []
    marks: dict[str, int] = {}
    photo = _photo(plan.seed)
    order = itertools.count()  # ties in time keep submission order

    async def settle() -> None:
        # Every client is either answered or waiting on the simulation: nothing else can happen now.
        spins = 0
        while sum(not t.done() for t in tasks) != backend.waiting:
            spins += 1
            await asyncio.sleep(0 if spins < 10_000 else 0.001)
        tasks[:] = [t for t in tasks if not t.done()]

    async def user(client: httpx.AsyncClient, index: int) -> None:
        outcome = outcomes[index]
        while outcome.attempts < plan.max_attempts:
            outcome.attempts += 1
            if (
                advisor is not None
                and mode is AdvisorMode.SHADOW
                and not advisor.advise(0, plan.model, outcome.final_size).accept
            ):
                marks.setdefault("suggestion", backend.clock.now_ns())
            response = await client.post(
                "/colorize",
                files={"image": ("photo.png", photo, "image/png")},
                data={"input_size": str(outcome.final_size), "model": plan.model},
            )
            outcome.trace_ids.append(response.headers[TRACE_ID_HEADER])
            outcome.status, outcome.end_ns = response.status_code, backend.clock.now_ns()
            if response.status_code != 429:
                if response.status_code != 200:
                    outcome.error = response.json()["error"]
                    if outcome.error == A.ERROR_CUDA_OOM:
                        marks.setdefault("oom", outcome.end_ns)
                return
            body = response.json()
            marks.setdefault("suggestion", backend.clock.now_ns())
            if body["suggested_input_size"]:
                outcome.final_size = body["suggested_input_size"]  # resubmit smaller, now
                continue
            retry_at = backend.clock.now_ns() + int(response.headers["Retry-After"]) * NS
            heapq.heappush(queue, (retry_at, next(order), index))
            return
        outcome.error = "gave_up"

    for arrival_ns, size in arrivals(plan):
        outcomes.append(Outcome(arrival_ns, size, size))
        heapq.heappush(queue, (arrival_ns, next(order), len(outcomes) - 1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ddcolor") as client:
        async with app.router.lifespan_context(app):
            while queue or backend.waiting:
                target = (
                    min(queue[0][0], backend.clock.now_ns() + STEP_NS) if queue else backend.clock.now_ns() + STEP_NS
                )
                await backend.run_until(target, settle)
                now = backend.clock.now_ns()
                if (
                    advisor is not None
                    and burst_start <= now
                    and "gauge" not in marks
                    and (advisor.largest_input_size(0, plan.model) or 0) < burst_size
                ):
                    marks["gauge"] = now
                while queue and queue[0][0] <= now:
                    _, _, index = heapq.heappop(queue)
                    tasks.append(asyncio.create_task(user(client, index)))
                    await settle()
            service.telemetry.flush()
    return _result(plan, mode, outcomes, marks, burst_start, window_end)


def _result(
    plan: BurstPlan,
    mode: AdvisorMode,
    outcomes: list[Outcome],
    marks: dict[str, int],
    burst_start: int,
    window_end: int,
) -> RunResult:
    def since_burst(key: str) -> float | None:
        return round((marks[key] - burst_start) / NS, 3) if key in marks else None

    ok = [o for o in outcomes if o.status == 200]
    in_window = [o for o in ok if burst_start <= o.end_ns < window_end]
    failed = Counter(o.error for o in outcomes if o.status not in (200, 429) and o.error)
    return RunResult(
        mode=mode.value,
        seed=plan.seed,
        requests=len(outcomes),
        succeeded=len(ok),
        failed=dict(sorted(failed.items())),
        refused=sum(1 for o in outcomes if o.status == 429),
        retries=sum(o.attempts - 1 for o in outcomes),
        reduced_size=sum(1 for o in ok if o.final_size < o.asked_size),
        goodput_per_min=round(len(in_window) / ((window_end - burst_start) / NS / 60), 2),
        first_oom_s=since_burst("oom"),
        first_suggestion_s=since_burst("suggestion"),
        first_gauge_drop_s=since_burst("gauge"),
        mean_served_size=round(sum(o.final_size for o in ok) / len(ok), 1) if ok else None,
        outcomes=outcomes,
    )


def compare(plan: BurstPlan | None = None, *, otlp_endpoint: str | None = None) -> dict[str, RunResult]:
    """The same plan with the advisor in shadow (advising, never refusing: as if off) and enforcing."""
    plan = plan or BurstPlan()
    return {
        mode.value: asyncio.run(run_burst(plan, mode, otlp_endpoint=otlp_endpoint))
        for mode in (AdvisorMode.SHADOW, AdvisorMode.ENFORCE)
    }


def main(argv: list[str] | None = None) -> int:
    """Print the side-by-side comparison (a table, or one JSON document with --json)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.ddcolor_service.loadgen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    results = compare(BurstPlan(seed=args.seed))
    if args.json:
        json.dump({mode: r.summary() for mode, r in results.items()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = [(k, [r.summary()[k] for r in results.values()]) for k in results["shadow"].summary() if k not in ("mode",)]
    print(f"{'':22} {'advisor off (shadow)':>22} {'advisor on':>22}")
    for key, values in rows:
        print(f"{key:22} " + " ".join(f"{json.dumps(v):>22}" for v in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
