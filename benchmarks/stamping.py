"""Cost of a stamped inference span against its baselines, measured side by side in one run.

- `bare`: an OTel span from the same provider with the same caller attributes (the floor);
- `stamped`: `Collector.start_inference_span(...).end()` over a window of about `--window-samples` samples;
- `nvml_per_span`: a span that queries NVML directly at its end (what stamping avoids on the request path);
- `nvidia_smi_per_query`: the seed article's approach, one `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`
  subprocess per query (the real binary where it exists, else `benchmarks/nvidia_smi_standin.py`).

The NVML used is the lab's simulated one (no GPU here); a real driver call costs more than a simulated one,
so `nvml_per_span` is a lower bound for real hardware. Kinds run in interleaved rounds so drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from gpu_rca import lab
from gpu_rca.collector import Collector
from gpu_rca.schemas import attributes as A

PERIOD_NS = 100_000_000  # 10 Hz
START_NS = 1_767_225_600 * 10**9
SMI_FIELDS = (
    "temperature.gpu,power.draw,enforced.power.limit,memory.used,memory.total,utilization.gpu,clocks.sm,"
    "clocks_event_reasons.active,ecc.errors.uncorrected.volatile.total"
)
CALLER_ATTRIBUTES = {
    A.DDCOLOR_INPUT_SIZE: 512,
    A.DDCOLOR_MODEL: "ddcolor_paper_tiny",
    A.DDCOLOR_TASK_TYPE: "person",
    A.IMAGE_WIDTH: 1024,
    A.IMAGE_HEIGHT: 768,
}


class NullExporter(SpanExporter):
    """Drops spans: the benchmark times the request path, not an exporter."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stamping", description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=3000, help="spans per kind (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the spans are split into")
    parser.add_argument("--window-samples", type=int, default=10, help="samples in each stamped span's window")
    parser.add_argument("--smi-queries", type=int, default=30, help="nvidia-smi subprocesses to time")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if min(args.spans, args.rounds, args.window_samples, args.smi_queries) < 1:
        parser.error("sizes must be positive")
    return args


