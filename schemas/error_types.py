"""`error.type` from an exception's class name and text: the rules the collector applies to a live exception
and the correlator applies to a span another instrumentation wrote (its `exception` event, its status text).

The OOM template is PyTorch's c10/cuda/CUDACachingAllocator.cpp
(https://github.com/pytorch/pytorch/blob/main/c10/cuda/CUDACachingAllocator.cpp); the asynchronous CUDA errors
are CUDA's own texts (https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html).
"""

from __future__ import annotations

import re

from gpu_rca.schemas import attributes as A

# Each pattern matches every variant in the real samples: current, torch-2.1 ("capacty") and legacy OOM
# texts, CUDA runtime errors with or without "CUDA error:" and the native "CUDA failure 700:" form.
TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"CUDA out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED|cudaErrorMemoryAllocation"
        ),
        A.ERROR_CUDA_OOM,
    ),
    (
        re.compile(r"illegal memory access|illegal address|cudaErrorIllegalAddress|CUDA failure 700\b"),
        A.ERROR_CUDA_ILLEGAL_ADDRESS,
    ),
    (re.compile(r"unspecified launch failure|cudaErrorLaunchFailure|CUDA failure 719\b"), A.ERROR_CUDA_LAUNCH_FAILURE),
    (re.compile(r"GPU is lost|fallen off the bus|cudaErrorDevicesUnavailable"), A.ERROR_GPU_LOST),
)
#: Exception class names (the last dotted part) that name an error type by themselves.
OOM_CLASSES = frozenset({"OutOfMemoryError"})  # torch.OutOfMemoryError, torch.cuda.OutOfMemoryError
GPU_LOST_CLASSES = frozenset({"NVMLError_GpuIsLost"})


def error_type_from_text(message: str) -> str | None:
    """The CUDA error type a message states, or None."""
    for pattern, error_type in TEXT_PATTERNS:
        if pattern.search(message):
            return error_type
    return None


def is_timeout_class(class_name: str) -> bool:
    """`TimeoutError`, `asyncio.TimeoutError`, `httpx.ReadTimeout`, …: a class name that says the request timed out."""
    short = class_name.rsplit(".", 1)[-1]
    return short == "TimeoutError" or short.endswith("Timeout")


def error_type_of(class_name: str | None, message: str | None) -> str | None:
    """`error.type` (docs/contracts.md §1) for an exception known only by its class name and text, as an
    OTel `exception` event (`exception.type`, `exception.message`) or a span status text carries it; None
    when neither says anything the collector would name."""
    short = (class_name or "").rsplit(".", 1)[-1]
    if short in OOM_CLASSES:
        return A.ERROR_CUDA_OOM
    if short in GPU_LOST_CLASSES:
        return A.ERROR_GPU_LOST
    from_text = error_type_from_text(message or "")
    if from_text is not None:
        return from_text
    if class_name and is_timeout_class(class_name):
        return A.ERROR_TIMEOUT
    return None


__all__ = [
    "GPU_LOST_CLASSES",
    "OOM_CLASSES",
    "TEXT_PATTERNS",
    "error_type_from_text",
    "error_type_of",
    "is_timeout_class",
]
