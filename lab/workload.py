"""The DDColor service model: one worker per GPU with a queue,
processor-shared GPU work, memory allocation, timeouts, and failures that arise from the mechanism.

- An allocation that does not fit fails with PyTorch's OOM text, whichever request allocates last.
- A request past its timeout fails as `TimeoutError` wherever it waits (queue or GPU).
- A CUDA error that kills the worker's context fails its running requests and every request it starts
  until the worker restarts; a lost GPU fails everything sent to it.

The service calls back into a `RequestObserver` (the engine, which drives the real collector).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from gpu_rca.lab import cuda_errors, ddcolor
from gpu_rca.lab.device import SimGpu

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gpu_rca.collector import InferenceSpan

MAX_CONCURRENCY = 3  # requests a worker runs on its GPU at once (estimate of a typical DDColor service)
WORKER_RESTART_NS = 15_000_000_000  # a crashed worker is back after 15 s
CACHE_RELEASE_NS = 20_000_000_000  # the caching allocator keeps freed blocks until 20 s idle (empty_cache)
#: A worker whose own memory does not come back (leaked tensors, stranded blocks) is recycled by the
#: supervisor's health check after this many OOMs in a row: the sawtooth of a leak.
RECYCLE_AFTER_OOMS = 5
#: allocator_fragmentation at severity 1: a request of another size than the last strands this share of
#: the larger one's peak memory in partly used segments.
FRAGMENT_SHARE = 0.1
SERVICE_PROCESS = "python3"

T = TypeVar("T")


@dataclass
class Request:
    """One colorization request."""

    id: int
    accept_ns: int
    input_size: int
    model: str
    task_type: str
    width: int
    height: int
    deadline_ns: int
    work_left_s: float = 0.0
    memory_bytes: int = 0  # held now
    grow_bytes: int = 0  # still to allocate when the decoder runs
    grow_at_work_s: float = 0.0  # remaining work at which it allocates them
    started_ns: int | None = None
    worker: Worker | None = None
    handle: InferenceSpan | None = None
    arrive_ns: int = 0  # the upload arrived; `preprocess` runs on the host CPU until accept_ns
    post_ns: int = 0  # length of the `decode` span after the GPU work (set when it finishes)
    server: Span | None = None  # the request's server span (the trace's root)

    def attributes(self) -> dict[str, object]:
        """The workload attributes the service sets on its inference span."""
        return {
            "ddcolor.input_size": self.input_size,
            "ddcolor.model": self.model,
            "ddcolor.task_type": self.task_type,
            "image.width": self.width,
            "image.height": self.height,
        }


class RequestObserver(Protocol):
    """Receives the service's request lifecycle, with simulated timestamps."""

    def accepted(self, request: Request, ts_ns: int) -> None: ...
    def started(self, request: Request, ts_ns: int) -> None: ...
    def finished(self, request: Request, ts_ns: int, exception: BaseException | None) -> None: ...
    def log(self, host: str, ts_ns: int, level: str, message: str, request: Request | None = None) -> None: ...


