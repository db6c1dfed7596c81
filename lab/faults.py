"""Fault injection: each fault changes the model's inputs (the table in docs/contracts.md §5), never its outputs.

Hardware events (XIDs, ECC errors, a GPU falling off the bus) are drawn up front from the scenario's
seed, so a run is reproducible; background noise a real fleet has (benign XIDs 43/45 from other
processes) is drawn here too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gpu_rca.lab import cuda_errors
from gpu_rca.lab.device import Fleet, SimGpu
from gpu_rca.lab.kernel_log import xid_message
from gpu_rca.lab.scenario import Fault, Scenario, WorkloadOverrides
from gpu_rca.lab.workload import WORKER_RESTART_NS, Request
from gpu_rca.schemas.xid import xid_info

NS = 1_000_000_000
#: memory_leak: GPU memory a leaking worker keeps alive per request served, at severity 1.
LEAK_BYTES_PER_REQUEST = 64 * 1024 * 1024
GPU_RESET_NS = 60 * NS  # an uncontained error or a GPU-level XID: the GPU is reset before work resumes
FOREIGN_PID_BASE = 31000
_DRIVER_EVENTS = frozenset({63, 64, 92})  # row-remap and SBE-rate reports


#: The fault kinds that put events on a GPU (XIDs, ECC counters, loss).
_HARDWARE_FAULTS = frozenset({"gpu_lost", "xid", "ecc_uncorrectable"})


@dataclass(frozen=True)
class HardwareEvent:
    """An XID on a GPU at a time, with what it does to the serving worker."""

    ts_ns: int
    gpu: SimGpu
    code: int
    ours: bool  # raised in the serving process (else another process's channel: no effect on us)
    ecc_uncorrected: int = 0
    ecc_corrected: int = 0


def _poisson_times(rng: random.Random, rate_per_s: float, start_ns: int, end_ns: int) -> list[int]:
    times = []
    t = start_ns
    while rate_per_s > 0:
        t += int(rng.expovariate(rate_per_s) * NS)
        if t >= end_ns:
            break
        times.append(t)
    return times


class FaultDriver:
    """Applies a scenario's faults to the fleet's inputs and hands out its hardware events in time order."""

    def __init__(self, scenario: Scenario, fleet: Fleet, rng: random.Random) -> None:
        self.scenario = scenario
        self.fleet = fleet
        self.rng = rng
        self.start_ns = scenario.start_ns
        self.events = sorted(self._draw_events(), key=lambda e: (e.ts_ns, e.gpu.host, e.gpu.index, e.code))
        self._next = 0
        self._foreign_pids = {id(f): FOREIGN_PID_BASE + 97 * i for i, f in enumerate(scenario.faults)}

    def _draw_events(self) -> list[HardwareEvent]:
        end_of_run = self.start_ns + self.scenario.duration_ns
        events: list[HardwareEvent] = []
        for fault in self.scenario.faults:
            if fault.kind not in _HARDWARE_FAULTS:
                continue
            if fault.gpu is None:  # the scenario parser requires a GPU for these kinds
                raise ValueError(f"a {fault.kind} fault without a gpu")
            start = self.start_ns + fault.start_ns
            end = self.start_ns + fault.end_ns if fault.end_ns is not None else end_of_run
            gpu = self.fleet.gpu(fault.gpu)
            if fault.kind == "gpu_lost":
                gpu.lost_at_ns = start
                events.append(HardwareEvent(start, gpu, 79, True))
            elif fault.kind == "xid" and fault.code is not None:  # the parser requires the code
                rate = 0.004 + 0.05 * fault.severity
                times = _poisson_times(self.rng, rate, start, end) or [start + (end - start) // 10]
                for ts in times:
                    events.append(HardwareEvent(ts, gpu, fault.code, True))
                    if fault.code == 79:
                        gpu.lost_at_ns = ts
                        break
            elif fault.kind == "ecc_uncorrectable":
                rate = 0.004 + 0.04 * fault.severity
                times = _poisson_times(self.rng, rate, start, end) or [start + (end - start) // 10]
                follow = 95 if fault.severity > 0.7 else 94
                for n, ts in enumerate(times):
                    events.append(
                        HardwareEvent(ts, gpu, 48, True, ecc_uncorrected=1, ecc_corrected=self.rng.randint(2, 40))
                    )
                    events.append(HardwareEvent(ts, gpu, 63, False))
                    events.append(HardwareEvent(ts, gpu, follow, True))
                    if fault.severity > 0.85 and n == 2:
                        events.append(HardwareEvent(ts, gpu, 64, False))
        # Noise: a benign XID 43 or 45 from another process's channel on a few GPUs.
        for gpu in self.fleet.gpus:
            if self.rng.random() < 0.3:
                ts = self.start_ns + int(self.rng.random() * self.scenario.duration_ns)
                events.append(HardwareEvent(ts, gpu, self.rng.choice((43, 45)), False))
        return events

    def apply(self, now_ns: int) -> None:
        """Set every GPU's inputs for the step starting at `now_ns`."""
        offset = now_ns - self.start_ns
        for gpu in self.fleet.gpus:
            gpu.cooling = 1.0
            gpu.slowdown = 0.0
            gpu.power_limit_w = gpu.profile.power_limit_default_w
            gpu.host_cpu = 1.0
        for fault in self.scenario.faults:
            if fault.gpu is None:
                continue
            gpu = self.fleet.gpu(fault.gpu)
            active = fault.active(offset)
            if fault.kind == "thermal" and active:
                gpu.cooling = min(gpu.cooling, 1.0 - 0.95 * fault.severity)
            elif fault.kind == "power_cap" and active:
                gpu.power_limit_w = min(
                    gpu.power_limit_w, gpu.profile.power_limit_default_w * (1 - 0.6 * fault.severity)
                )
            elif fault.kind == "hw_slowdown" and active:
                gpu.slowdown = max(gpu.slowdown, fault.severity)
            elif fault.kind == "host_cpu_starvation" and active:
                # The whole host's CPU: every GPU's serving process on it gets (1 - severity) of its CPU time.
                for other in self.fleet.gpus:
                    if other.host == gpu.host:
                        other.host_cpu = min(other.host_cpu, max(1.0 - fault.severity, 0.05))
            elif fault.kind == "foreign_process":
                pid = self._foreign_pids[id(fault)]
                if active:
                    memory = int(fault.severity * gpu.profile.memory_total_bytes)
                    gpu.set_process(pid, "python3", memory, busy_fraction=0.3 * fault.severity)
                else:
                    gpu.remove_process(pid)

    def host_version(self, host: str) -> str | None:
        """The service version a memory_leak fault deploys on `host` (its GPU's host, or every host), if any."""
        for fault in self.scenario.faults:
            if fault.kind == "memory_leak" and fault.version and (fault.gpu is None or self._host(fault) == host):
                return fault.version
        return None

    def _host(self, fault: Fault) -> str | None:
        return self.fleet.gpu(fault.gpu).host if fault.gpu else None

    def memory(self, now_ns: int, gpu: SimGpu) -> tuple[int, float]:
        """(bytes a worker on `gpu` leaks per request served, its allocator's fragmentation 0..1) at `now_ns`.

        A leak with a `version` hits every worker of the host running that version; without one, the fault's
        GPU's worker, or every worker when it names no GPU.
        """
        offset = now_ns - self.start_ns
        leak, fragmentation = 0, 0.0
        for fault in self.scenario.faults:
            if not fault.active(offset) or fault.kind not in ("memory_leak", "allocator_fragmentation"):
                continue
            if fault.gpu is not None:
                target = self.fleet.gpu(fault.gpu)
                hit = target.host == gpu.host if fault.kind == "memory_leak" and fault.version else target is gpu
                if not hit:
                    continue
            if fault.kind == "memory_leak":
                leak = max(leak, int(fault.severity * LEAK_BYTES_PER_REQUEST))
            else:
                fragmentation = max(fragmentation, fault.severity)
        return leak, fragmentation

    def workload_overrides(self, now_ns: int) -> WorkloadOverrides:
        """The traffic_shift values in force at `now_ns` (later faults win)."""
        offset = now_ns - self.start_ns
        overrides: WorkloadOverrides = {}
        for fault in self.scenario.faults:
            if fault.kind == "traffic_shift" and fault.active(offset):
                if fault.rate_per_s is not None:
                    overrides["rate_per_s"] = fault.rate_per_s
                if fault.input_size is not None:
                    overrides["input_size"] = fault.input_size
                if fault.task_type is not None:
                    overrides["task_type"] = fault.task_type
                if isinstance(fault.model, dict):  # a traffic shift's model mix (an app bug's is one name)
                    overrides["model"] = fault.model
        return overrides

    def app_bug(self, now_ns: int, request: Request) -> BaseException | None:
        """An application exception for this request, if an app_bug fault hits it."""
        offset = now_ns - self.start_ns
        for fault in self.scenario.faults:
            if fault.kind != "app_bug" or not fault.active(offset):
                continue
            if fault.model is not None and request.model != fault.model:
                continue
            if (
                fault.gpu is not None
                and request.worker is not None
                and request.worker.gpu is not self.fleet.gpu(fault.gpu)
            ):
                continue
            if self.rng.random() < fault.severity:
                return _app_exception(fault, request)
        return None

    def due(self, until_ns: int) -> list[HardwareEvent]:
        """Hardware events at or before `until_ns` not handed out yet."""
        due = []
        while self._next < len(self.events) and self.events[self._next].ts_ns <= until_ns:
            due.append(self.events[self._next])
            self._next += 1
        return due


