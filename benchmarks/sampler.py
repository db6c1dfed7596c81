"""CPU share of one core the NVML sampler takes in the inference process, for a fleet of GPUs at a rate.

The sampler's thread runs alone (the main thread sleeps) for `--seconds` of wall time; its share is the
process's CPU time (user + system) over that wall time. Three NVMLs, side by side in one run:

- `lab`: the lab's simulated NVML, as it is (a Python call per reading, cheaper than a driver call);
- `modelled`: the same, each NVML call made to spend `--nvml-call-us` more CPU time first (a busy wait),
  modelling what a real `pynvml` call costs (figure and source in benchmarks/README.md); one
  `nvmlDeviceGetFieldValues` call costs one call;
- `modelled_per_field`: the same, but a field-values call costs one call per field asked (the bound where
  the driver serves no two of them from one call).

Both include the lab's own work: its simulated GPUs advance their physics inside the NVML calls, which a real
driver does not do in this process. So a third run makes the sampler's NVML calls directly from a thread at
the same rate, without the sampler: `lab` less that is the sampler's own share, and that plus the calls at
`--nvml-call-us` each is `real_nvml_cpu_share_pct`, what the process spends with a real NVML.
Also reported: the sampler's own overhead per sample (one GPU read once), measured by stepping
`sample_once` by hand and subtracting the same NVML calls made directly.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import _cli
from gpu_rca import lab
from gpu_rca.collector import Sampler
from gpu_rca.collector._nvml import COUNTERS

#: A published per-call figure for pynvml on a real GPU (benchmarks/README.md says where it comes from).
NVML_CALL_US = 22.5


class CostlyNvml:
    """An NVML module whose every `nvml*` function spends `call_ns` of CPU before answering; with
    `per_field`, `nvmlDeviceGetFieldValues` spends it once per field asked."""

    def __init__(self, nvml: Any, call_ns: int, per_field: bool = False) -> None:
        self._nvml = nvml
        self._call_ns = call_ns
        self._per_field = per_field
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._nvml, name)
        if not (callable(value) and name.startswith("nvml")):
            return value
        call_ns = self._call_ns
        clock = time.perf_counter_ns
        fields = self._per_field and name == "nvmlDeviceGetFieldValues"

        def costly(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if call_ns:
                until = clock() + call_ns * (len(args[1]) if fields else 1)
                while clock() < until:
                    pass
            return value(*args, **kwargs)

        setattr(self, name, costly)  # looked up once per name
        return costly


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _cli.parser_for("sampler", __doc__)
    parser.add_argument("--gpus", type=int, default=8, help="simulated GPUs in the process (default 8)")
    parser.add_argument("--hz", type=float, default=100.0, help="sampling rate (default 100, the maximum)")
    parser.add_argument("--seconds", type=float, default=5.0, help="wall time the thread runs per repeat")
    parser.add_argument("--nvml-call-us", type=float, default=NVML_CALL_US, help="modelled CPU µs per NVML call")
    parser.add_argument("--ticks", type=int, default=300, help="hand-stepped ticks for the per-sample overhead")
    args = _cli.parse(parser, argv, "gpus", "ticks")
    if args.seconds <= 0 or args.hz <= 0 or args.nvml_call_us < 0:
        parser.error("--seconds and --hz must be positive, --nvml-call-us not negative")
    return args


def _nvml(gpus: int, call_ns: int, per_field: bool = False) -> CostlyNvml:
    nvml = lab.simulated_nvml([{"host": "bench", "gpus": gpus, "model": "H100-80GB"}], seed=1)
    for device in nvml.devices:
        device.load(0.7)
    return CostlyNvml(nvml, call_ns, per_field)


def _share(gpus: int, hz: float, seconds: float, call_ns: int, per_field: bool = False) -> dict[str, float]:
    """The sampler thread alone for `seconds`: CPU share of one core, ticks it made, late ticks."""
    nvml = _nvml(gpus, call_ns, per_field)
    sampler = Sampler(nvml, sample_hz=hz, history_s=60.0)
    sampler.init()
    nvml.calls = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    late = sampler.health.snapshot().get(("dropped", "sampler_late_tick"), 0)
    return {
        "cpu_share_pct": 100.0 * cpu / wall,
        "nvml_calls_per_s": nvml.calls / wall,
        "samples_per_s": sampler.health.total("samples") / wall,
        "late_ticks": float(late),
    }


def _direct_share(gpus: int, hz: float, seconds: float) -> float:
    """CPU share of a thread making the sampler's NVML calls directly at `hz` (lab NVML, no added cost, no
    sampler): what the lab's simulated GPUs cost the process, to subtract from the `lab` share."""
    nvml = _nvml(gpus, 0)
    sampler = Sampler(nvml, sample_hz=hz, history_s=60.0)
    sampler.init()  # the handles and XID event sets the sampler would use; its thread never starts
    pairs = [(nvml.nvmlDeviceGetHandleByIndex(i), reader._event_set) for i, reader in sampler._readers.items()]
    direct = _direct_reads(nvml)
    stop = threading.Event()

    def loop() -> None:
        period, tick, next_t = 1.0 / hz, 0, time.monotonic()
        while not stop.is_set():
            slow = tick % sampler.slow_every == 0
            for handle, events in pairs:
                direct(handle, events, slow)
            tick += 1
            next_t += period
            stop.wait(max(0.0, next_t - time.monotonic()))

    thread = threading.Thread(target=loop, daemon=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    return 100.0 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def _per_sample(gpus: int, ticks: int) -> dict[str, float]:
    """µs per sample: `sample_once` against the same NVML calls made directly (lab NVML, no added cost)."""
    nvml = _nvml(gpus, 0)
    sampler = Sampler(nvml, sample_hz=100.0, history_s=60.0)
    sampler.init()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(gpus)]
    event_sets = [reader._event_set for reader in sampler._readers.values()]
    direct = _direct_reads(nvml)
    t0 = time.perf_counter_ns()
    for _ in range(ticks):
        sampler.sample_once()
    sampled = (time.perf_counter_ns() - t0) / (ticks * gpus)
    t0 = time.perf_counter_ns()
    for tick in range(ticks):
        slow = tick % sampler.slow_every == 0
        for handle, events in zip(handles, event_sets):
            direct(handle, events, slow)
    nvml_only = (time.perf_counter_ns() - t0) / (ticks * gpus)
    return {
        "sample_once_us_per_sample": sampled / 1000,
        "nvml_calls_us_per_sample": nvml_only / 1000,
        "sampler_overhead_us_per_sample": (sampled - nvml_only) / 1000,
    }


