"""The background NVML sampler: one bounded ring buffer of samples per GPU.

The NVML module and the clock are passed in, so the lab's simulated GPUs and a virtual clock drive the
same code; `sample_once(now_ns)` steps it by hand. The thread starts on `start()` (never at import) and,
after a fork, again lazily in the child on the next `ensure_started()`.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpu_rca.collector._health import Health
from gpu_rca.collector._nvml import DROPPED, ERRORS, SAMPLES, DeviceInfo, DeviceLost, DeviceReader, Sample
from gpu_rca.collector._nvml_source import NvmlSource
from gpu_rca.collector._ring import NOTHING_REDUCED, QuietWindow, Ring, RingWindow

Clock = Callable[[], int]

MAX_SAMPLE_HZ = 100.0
#: The rate of the slow reads (utilisation, power limit, memory clock, the counters, the process list, XID
#: events) when sampling faster; at this rate or slower every tick reads everything.
SLOW_HZ = 10.0

# getpid() is a system call; the request path asks "am I still the process that started the sampler?"
# on every span, so the answer is cached and refreshed in a forked child.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


#: Every live sampler, so one fork hook (os.register_at_fork cannot unregister) resets them all.
_SAMPLERS: weakref.WeakSet[Sampler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    _refresh_pid()
    for sampler in list(_SAMPLERS):
        sampler._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_pid() -> int:
    """This process's id (cached; refreshed after fork)."""
    return _pid


def as_clock(clock: Any) -> Clock:
    """A `() -> ns` callable from a callable, or an object with `now_ns()`/`time_ns()` (a virtual clock)."""
    if clock is None:
        return time.time_ns
    for name in ("now_ns", "time_ns"):
        method = getattr(clock, name, None)
        if callable(method):
            return method
    if callable(clock):
        return clock
    raise TypeError(f"clock must be a callable returning ns or have now_ns(), got {clock!r}")


@dataclass(frozen=True, slots=True)
class SamplerEvent:
    """Something that happened to the sampler or a GPU: `gpu_lost`, `nvml_error`, `driver_error`."""

    ts_ns: int
    gpu_index: int | None
    kind: str
    detail: str


