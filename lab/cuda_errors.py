"""The exceptions a PyTorch inference service really raises, with PyTorch's and CUDA's exact texts.

The OOM class mirrors torch's (`torch.OutOfMemoryError`, a RuntimeError) so spans record the same
`exception.type` production shows; no torch import is needed.
"""

from __future__ import annotations

_ASYNC_HINT = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below "
    "might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
    "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n"
)
ILLEGAL_ADDRESS = "an illegal memory access was encountered"
LAUNCH_FAILURE = "unspecified launch failure"
ECC_UNCORRECTABLE = "uncorrectable ECC error encountered"


class OutOfMemoryError(RuntimeError):
    """torch.OutOfMemoryError: a CUDA allocation did not fit."""


OutOfMemoryError.__module__ = "torch"


def format_size(n_bytes: int) -> str:
    """PyTorch's format_size: `0 bytes`, `22.00 MiB`, `23.65 GiB`."""
    if n_bytes <= 1024:
        return f"{n_bytes} bytes"
    if n_bytes <= 1048576:
        return f"{n_bytes / 1024:.2f} KiB"
    if n_bytes <= 1073741824:
        return f"{n_bytes / 1048576:.2f} MiB"
    return f"{n_bytes / 1073741824:.2f} GiB"


def cuda_oom(
    *,
    device: int,
    requested: int,
    total: int,
    free: int,
    process_in_use: int,
    allocated: int,
    reserved: int,
    others: dict[int, int] | None = None,
) -> OutOfMemoryError:
    """The current (torch ≥ 2.2) caching-allocator message, byte for byte.

    `others` (pid -> bytes) are the other processes on the GPU, listed as PyTorch lists them from NVML
    (`Process 31000 has 20.70 GiB memory in use.`) before this process's own line.
    """
    listed = "".join(f"Process {pid} has {format_size(n)} memory in use. " for pid, n in sorted((others or {}).items()))
    return OutOfMemoryError(
        f"CUDA out of memory. Tried to allocate {format_size(requested)}. GPU {device} has a total capacity of "
        f"{format_size(total)} of which {format_size(max(free, 0))} is free. {listed}Including non-PyTorch memory, this "
        f"process has {format_size(process_in_use)} memory in use. Of the allocated memory {format_size(allocated)} "
        f"is allocated by PyTorch, and {format_size(max(reserved - allocated, 0))} is reserved by PyTorch but "
        "unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory "
        "Management  (https://docs.pytorch.org/docs/stable/notes/cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf)"
    )


def cuda_error(message: str) -> RuntimeError:
    """`RuntimeError: CUDA error: …` with the asynchronous-report hint PyTorch appends."""
    return RuntimeError(f"CUDA error: {message}{_ASYNC_HINT}")


__all__ = [
    "ECC_UNCORRECTABLE",
    "ILLEGAL_ADDRESS",
    "LAUNCH_FAILURE",
    "OutOfMemoryError",
    "cuda_error",
    "cuda_oom",
    "format_size",
]