def _nvidia_smi() -> tuple[list[str], str]:
    real = shutil.which("nvidia-smi")
    if real is not None:
        probe = subprocess.run([real, "-L"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [real], "nvidia-smi"
    standin = Path(__file__).with_name("nvidia_smi_standin.py")
    return [sys.executable, str(standin)], "benchmarks/nvidia_smi_standin.py (no working nvidia-smi here)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = lab.VirtualClock(START_NS)
    nvml = lab.simulated_nvml([{"host": "bench", "gpus": 1, "model": "L4"}], clock=clock.now_ns)
    nvml.devices[0].load(0.8)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NullExporter()))
    collector = Collector(
        nvml, clock=clock.now_ns, tracer_provider=provider, background=False, cuda_visible_devices=None
    )
    collector.start()
    history = collector.sampler.capacity - 1  # fill the ring: windows land anywhere in it
    for _ in range(history):
        clock.advance(PERIOD_NS)
        collector.sample_once()
    span_ns = args.window_samples * PERIOD_NS - PERIOD_NS // 2
    first = START_NS + PERIOD_NS + PERIOD_NS // 4
    slots = max(1, history - args.window_samples - 1)
    tracer = provider.get_tracer("bench")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)

    def bare(i: int) -> None:
        start = first + (i % slots) * PERIOD_NS
        span = tracer.start_span("ddcolor.inference", attributes=CALLER_ATTRIBUTES, start_time=start)
        span.end(end_time=start + span_ns)

    def stamped(i: int) -> None:
        start = first + (i % slots) * PERIOD_NS
        span = collector.start_inference_span("ddcolor.inference", gpu=0, attributes=CALLER_ATTRIBUTES, start_ns=start)
        span.end(end_ns=start + span_ns)

    def nvml_per_span(i: int) -> None:
        start = first + (i % slots) * PERIOD_NS
        span = tracer.start_span("ddcolor.inference", attributes=CALLER_ATTRIBUTES, start_time=start)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
        span.set_attributes(
            {
                A.TEMPERATURE_MAX: nvml.nvmlDeviceGetTemperature(handle, 0),
                A.POWER_MAX: nvml.nvmlDeviceGetPowerUsage(handle) / 1000,
                A.POWER_LIMIT: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
                A.MEMORY_USED_MAX: memory.used,
                A.MEMORY_TOTAL: memory.total,
                A.UTILIZATION_MAX: float(util.gpu),
                A.CLOCK_SM_MIN: nvml.nvmlDeviceGetClockInfo(handle, 1),
                A.THROTTLE_REASONS: [str(nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))],
                A.ECC_UNCORRECTED_DELTA: nvml.nvmlDeviceGetTotalEccErrors(handle, 1, 0),
            }
        )
        span.end(end_time=start + span_ns)

    smi_command, smi_source = _nvidia_smi()
    smi_command = [*smi_command, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"]

    def nvidia_smi_per_query(i: int) -> None:
        start = first + (i % slots) * PERIOD_NS
        span = tracer.start_span("ddcolor.inference", attributes=CALLER_ATTRIBUTES, start_time=start)
        out = subprocess.run(smi_command, capture_output=True, text=True, check=True).stdout
        values = [v.strip() for v in out.splitlines()[0].split(",")]
        span.set_attribute(A.TEMPERATURE_MAX, int(values[0]))
        span.end(end_time=start + span_ns)

    kinds: dict[str, Callable[[int], None]] = {"bare": bare, "stamped": stamped, "nvml_per_span": nvml_per_span}
    timings: dict[str, list[int]] = {name: [] for name in [*kinds, "nvidia_smi_per_query"]}
    for fn in kinds.values():  # warm up caches and code paths
        for i in range(200):
            fn(i)
    per_round = max(1, args.spans // args.rounds)
    smi_per_round = max(1, args.smi_queries // args.rounds)
    counter = time.perf_counter_ns
    for r in range(args.rounds):
        for name, fn in kinds.items():
            samples = timings[name]
            for i in range(r * per_round, (r + 1) * per_round):
                t0 = counter()
                fn(i)
                samples.append(counter() - t0)
        for i in range(smi_per_round):
            t0 = counter()
            nvidia_smi_per_query(i)
            timings["nvidia_smi_per_query"].append(counter() - t0)
    check = collector.start_inference_span("check", gpu=0, start_ns=first, attributes=CALLER_ATTRIBUTES)
    window = len(collector.sampler.window(0, first, first + span_ns))
    check.end(end_ns=first + span_ns)
    collector.shutdown()
    medians_us = {name: statistics.median(values) / 1000 for name, values in timings.items()}
    return {
        "name": "stamping",
        "results": {
            **{f"{name}_median_us": round(v, 2) for name, v in medians_us.items()},
            "spans_per_kind": per_round * args.rounds,
            "nvidia_smi_queries": smi_per_round * args.rounds,
            "window_samples": window,
            "nvidia_smi": smi_source,
        },
        "ratios": {
            "stamped_over_bare": round(medians_us["stamped"] / medians_us["bare"], 2),
            "nvml_per_span_over_bare": round(medians_us["nvml_per_span"] / medians_us["bare"], 2),
            "nvml_per_span_over_stamped": round(medians_us["nvml_per_span"] / medians_us["stamped"], 2),
            "nvidia_smi_over_stamped": round(medians_us["nvidia_smi_per_query"] / medians_us["stamped"], 1),
        },
    }


def main(argv: list[str]) -> int:
    args = _parse(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    r = result["results"]
    print(f"stamping: median cost per inference span (window of {r['window_samples']} samples)")
    for name in ("bare", "stamped", "nvml_per_span", "nvidia_smi_per_query"):
        print(f"  {name:22s} {r[name + '_median_us']:>10.1f} µs")
    for name, value in result["ratios"].items():
        print(f"  {name:28s} {value:>8}x")
    print(f"  nvidia-smi: {r['nvidia_smi']}")
    return 0