def _app_exception(fault: Fault, request: Request) -> BaseException:
    # A shape bug in the post-processing for one checkpoint: numpy's real broadcast message.
    h, w = request.height, request.width
    return ValueError(f"operands could not be broadcast together with shapes ({h},{w},2) ({h // 2},{w // 2},1)")


def apply_event(event: HardwareEvent, worker_pid: int, rng: random.Random) -> tuple[str | None, int]:
    """Record an XID on its GPU; return (CUDA error text for the serving worker or None, how long it is down)."""
    gpu = event.gpu
    gpu.ecc_uncorrected += event.ecc_uncorrected
    gpu.ecc_corrected += event.ecc_corrected
    if event.code in _DRIVER_EVENTS:
        pid, process = None, None  # the driver's own bookkeeping: no process to name
    elif event.ours:
        pid, process = worker_pid, "python3"
    else:
        pid, process = FOREIGN_PID_BASE + 7 + gpu.index, "python3"
    gpu.record_xid(event.ts_ns, event.code, xid_message(event.code, rng), pid, process)
    info = xid_info(event.code)
    if not event.ours or not (info.kills_context or info.kills_gpu):
        return None, 0
    if event.code in (13, 31):
        text = cuda_errors.ILLEGAL_ADDRESS
    elif event.code in (48, 94, 95):
        text = cuda_errors.ECC_UNCORRECTABLE
    else:
        text = cuda_errors.LAUNCH_FAILURE
    return text, GPU_RESET_NS if info.kills_gpu else WORKER_RESTART_NS


__all__ = ["FaultDriver", "HardwareEvent", "apply_event"]