def _direct_reads(nvml: Any) -> Callable[[Any, Any, bool], None]:
    """The NVML calls one sample makes (collector/_nvml.py: `_FAST` every tick; on slow ticks `_SLOW`, one
    field-values call for `COUNTERS`, the process list and one XID poll), made directly."""
    counter_ids = [field_id for _, field_id, _ in COUNTERS]

    def read(h: Any, events: Any, slow: bool) -> None:
        nvml.nvmlDeviceGetTemperature(h, 0)
        nvml.nvmlDeviceGetPowerUsage(h)
        nvml.nvmlDeviceGetClockInfo(h, 1)
        nvml.nvmlDeviceGetMemoryInfo(h)
        nvml.nvmlDeviceGetCurrentClocksEventReasons(h)
        if not slow:
            return
        nvml.nvmlDeviceGetUtilizationRates(h)
        nvml.nvmlDeviceGetEnforcedPowerLimit(h)
        nvml.nvmlDeviceGetClockInfo(h, 2)
        nvml.nvmlDeviceGetFieldValues(h, counter_ids)
        nvml.nvmlDeviceGetComputeRunningProcesses(h)
        if events is not None:
            with contextlib.suppress(Exception):
                nvml.nvmlEventSetWait(events, 0)

    return read


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def run(args: argparse.Namespace) -> dict[str, Any]:
    call_ns = int(args.nvml_call_us * 1000)
    # modelled_per_field: a field-values call costs a call per field (the bound where the driver serves no
    # two fields from one call), the modelled one a single call
    kinds = {"lab": (0, False), "modelled": (call_ns, False), "modelled_per_field": (call_ns, True)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in kinds}
    direct: list[float] = []
    for _ in range(args.repeats):  # interleaved: drift hits all alike
        for name, (cost_ns, per_field) in kinds.items():
            runs[name].append(_share(args.gpus, args.hz, args.seconds, cost_ns, per_field))
        direct.append(_direct_share(args.gpus, args.hz, args.seconds))
    results: dict[str, Any] = {
        "gpus": args.gpus,
        "hz": args.hz,
        "seconds": args.seconds,
        "nvml_call_us": args.nvml_call_us,
    }
    for name, measured in runs.items():
        for key in measured[0]:
            results[f"{name}_{key}"] = round(_median([m[key] for m in measured]), 3)
    # The sampler's own share: the lab run less the same NVML calls made directly (the simulated GPUs' work);
    # with a real NVML the process spends that plus the calls' own cost (calls/s x --nvml-call-us).
    results["lab_direct_calls_cpu_share_pct"] = round(_median(direct), 3)
    own = [run["cpu_share_pct"] - calls for run, calls in zip(runs["lab"], direct)]
    results["sampler_own_cpu_share_pct"] = round(_median(own), 3)
    results["real_nvml_cpu_share_pct"] = round(
        _median([o + run["nvml_calls_per_s"] * args.nvml_call_us / 1e4 for o, run in zip(own, runs["lab"])]), 3
    )
    per_sample = [_per_sample(args.gpus, args.ticks) for _ in range(args.repeats)]
    for key in per_sample[0]:
        results[key] = round(_median([p[key] for p in per_sample]), 2)
    return {
        "name": "sampler",
        "results": results,
        "ratios": {
            "modelled_over_lab_cpu": round(
                results["modelled_cpu_share_pct"] / max(results["lab_cpu_share_pct"], 1e-9), 2
            ),
            "modelled_cpu_share_over_target_5pct": round(results["modelled_cpu_share_pct"] / 5.0, 2),
            "modelled_per_field_cpu_share_over_target_5pct": round(
                results["modelled_per_field_cpu_share_pct"] / 5.0, 2
            ),
            "real_nvml_cpu_share_over_target_5pct": round(results["real_nvml_cpu_share_pct"] / 5.0, 2),
        },
    }