class Sampler:
    """Samples every visible GPU at `sample_hz` into per-GPU rings; NVML failures become counts and events."""

    def __init__(
        self,
        nvml: NvmlSource,
        *,
        clock: Any = None,
        sample_hz: float = 10.0,
        history_s: float = 60.0,
        health: Health | None = None,
        pid: int | None = None,
    ) -> None:
        if not 0 < sample_hz <= MAX_SAMPLE_HZ:
            raise ValueError(f"sample_hz must be in (0, {MAX_SAMPLE_HZ:g}], got {sample_hz!r}")
        if history_s <= 0:
            raise ValueError(f"history_s must be positive, got {history_s!r}")
        self.nvml = nvml
        self.clock = as_clock(clock)
        self.sample_hz = float(sample_hz)
        self.period_ns = int(1e9 / sample_hz)
        self.capacity = max(4, int(history_s * sample_hz))
        #: Every how many ticks the slow fields are read (1 at SLOW_HZ or slower).
        self.slow_every = max(1, round(self.sample_hz / SLOW_HZ))
        self._tick = 0
        self.health = health or Health()
        self._pid_override = pid
        self.events: deque[SamplerEvent] = deque(maxlen=256)
        self._readers: dict[int, DeviceReader] = {}
        self._rings: dict[int, Ring] = {}
        self._lost: set[int] = set()
        #: The last XID seen per GPU (dcgm-exporter's XID gauge keeps it until restart).
        self.last_xid: dict[int, int] = {}
        self._devices: tuple[DeviceInfo, ...] = ()
        self._by_index: dict[int, DeviceInfo] = {}
        self._init_lock = threading.Lock()
        self._initialised_pid: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._stop = threading.Event()
        self._stopped = False
        self.available = False
        _SAMPLERS.add(self)

    # --- lifecycle -------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork and a lock may be held forever: start over lazily.
        self._init_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        for ring in self._rings.values():
            ring.reset_lock()

    def init(self) -> bool:
        """Initialise NVML and discover GPUs (once per process). False, counted and logged, when NVML fails."""
        pid = _pid  # current_pid(), read inline: this runs on every span
        if self._initialised_pid == pid:
            return self.available
        with self._init_lock:
            if self._initialised_pid == pid:
                return self.available
            self.available = self._discover(pid)
            self._initialised_pid = pid
        return self.available

    def _discover(self, pid: int) -> bool:
        nv = self.nvml
        try:
            nv.nvmlInit()
            count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            self.health.failure(ERRORS, "nvml_init", "NVML unavailable, running with gpu.telemetry.source=none", exc)
            self._record(None, "driver_error", f"{type(exc).__name__}: {exc}")
            return False
        readers: dict[int, DeviceReader] = {}
        own_pid = self._pid_override if self._pid_override is not None else pid
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                readers[index] = DeviceReader(nv, index, handle, self.health, own_pid)
            except Exception as exc:
                self.health.failure(ERRORS, "nvml_discover", f"GPU {index}: discovery failed", exc)
                self._record(index, "nvml_error", f"{type(exc).__name__}: {exc}")
        self._readers = readers
        self._rings = {i: self._rings.get(i) or Ring(self.capacity) for i in readers}
        self._devices = tuple(r.info for r in readers.values())
        self._by_index = {d.index: d for d in self._devices}
        self._lost = set()
        return True

    def start(self) -> bool:
        """Initialise and start the background thread (no-op when running). False when NVML is unavailable."""
        self._stopped = False
        if not self.init():
            return False
        pid = current_pid()
        if self._thread is not None and self._thread_pid == pid and self._thread.is_alive():
            return True
        with self._init_lock:
            if self._thread is None or self._thread_pid != pid or not self._thread.is_alive():
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, name="gpu-rca-sampler", daemon=True)
                self._thread_pid = pid
                self._thread.start()
        return True

    def ensure_started(self) -> None:
        """Start the thread if this process has none yet (first use, or a forked child) and `stop()` was
        not called; cheap when it runs."""
        if self._thread_pid != _pid and not self._stopped:
            self.start()

    def stop(self) -> None:
        """Stop the thread and free NVML event sets; safe to call twice."""
        self._stopped = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout=2.0)
        self._thread = None
        for reader in self._readers.values():
            reader.close()

    def _run(self) -> None:
        period_s = 1.0 / self.sample_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:
                self.health.failure(ERRORS, "sampler", "sampler tick failed", exc)
            next_t += period_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (a slow NVML call): skip ticks instead of bursting
                self.health.count(DROPPED, "sampler_late_tick")
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    # --- sampling --------------------------------------------------------------------------------
    def sample_once(self, now_ns: int | None = None) -> None:
        """Read every GPU once, stamped `now_ns` (default: the clock): the fast fields at every tick, the slow
        ones every `slow_every` ticks (see `SLOW_HZ`), the first tick included. Never raises for NVML failures."""
        if not self.init():
            return
        ts = self.clock() if now_ns is None else int(now_ns)
        slow = self._tick % self.slow_every == 0
        self._tick += 1
        for index, reader in self._readers.items():
            if index in self._lost:
                continue
            try:
                sample = reader.read(ts, slow)
            except DeviceLost as exc:
                self._lost.add(index)
                self.health.failure(ERRORS, "gpu_lost", f"GPU {index} is lost; not sampled again", exc)
                self._record(index, "gpu_lost", str(exc), ts)
                sample = reader.last_words(ts)
                if sample is not None:
                    self.last_xid[index] = sample.xids[-1]
                    self._rings[index].append(sample)
                continue
            if sample is None:  # every read failed this tick: counted per field already
                self.health.count(DROPPED, "nvml_failed_sample")
                self._record(index, "nvml_error", "no field could be read", ts)
                continue
            if sample.xids:
                self.last_xid[index] = sample.xids[-1]
            self._rings[index].append(sample)  # the oldest samples age out: bounded memory, not a drop
            self.health.count(SAMPLES, str(index))

    def _record(self, gpu_index: int | None, kind: str, detail: str, ts_ns: int | None = None) -> None:
        self.events.append(SamplerEvent(ts_ns if ts_ns is not None else self.clock(), gpu_index, kind, detail))

    # --- reading -------------------------------------------------------------------------------
    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """Every discovered GPU, in NVML index order."""
        return self._devices

    def device(self, index: int) -> DeviceInfo | None:
        """The GPU with NVML index `index`, if discovered."""
        return self._by_index.get(index)

    def is_lost(self, index: int) -> bool:
        """Whether the GPU answered GpuIsLost."""
        return index in self._lost

    def ring(self, index: int) -> Ring | None:
        """GPU `index`'s sample ring (the same object while the GPU stays discovered), if it has one."""
        return self._rings.get(index)

    def window(self, index: int, start_ns: int, end_ns: int) -> list[Sample]:
        """The samples of GPU `index` in a span's window (docs/contracts.md §1); [] when it has none."""
        ring = self._rings.get(index)
        return ring.window(start_ns, end_ns) if ring is not None else []

    def window_stats(self, index: int, start_ns: int, end_ns: int) -> RingWindow:
        """The window of GPU `index` with its reductions (see `Ring.window_stats`; empty when it has none)."""
        ring = self._rings.get(index)
        return ring.window_stats(start_ns, end_ns) if ring is not None else ([], NOTHING_REDUCED, True)

    def quiet_window(self, index: int, start_ns: int, end_ns: int) -> QuietWindow | None:
        """GPU `index`'s window when it is the common, quiet one (see `Ring.quiet_window`), else None."""
        ring = self._rings.get(index)
        return ring.quiet_window(start_ns, end_ns) if ring is not None else None

    def latest(self, gpu: int | str) -> Sample | None:
        """The newest sample of a GPU, named by NVML index or UUID."""
        if isinstance(gpu, str):
            gpu = next((d.index for d in self._devices if d.uuid == gpu), -1)
        ring = self._rings.get(gpu)
        return ring.latest() if ring is not None else None
