"""`python -m benchmarks lab`: how fast the lab simulates a scenario, against real time.

Runs a shipped scenario (default: the 30-minute, 4-GPU `large-uploads-10am`) end to end — fleet physics,
DDColor service, the real collector on every request, and writing the files of docs/contracts.md §3 — `--repeat` times,
each in a fresh process, and prints the medians and the speed-up over real time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

_CHILD = """
import json, sys, time, tempfile
from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.outputs import write_run
from gpu_rca.lab.scenario import load_scenario
scenario = load_scenario(sys.argv[1])
t0 = time.perf_counter()
run = run_scenario(scenario)
t1 = time.perf_counter()
with tempfile.TemporaryDirectory() as out:
    write_run(run, out)
t2 = time.perf_counter()
print(json.dumps({"simulate_s": t1 - t0, "write_s": t2 - t1, "spans": len(run.spans),
                  "duration_s": scenario.duration_ns / 1e9, "gpus": len(run.fleet.gpus)}))
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks lab", description=__doc__)
    parser.add_argument("--scenario", default="large-uploads-10am")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.repeat):
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, args.scenario],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    simulate = statistics.median(r["simulate_s"] for r in runs)
    write = statistics.median(r["write_s"] for r in runs)
    duration = runs[0]["duration_s"]
    results = {
        "scenario": args.scenario,
        "gpus": runs[0]["gpus"],
        "spans": runs[0]["spans"],
        "simulated_s": duration,
        "simulate_s": round(simulate, 3),
        "write_s": round(write, 3),
        "total_s": round(simulate + write, 3),
    }
    ratios = {"speedup_over_real_time": round(duration / (simulate + write), 1)}
    if args.json:
        print(json.dumps({"name": "lab", "results": results, "ratios": ratios}))
    else:
        print(f"{args.scenario}: {results['gpus']} GPUs, {duration / 60:g} min simulated, {results['spans']} spans")
        print(f"  simulate {simulate:.2f} s + write {write:.2f} s = {simulate + write:.2f} s (median of {args.repeat})")
        print(f"  {ratios['speedup_over_real_time']}x faster than real time")
    return 0
