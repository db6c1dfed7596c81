"""What a failure's own text states: PyTorch's CUDA OOM message, CUDA error strings and NCCL watchdog reports.

The OOM message is written by PyTorch's caching allocator at the moment it gave up, after it had already
freed every whole cached segment and retried, so it is the best record of the GPU's memory there is: the
device's total and free memory, each *other* process's memory (`Process 5512 has 40.02 GiB memory in
use.`), this process's, what PyTorch's tensors hold (allocated) and what it reserved but could not hand
out (reserved but unallocated: blocks stranded in partly used segments, i.e. fragmentation). Ranking reads
these numbers when NVML's per-process list or the span's process stamp is missing.

Three templates are read: the current one (torch >= 2.2), torch 2.1's (`total capacty`, sic) and the legacy
parenthesised summary (`(GPU 1; 15.78 GiB total capacity; 14.21 GiB already allocated; ...)`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_UNITS = {"bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_SIZE = r"(\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB|TiB)"
_OOM = re.compile(r"CUDA out of memory\. Tried to allocate " + _SIZE)
_DEVICE = re.compile(r"GPU (\d+) has a total capac(?:i)?ty of " + _SIZE + r" of which " + _SIZE + r" is free")
_OTHER = re.compile(r"Process (\d+) has " + _SIZE + r" memory in use")
_OWN = re.compile(r"this process has " + _SIZE + r" memory in use")
_ALLOWED = re.compile(_SIZE + r" allowed")
_ALLOCATED = re.compile(r"Of the allocated memory " + _SIZE + r" is allocated by PyTorch")
_UNALLOCATED = re.compile(r"and " + _SIZE + r" is reserved by PyTorch but unallocated")
_LEGACY = re.compile(
    r"\(GPU (\d+); " + _SIZE + r" total capacity; " + _SIZE + r" already allocated; " + _SIZE + r" free; "
    r"(?:" + _SIZE + r" reserved in total by PyTorch|" + _SIZE + r" cached)"
)
_CUDA_ERROR = re.compile(r"CUDA error: ([^\n]+?)\s*(?:\n|$)")
_NCCL_RANK = re.compile(r"\[rank(\d+)\]:.*ProcessGroupNCCL")


def size_bytes(number: str, unit: str) -> int:
    """`'40.02', 'GiB'` as bytes (PyTorch's format_size, read back)."""
    return int(float(number) * _UNITS[unit])


@dataclass(frozen=True)
class OomText:
    """The numbers one CUDA OOM message states (None where its template has no such part)."""

    requested: int
    device: int | None = None
    total: int | None = None
    free: int | None = None
    #: pid -> memory of every other process the message names.
    others: dict[int, int] = field(default_factory=dict)
    #: This process's memory, PyTorch's and not (the current template only).
    process: int | None = None
    #: PyTorch's tensors (the legacy template's "already allocated").
    allocated: int | None = None
    #: Reserved by PyTorch's caching allocator but unallocated: stranded blocks, i.e. fragmentation.
    unallocated: int | None = None
    #: A per-process memory fraction (`torch.cuda.set_per_process_memory_fraction`), when one is set.
    allowed: int | None = None

    @property
    def others_total(self) -> int | None:
        """Memory the other processes named hold together (None when the template cannot name them)."""
        # A message that states this process's memory would have listed the others: none listed is none.
        if self.others or self.process is not None:
            return sum(self.others.values())
        return None

    @property
    def fragmented(self) -> bool:
        """The allocator held at least what was asked for, reserved but unallocated: it was there, not contiguous.

        PyTorch frees every whole cached segment and retries before it raises, so what is still reserved but
        unallocated at this point sits in partly used segments.
        """
        return self.unallocated is not None and self.unallocated >= self.requested


def parse_oom(text: str | None) -> OomText | None:
    """The numbers of a CUDA OOM message (any of the three templates), or None when `text` is not one."""
    if not text:
        return None
    head = _OOM.search(text)
    if head is None:
        return None
    requested = size_bytes(*head.groups())
    legacy = _LEGACY.search(text, head.end())
    if legacy is not None:
        g = legacy.groups()
        reserved = size_bytes(g[7], g[8]) if g[7] else size_bytes(g[9], g[10])
        allocated = size_bytes(g[3], g[4])
        return OomText(
            requested,
            device=int(g[0]),
            total=size_bytes(g[1], g[2]),
            free=size_bytes(g[5], g[6]),
            allocated=allocated,
            unallocated=max(reserved - allocated, 0) if g[7] else None,
        )
    device = _DEVICE.search(text)
    own = _OWN.search(text)
    allowed = _ALLOWED.search(text)
    allocated_m = _ALLOCATED.search(text)
    unallocated_m = _UNALLOCATED.search(text)
    return OomText(
        requested,
        device=int(device.group(1)) if device else None,
        total=size_bytes(*device.group(2, 3)) if device else None,
        free=size_bytes(*device.group(4, 5)) if device else None,
        others={int(pid): size_bytes(n, unit) for pid, n, unit in _OTHER.findall(text)},
        process=size_bytes(*own.groups()) if own else None,
        allocated=size_bytes(*allocated_m.groups()) if allocated_m else None,
        unallocated=size_bytes(*unallocated_m.groups()) if unallocated_m else None,
        allowed=size_bytes(*allowed.groups()) if allowed else None,
    )


@dataclass(frozen=True)
class CudaErrorText:
    """A CUDA error string (`an illegal memory access was encountered`), and the NCCL rank that reported it."""

    error: str
    nccl_rank: int | None = None


def parse_cuda_error(text: str | None) -> CudaErrorText | None:
    """The CUDA error a `RuntimeError: CUDA error: …` or an NCCL watchdog line names, or None."""
    if not text:
        return None
    found = _CUDA_ERROR.search(text)
    if found is None:
        return None
    rank = _NCCL_RANK.search(text[: found.start()])
    return CudaErrorText(found.group(1).rstrip("."), int(rank.group(1)) if rank else None)


__all__ = ["CudaErrorText", "OomText", "parse_cuda_error", "parse_oom", "size_bytes"]
