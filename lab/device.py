"""Simulated GPUs and the fleet that steps them on one clock (the state behind the simulated NVML)."""

from __future__ import annotations

import random
import threading
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpu_rca.lab.physics import PhysicsInputs, PhysicsState, idle_state, step
from gpu_rca.lab.profiles import GpuProfile, get_profile
from gpu_rca.schemas.errors import InputError

if TYPE_CHECKING:
    pass

STEP_NS = 100_000_000  # physics resolution: 100 ms
#: PCI bus ids of GPU slots on a typical 8-GPU server, in NVML index order.
PCI_SLOTS = ("18", "3b", "5e", "86", "af", "d8", "d9", "da")
CUDA_CONTEXT_BYTES = 500 * 1024 * 1024  # estimate: a CUDA context plus cuDNN/cuBLAS workspaces


@dataclass(frozen=True)
class XidRecord:
    """One XID as the driver reports it: NVML event and kernel log line."""

    ts_ns: int
    code: int
    pid: int | None
    process: str | None
    message: str


@dataclass
class GpuProcess:
    """A process holding memory (and possibly compute) on a GPU."""

    pid: int
    name: str
    memory_bytes: int
    busy_fraction: float = 0.0


@dataclass
class SimGpu:
    """One simulated GPU: identity, inputs (load, environment, faults), physical state and counters."""

    host: str
    index: int
    profile: GpuProfile
    uuid: str
    pci_bus_id: str  # NVML's form, `00000000:3B:00.0`
    state: PhysicsState
    power_limit_w: float
    ambient_c: float = 30.0
    cooling: float = 1.0
    slowdown: float = 0.0
    #: The share of host CPU time the serving process gets (host_cpu_starvation lowers it).
    host_cpu: float = 1.0
    service_busy_fraction: float = 0.0
    idle_power_cap_noise: bool = False
    processes: dict[int, GpuProcess] = field(default_factory=dict)
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    pcie_replays: int = 0
    lost_at_ns: int | None = None
    xids: list[XidRecord] = field(default_factory=list)

    def physics_inputs(self) -> PhysicsInputs:
        """The inputs for the next physics step."""
        busy = self.service_busy_fraction + sum(p.busy_fraction for p in self.processes.values())
        return PhysicsInputs(
            busy_fraction=min(busy, 1.0),
            power_limit_w=self.power_limit_w,
            ambient_c=self.ambient_c,
            cooling=self.cooling,
            slowdown=self.slowdown,
            idle_power_cap_noise=self.idle_power_cap_noise,
        )

    @property
    def memory_used_bytes(self) -> int:
        """Device memory in use: every process's allocations (each includes its CUDA context)."""
        return min(sum(p.memory_bytes for p in self.processes.values()), self.profile.memory_total_bytes)

    @property
    def memory_free_bytes(self) -> int:
        """Device memory free."""
        return self.profile.memory_total_bytes - self.memory_used_bytes

    def set_process(self, pid: int, name: str, memory_bytes: int, busy_fraction: float = 0.0) -> None:
        """Add or update a process on this GPU (memory in bytes, including its CUDA context)."""
        self.processes[pid] = GpuProcess(pid, name, int(memory_bytes), busy_fraction)

    def remove_process(self, pid: int) -> None:
        """A process exits and frees its memory."""
        self.processes.pop(pid, None)

    def load(self, busy_fraction: float) -> None:
        """Set the serving process's share of time with a kernel running (0..1)."""
        self.service_busy_fraction = min(max(busy_fraction, 0.0), 1.0)

    def record_xid(self, ts_ns: int, code: int, message: str, pid: int | None, process: str | None) -> None:
        """The driver reports an XID: an NVML event and a kernel log line."""
        self.xids.append(XidRecord(ts_ns, code, pid, process, message))

    def is_lost(self, now_ns: int) -> bool:
        """Whether the GPU has fallen off the bus by `now_ns`."""
        return self.lost_at_ns is not None and now_ns >= self.lost_at_ns


def gpu_uuid_for(seed: int | str, host: str, index: int) -> str:
    """A stable `GPU-…` UUID for a GPU of a fleet (same seed, same UUID, whatever PYTHONHASHSEED)."""
    rng = random.Random(f"gpu-uuid/{seed}/{host}/{index}")
    return "GPU-" + str(uuid_module.UUID(int=rng.getrandbits(128), version=4))