@dataclass
class Worker:
    """The serving process on one GPU: a FIFO queue, up to MAX_CONCURRENCY running requests, its memory."""

    gpu: SimGpu
    pid: int
    resident_bytes: int  # CUDA context + weights
    observer: RequestObserver
    queue: deque[Request] = field(default_factory=deque)
    running: list[Request] = field(default_factory=list)
    allocated_bytes: int = 0
    reserved_bytes: int = 0
    idle_since_ns: int = 0
    broken_until_ns: int = 0
    broken_error: str = ""
    app_bug: Callable[[Request], BaseException | None] | None = None
    max_concurrency: int = MAX_CONCURRENCY  # the service's limit on requests running at once
    leak_per_request: int = 0  # memory_leak: bytes each served request keeps alive (set every step)
    fragmentation: float = 0.0  # allocator_fragmentation's severity (set every step)
    leaked_bytes: int = 0  # kept-alive tensors: allocated, never freed until the worker restarts
    stranded_bytes: int = 0  # reserved but unallocated in partly used segments: unusable for new blocks
    last_size: int | None = None
    oom_streak: int = 0
    recycle: bool = False
    down_until_ns: int = 0

    def __post_init__(self) -> None:
        self._publish()

    @property
    def load(self) -> int:
        """Requests queued or running (what the router balances)."""
        return len(self.queue) + len(self.running)

    def _publish(self) -> None:
        # NVML sees what the caching allocator has reserved, not what tensors use right now.
        memory = self.resident_bytes + self.reserved_bytes + self.leaked_bytes + self.stranded_bytes
        current = self.gpu.processes.get(self.pid)
        if current is None or current.memory_bytes != memory:
            self.gpu.set_process(self.pid, SERVICE_PROCESS, memory)

    def accept(self, request: Request, ts_ns: int) -> None:
        """Queue a request routed here."""
        request.worker = self
        self.queue.append(request)
        self.observer.accepted(request, ts_ns)

    def _finish(self, request: Request, ts_ns: int, exception: BaseException | None) -> None:
        if request in self.running:
            self.running.remove(request)
            self.allocated_bytes -= request.memory_bytes
            if exception is None:
                self._served(request)
        self.observer.finished(request, ts_ns, exception)
        if exception is not None:
            message = str(exception).splitlines()[0]
            self.observer.log(
                self.gpu.host, ts_ns, "ERROR", f"colorize failed: {type(exception).__name__}: {message}", request
            )
        else:
            self.observer.log(
                self.gpu.host,
                ts_ns,
                "INFO",
                f"colorized {request.width}x{request.height} in {(ts_ns - request.accept_ns) / 1e6:.0f} ms",
                request,
            )

    def _served(self, request: Request) -> None:
        """A request served: a leak keeps some of its memory; a change of size strands cached blocks."""
        self.oom_streak = 0
        self.leaked_bytes += self.leak_per_request
        if self.fragmentation and self.last_size is not None and request.input_size != self.last_size:
            larger = max(request.input_size, self.last_size)
            self.stranded_bytes += int(
                self.fragmentation * FRAGMENT_SHARE * ddcolor.peak_memory_bytes(request.model, larger)
            )
        self.last_size = request.input_size

    def _restart(self, ts_ns: int) -> None:
        """The supervisor recycles the worker: its memory comes back after WORKER_RESTART_NS."""
        self.recycle = False
        self.leaked_bytes = self.stranded_bytes = self.reserved_bytes = 0
        self.oom_streak = 0
        self.last_size = None
        self.down_until_ns = ts_ns + WORKER_RESTART_NS
        self._publish()
        self.observer.log(self.gpu.host, ts_ns, "WARNING", "worker recycled after repeated CUDA out of memory")

    def crash(self, ts_ns: int, error_text: str, until_ns: int, report_delay_ns: int) -> None:
        """A CUDA error killed this worker's context: running requests fail; it restarts at `until_ns`.

        CUDA reports kernel errors asynchronously, at the next synchronising call, so the running requests
        see the error `report_delay_ns` after the fault.
        """
        self.broken_until_ns = max(self.broken_until_ns, until_ns)
        self.broken_error = error_text
        for request in list(self.running):
            self._finish(request, ts_ns + report_delay_ns, cuda_errors.cuda_error(error_text))

    def _try_start(self, request: Request, ts_ns: int) -> None:
        self.observer.started(request, ts_ns)
        request.started_ns = ts_ns
        if self.gpu.is_lost(ts_ns):
            self._finish(request, ts_ns, cuda_errors.cuda_error(cuda_errors.LAUNCH_FAILURE))
            return
        if ts_ns < self.broken_until_ns:
            self._finish(request, ts_ns, cuda_errors.cuda_error(self.broken_error))
            return
        bug = self.app_bug(request) if self.app_bug else None
        if bug is not None:
            self._finish(request, ts_ns, bug)
            return
        peak = ddcolor.peak_memory_bytes(request.model, request.input_size)
        first = int(peak * ddcolor.EARLY_ALLOCATION_SHARE)
        if not self._allocate(request, first, ts_ns):
            return
        request.grow_bytes = peak - first
        request.work_left_s = ddcolor.work_s(request.model, request.input_size)
        request.grow_at_work_s = request.work_left_s / 2
        self.running.append(request)

    def _allocate(self, request: Request, need: int, ts_ns: int) -> bool:
        """Allocate `need` bytes for `request`, or fail it with PyTorch's OOM (it is the one allocating)."""
        others = {p.pid: p.memory_bytes for p in self.gpu.processes.values() if p.pid != self.pid}
        total = self.gpu.profile.memory_total_bytes
        held = self.resident_bytes + self.allocated_bytes + self.leaked_bytes + self.stranded_bytes
        if sum(others.values()) + held + need > total:
            # PyTorch frees every whole cached segment and retries before it raises: what stays reserved but
            # unallocated is what sits in partly used segments (stranded).
            self.reserved_bytes = self.allocated_bytes
            allocated = self.allocated_bytes + self.leaked_bytes
            reserved = allocated + self.stranded_bytes
            free = total - sum(others.values()) - self.resident_bytes - reserved
            self._finish(
                request,
                ts_ns,
                cuda_errors.cuda_oom(
                    device=self.gpu.index,
                    requested=need,
                    total=total,
                    free=free,
                    process_in_use=self.resident_bytes + reserved,
                    allocated=allocated,
                    reserved=reserved,
                    others=others,
                ),
            )
            self.oom_streak += 1
            if self.oom_streak >= RECYCLE_AFTER_OOMS and (self.leaked_bytes or self.stranded_bytes):
                self.recycle = True
            return False
        request.memory_bytes += need
        self.allocated_bytes += need
        self.reserved_bytes = max(self.reserved_bytes, self.allocated_bytes)
        return True

    def _speed(self) -> float:
        state = self.gpu.state
        foreign = sum(p.busy_fraction for p in self.gpu.processes.values() if p.pid != self.pid)
        clock_ratio = state.sm_clock_mhz / self.gpu.profile.max_sm_clock_mhz
        # A CPU-starved host launches kernels and copies tensors late: the work stalls, the GPU idles between.
        return self.gpu.profile.relative_speed * clock_ratio * max(1.0 - foreign, 0.05) * self.gpu.host_cpu

    def step(self, t0_ns: int, t1_ns: int, arrivals: list[tuple[int, Request]]) -> float:
        """Serve from t0 to t1 (arrivals sorted by time); return the busy fraction of the step."""
        if t0_ns >= self.broken_until_ns > 0 and self.broken_error:
            self.broken_error = ""
            self.observer.log(self.gpu.host, self.broken_until_ns, "WARNING", "worker restarted after CUDA error")
        if not (self.running or self.queue or arrivals):
            if t1_ns - self.idle_since_ns >= CACHE_RELEASE_NS and (self.reserved_bytes or self.stranded_bytes):
                # Idle: every segment is whole again and empty_cache returns it (kept-alive tensors stay).
                self.reserved_bytes = self.stranded_bytes = 0
                self._publish()
            return 0.0
        speed = self._speed()
        now = t0_ns
        busy_ns = 0
        pending = deque(arrivals)
        while True:
            self._expire(now)
            while pending and pending[0][0] <= now:
                ts, request = pending.popleft()
                self.accept(request, ts)
            if self.recycle and not self.running:
                self._restart(now)
            while (
                self.queue
                and len(self.running) < self.max_concurrency
                and not self.recycle
                and now >= self.down_until_ns
            ):
                self._try_start(self.queue.popleft(), now)
            # Next event: an arrival, a completion or a deadline, else the step's end.
            next_ns = t1_ns
            if pending:
                next_ns = min(next_ns, pending[0][0])
            if self.queue and self.down_until_ns > now:
                next_ns = min(next_ns, self.down_until_ns)
            if self.running:
                per_request = speed / len(self.running)
                soonest = min(r.work_left_s - (r.grow_at_work_s if r.grow_bytes else 0.0) for r in self.running)
                next_ns = min(next_ns, now + max(int(max(soonest, 0.0) / per_request * 1e9), 1))
            for request in self.running:
                next_ns = min(next_ns, request.deadline_ns)
            for request in self.queue:
                next_ns = min(next_ns, request.deadline_ns)
            next_ns = max(next_ns, now)
            if self.running:
                done_s = (next_ns - now) / 1e9 * speed / len(self.running)
                busy_ns += next_ns - now
                for request in list(self.running):
                    request.work_left_s -= done_s
                    if request.grow_bytes and request.work_left_s <= request.grow_at_work_s + 1e-9:
                        grow, request.grow_bytes = request.grow_bytes, 0
                        if not self._allocate(request, grow, next_ns):
                            continue
                    if request.work_left_s <= 1e-9:
                        self._finish(request, next_ns, None)
            now = next_ns
            if now >= t1_ns and not pending:
                self._expire(now)
                break
        if self.running:
            self.idle_since_ns = t1_ns
        elif t1_ns - self.idle_since_ns >= CACHE_RELEASE_NS:
            self.reserved_bytes = self.allocated_bytes
        self._publish()
        # Kernels run only while the host keeps the GPU fed: a starved host leaves it idle in between.
        return busy_ns * self.gpu.host_cpu / (t1_ns - t0_ns)

    def _expire(self, now_ns: int) -> None:
        for request in [r for r in self.running if r.deadline_ns <= now_ns]:
            self._finish(request, request.deadline_ns, _timeout(request))
        expired = [r for r in self.queue if r.deadline_ns <= now_ns]
        for request in expired:
            self.queue.remove(request)
            self._finish(request, request.deadline_ns, _timeout(request))


def _timeout(request: Request) -> TimeoutError:
    seconds = (request.deadline_ns - request.accept_ns) / 1e9
    return TimeoutError(f"colorization did not finish within {seconds:g} s")


def draw(rng: random.Random, weights: dict[T, float]) -> T:
    """One value from a normalised weight mapping (stable order: the mapping's)."""
    u = rng.random()
    acc = 0.0
    items = list(weights.items())
    for value, weight in items:
        acc += weight
        if u < acc:
            return value
    return items[-1][0]  # the weights summed to a hair under 1


__all__ = ["MAX_CONCURRENCY", "Request", "RequestObserver", "Worker", "draw"]