def _render(report: dict[str, Any]) -> None:
    r = report["results"]
    print(f"sampler: {r['gpus']} GPUs at {r['hz']:g} Hz, the thread alone for {r['seconds']:g} s (median of repeats)")
    extras = {
        "lab": "",
        "modelled": f" (+{r['nvml_call_us']:g} µs CPU per NVML call)",
        "modelled_per_field": " (the same, a field-values call costing one call per field)",
    }
    for name, extra in extras.items():
        print(
            f"  {name:18s} {r[name + '_cpu_share_pct']:6.2f} % of one core{extra}; "
            f"{r[name + '_nvml_calls_per_s']:.0f} NVML calls/s, {r[name + '_late_ticks']:.0f} late ticks"
        )
    print(
        f"  the same NVML calls made directly at that rate {r['lab_direct_calls_cpu_share_pct']:.2f} %: the sampler's own "
        f"{r['sampler_own_cpu_share_pct']:.2f} %; with real NVML calls ({r['nvml_call_us']:g} µs each) "
        f"{r['real_nvml_cpu_share_pct']:.2f} %"
    )
    print(
        f"  per sample: sample_once {r['sample_once_us_per_sample']:.1f} µs, the NVML calls alone "
        f"{r['nvml_calls_us_per_sample']:.1f} µs, the sampler's own overhead {r['sampler_overhead_us_per_sample']:.1f} µs"
    )


def main(argv: list[str]) -> int:
    args = _parse(argv)
    return _cli.emit(run(args), args.json, _render)