def normalize_fleet(fleet: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check a fleet spec (`[{host, gpus, model}]`) and return it as plain dicts."""
    result = []
    seen = set()
    for position, entry in enumerate(fleet):
        if not isinstance(entry, Mapping):
            raise InputError(f"fleet entry {position} must be a mapping with host, gpus, model")
        unknown = set(entry) - {"host", "gpus", "model"}
        if unknown:
            raise InputError(f"fleet entry {position}: unknown key {sorted(unknown)[0]!r} (allowed: host, gpus, model)")
        host = entry.get("host")
        gpus = entry.get("gpus", 1)
        if not isinstance(host, str) or not host:
            raise InputError(f"fleet entry {position}: host must be a non-empty string")
        if host in seen:
            raise InputError(f"fleet entry {position}: host {host!r} appears twice")
        if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= len(PCI_SLOTS):
            raise InputError(f"fleet entry {position}: gpus must be an integer 1..{len(PCI_SLOTS)}")
        get_profile(str(entry.get("model")))
        seen.add(host)
        result.append({"host": host, "gpus": gpus, "model": str(entry["model"])})
    if not result:
        raise InputError("the fleet is empty")
    return result


class Fleet:
    """Every simulated GPU of every host, stepped together on a fixed 100 ms grid of one clock."""

    def __init__(
        self,
        fleet: Iterable[Mapping[str, Any]],
        *,
        clock: Callable[[], int],
        seed: int = 0,
        ambient_c: float = 30.0,
    ) -> None:
        self.spec = normalize_fleet(fleet)
        self.clock = clock
        self.seed = seed
        self._lock = threading.RLock()
        self._stepped_ns = clock()
        self.gpus: list[SimGpu] = []
        for entry in self.spec:
            profile = get_profile(entry["model"])
            for index in range(entry["gpus"]):
                self.gpus.append(
                    SimGpu(
                        host=entry["host"],
                        index=index,
                        profile=profile,
                        uuid=gpu_uuid_for(seed, entry["host"], index),
                        pci_bus_id=f"00000000:{PCI_SLOTS[index].upper()}:00.0",
                        state=idle_state(profile, ambient_c),
                        power_limit_w=profile.power_limit_default_w,
                        ambient_c=ambient_c,
                        idle_power_cap_noise=profile.idle_power_cap_noise,
                    )
                )

    @property
    def hosts(self) -> list[str]:
        """Host names in fleet order."""
        return [entry["host"] for entry in self.spec]

    def host_gpus(self, host: str) -> list[SimGpu]:
        """The GPUs of one host, in NVML index order."""
        gpus = [g for g in self.gpus if g.host == host]
        if not gpus:
            raise InputError(f"no host {host!r} in the fleet (hosts: {', '.join(self.hosts)})")
        return gpus

    def gpu(self, ref: str) -> SimGpu:
        """A GPU by `HOST/INDEX`."""
        host, _, index = ref.rpartition("/")
        for gpu in self.gpus:
            if gpu.host == host and str(gpu.index) == index:
                return gpu
        raise InputError(f"no GPU {ref!r} in the fleet (write HOST/INDEX, e.g. {self.gpus[0].host}/0)")

    def advance_to(self, now_ns: int) -> None:
        """Step every GPU's physics on the grid up to `now_ns` (idempotent; never steps backwards)."""
        if now_ns < self._stepped_ns + STEP_NS:  # the common case: every NVML call syncs
            return
        with self._lock:
            while self._stepped_ns + STEP_NS <= now_ns:
                self._stepped_ns += STEP_NS
                for gpu in self.gpus:
                    if gpu.is_lost(self._stepped_ns):
                        continue
                    gpu.state = step(gpu.profile, gpu.state, gpu.physics_inputs(), STEP_NS / 1e9)

    def sync(self) -> int:
        """Step to the clock's now and return it."""
        now_ns = self.clock()
        self.advance_to(now_ns)
        return now_ns


__all__ = [
    "CUDA_CONTEXT_BYTES",
    "STEP_NS",
    "Fleet",
    "GpuProcess",
    "SimGpu",
    "XidRecord",
    "gpu_uuid_for",
    "normalize_fleet",
]
