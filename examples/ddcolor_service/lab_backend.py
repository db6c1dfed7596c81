"""The lab backend: DDColor's cost model on a simulated GPU, on the lab's clock (no GPU, no model weights).

Each request becomes a request of the lab's DDColor service model (`lab.workload.Worker`: a queue, up to
three requests on the GPU at once, memory allocated per request, PyTorch's OOM text when it does not fit,
timeouts). The simulated GPU answers the collector's NVML calls, so spans get real stamps.

Time is the lab's `VirtualClock`. Something must move it: `run_until(t_ns, settle)` steps the simulation
on the lab's 100 ms grid, hands each GPU start and completion to the waiting request at its exact simulated
time, and awaits `settle()` after each so the request's handler finishes (spans ended, logs written) before
time moves on — which makes an in-process run deterministic. `run_realtime()` follows the wall clock
instead, for a service under uvicorn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from examples.ddcolor_service.backend import Colorized
from gpu_rca.lab import ddcolor
from gpu_rca.lab.clock import VirtualClock
from gpu_rca.lab.device import CUDA_CONTEXT_BYTES, STEP_NS, Fleet
from gpu_rca.lab.nvml import SimulatedNvml
from gpu_rca.lab.workload import MAX_CONCURRENCY, Request, Worker
from gpu_rca.schemas.errors import InputError

#: 2026-03-02T10:00:00Z: simulated time starts here unless told otherwise (on the 100 ms grid).
DEFAULT_START_NS = 1_772_445_600_000_000_000
SERVICE_PID = 4242
Settle = Callable[[], Awaitable[None]]


async def _yield() -> None:
    await asyncio.sleep(0)


@dataclass
class _Waiting:
    future: asyncio.Future[None]
    on_gpu_start: Callable[[int], None]
    request: Request


class LabBackend:
    """Colorizes (in simulation) on one simulated GPU of `gpu_model`; pixels come back unchanged."""

    name = "lab"
    max_concurrency = MAX_CONCURRENCY

    def __init__(
        self,
        *,
        gpu_model: str = "L4",
        host: str = "ddcolor-0",
        models: tuple[str, ...] = ("ddcolor_paper_tiny", "ddcolor_paper"),
        seed: int = 0,
        start_ns: int | None = None,
        timeout_s: float = 30.0,
        max_concurrency: int = MAX_CONCURRENCY,
    ) -> None:
        if max_concurrency < 1:
            raise InputError(f"max_concurrency must be at least 1, got {max_concurrency}")
        unknown = [m for m in models if m not in ddcolor.MODEL_COSTS]
        if unknown:
            raise InputError(f"unknown model {unknown[0]!r} (known: {', '.join(sorted(ddcolor.MODEL_COSTS))})")
        start = (start_ns if start_ns is not None else time.time_ns()) // STEP_NS * STEP_NS
        self.models = tuple(models)
        self.timeout_s = timeout_s
        self.timeout_ns = int(timeout_s * 1e9)
        self.clock = VirtualClock(start)
        self.fleet = Fleet([{"host": host, "gpus": 1, "model": gpu_model}], clock=self.clock.now_ns, seed=seed)
        self.host = host
        self.nvml = SimulatedNvml(self.fleet, host)
        self.gpu = self.fleet.gpus[0]
        self.pid = SERVICE_PID
        resident = CUDA_CONTEXT_BYTES + ddcolor.weights_bytes(list(models))
        self.max_concurrency = max_concurrency
        self.worker = Worker(self.gpu, self.pid, resident, self, max_concurrency=max_concurrency)
        self.on_tick: Callable[[int], None] | None = None  # called at each grid time (the collector samples)
        self._arrivals: list[tuple[int, Request]] = []
        self._events: list[tuple[int, int, str, Request, BaseException | None]] = []
        self._waiting: dict[int, _Waiting] = {}
        self._next_id = 0
        self._seq = 0
        self._busy_ns = 0.0

    @property
    def waiting(self) -> int:
        """Requests blocked on the simulation (their handlers wait for a GPU start or completion)."""
        return sum(1 for w in self._waiting.values() if not w.future.done())

    async def colorize(
        self, image: Any, *, input_size: int, model: str, task_type: str, on_gpu_start: Callable[[int], None]
    ) -> Colorized:
        """Queue the request on the simulated worker and wait, in simulated time, for its outcome."""
        if model not in self.models:
            raise InputError(f"model {model!r} is not loaded (loaded: {', '.join(self.models)})")
        now = self.clock.now_ns()
        self._next_id += 1
        request = Request(
            self._next_id,
            now,
            input_size,
            model,
            task_type,
            image.width,
            image.height,
            deadline_ns=now + self.timeout_ns,
        )
        waiting = _Waiting(asyncio.get_running_loop().create_future(), on_gpu_start, request)
        self._waiting[request.id] = waiting
        self._arrivals.append((now, request))
        try:
            await waiting.future  # raises the request's CUDA error or TimeoutError
        finally:
            self._waiting.pop(request.id, None)
        return Colorized(image.convert("RGB"), request.memory_bytes)

    # --- lab.workload.RequestObserver -------------------------------------------------------------
    def accepted(self, request: Request, ts_ns: int) -> None:
        """The handler opened the request's span already."""

    def started(self, request: Request, ts_ns: int) -> None:
        self._event(ts_ns, "start", request, None)

    def finished(self, request: Request, ts_ns: int, exception: BaseException | None) -> None:
        self._event(ts_ns, "end", request, exception)

    def log(self, host: str, ts_ns: int, level: str, message: str, request: Request | None = None) -> None:
        """The handler writes its own logs."""

    def _event(self, ts_ns: int, kind: str, request: Request, exception: BaseException | None) -> None:
        self._seq += 1
        self._events.append((ts_ns, self._seq, kind, request, exception))

    # --- moving time ----------------------------------------------------------------------------
    async def run_until(self, t_ns: int, settle: Settle = _yield) -> None:
        """Advance the simulation to `t_ns`, delivering each start and completion at its simulated time."""
        while self.clock.now_ns() < t_ns:
            t0 = self.clock.now_ns()
            t1 = min((t0 // STEP_NS + 1) * STEP_NS, t_ns)
            arrivals, self._arrivals = self._arrivals, []
            self._busy_ns += self.worker.step(t0, t1, arrivals) * (t1 - t0)
            events, self._events = sorted(self._events), []
            for ts_ns, _, kind, request, exception in events:
                self.clock.advance_to(max(ts_ns, self.clock.now_ns()))
                waiting = self._waiting.get(request.id)
                if waiting is None or waiting.future.done():
                    continue
                if kind == "start":
                    waiting.on_gpu_start(ts_ns)
                    continue
                if exception is None:
                    waiting.future.set_result(None)
                else:
                    waiting.future.set_exception(exception)
                await settle()
            self.clock.advance_to(t1)
            if t1 % STEP_NS == 0:
                # The GPU's physics sees the step's busy fraction, as in the lab's engine.
                self.gpu.load(self._busy_ns / STEP_NS)
                self._busy_ns = 0.0
                self.fleet.advance_to(t1)
                if self.on_tick is not None:
                    self.on_tick(t1)
            await settle()  # let requests submitted meanwhile reach the simulation before time moves on

    async def run_realtime(self, settle: Settle = _yield) -> None:
        """Follow the wall clock forever (a service under uvicorn): simulated time = wall time."""
        while True:
            target = time.time_ns()
            if target > self.clock.now_ns():
                await self.run_until(target, settle)
            await asyncio.sleep(STEP_NS / 1e9 / 2)


__all__ = ["DEFAULT_START_NS", "LabBackend"]
