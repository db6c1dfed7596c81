"""`python -m benchmarks advisor`: the admission advisor on vs off under a burst of 1280s, and its cost.

For each seed, the reference DDColor service (lab backend, in-process, on the lab's clock) takes the same
seeded burst twice: advisor in shadow mode (advice never enforced: the baseline) and enforcing (429 with a
smaller size). Prints OOM failures and goodput per seed, their medians and ratios, and the median time
one `advise()` call takes on the request path (wall clock, a warmed advisor with requests in flight).
Needs the `examples` extra; run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _advise_cost_us(calls: int) -> float:
    """Median microseconds per `advise()` on a simulated L4 with a learnt fit and three requests in flight."""
    from opentelemetry.sdk.trace import TracerProvider

    from gpu_rca import collector, lab
    from gpu_rca.schemas import attributes as A

    clock = lab.VirtualClock(1_772_445_600_000_000_000)
    nvml = lab.simulated_nvml([{"host": "bench", "gpus": 1, "model": "L4"}], clock=clock.now_ns)
    c = collector.Collector(
        nvml=nvml,
        clock=clock.now_ns,
        tracer_provider=TracerProvider(),
        sample_hz=10,
        background=False,
        cuda_visible_devices=None,
        pid=1,
    )
    c.start()
    advisor = collector.AdmissionAdvisor(c, models=["ddcolor_paper"], max_concurrency=3)
    for size in (512, 768, 1024) * 4:
        clock.advance(100_000_000)
        c.sample_once()
        span = c.start_inference_span(
            "ddcolor.inference",
            gpu=0,
            attributes={
                A.DDCOLOR_INPUT_SIZE: size,
                A.DDCOLOR_MODEL: "ddcolor_paper",
                A.INFERENCE_MEMORY_PEAK: 7000 * size * size,
            },
        )
        clock.advance(300_000_000)
        c.sample_once()
        span.end()
    open_spans = [
        c.start_inference_span(
            "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: 1024, A.DDCOLOR_MODEL: "ddcolor_paper"}
        )
        for _ in range(3)
    ]
    timings = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        advisor.advise(0, "ddcolor_paper", 1280)
        timings.append(time.perf_counter_ns() - t0)
    for span in open_spans:
        span.end()
    return statistics.median(timings) / 1e3


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks advisor", description=__doc__)
    parser.add_argument("--seeds", default="1,2,3,7", help="comma-separated burst seeds")
    parser.add_argument("--calls", type=int, default=2000, help="advise() calls timed")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests the service runs on its GPU at once (default: the lab's); checks a digest's pool figure",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from examples.ddcolor_service.loadgen import BurstPlan, compare

    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    limit = {} if args.concurrency is None else {"max_concurrency": args.concurrency}

    per_seed = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        runs = compare(BurstPlan(seed=seed, **limit))
        per_seed[seed] = {
            mode: {
                "succeeded": r.succeeded,
                "oom": r.failed.get("cuda_oom", 0),
                "refused": r.refused,
                "goodput_per_min": r.goodput_per_min,
            }
            for mode, r in runs.items()
        }

    def median(mode: str, key: str) -> float:
        return statistics.median(s[mode][key] for s in per_seed.values())

    results = {
        "seeds": per_seed,
        "off": {k: median("shadow", k) for k in ("succeeded", "oom", "goodput_per_min")},
        "on": {k: median("enforce", k) for k in ("succeeded", "oom", "goodput_per_min")},
        "advise_us": round(_advise_cost_us(args.calls), 1),
        "concurrency": args.concurrency or BurstPlan().max_concurrency,
    }
    ratios = {
        "goodput_on_over_off": round(results["on"]["goodput_per_min"] / results["off"]["goodput_per_min"], 2),
        "oom_on_over_off": round(results["on"]["oom"] / results["off"]["oom"], 2) if results["off"]["oom"] else None,
    }
    if args.json:
        print(json.dumps({"name": "advisor", "results": results, "ratios": ratios}))
        return 0
    print(f"{'seed':>6} {'OOM off':>8} {'OOM on':>7} {'goodput off':>12} {'goodput on':>11}  (successful requests/min)")
    for seed, s in per_seed.items():
        print(
            f"{seed:>6} {s['shadow']['oom']:>8} {s['enforce']['oom']:>7} {s['shadow']['goodput_per_min']:>12} "
            f"{s['enforce']['goodput_per_min']:>11}"
        )
    print(f"service concurrency: {results['concurrency']} requests at once on the GPU")
    print(f"median goodput on/off: {ratios['goodput_on_over_off']}x; OOM on/off: {ratios['oom_on_over_off']}")
    print(f"advise(): {results['advise_us']} µs per call (median of {args.calls}, 3 requests in flight)")
    return 0
