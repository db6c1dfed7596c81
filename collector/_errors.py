"""`error.type` for a failed inference, from the texts PyTorch and CUDA really print (the rules are
`gpu_rca.schemas.error_types`, shared with the correlator's reading of other instrumentations' spans)."""

from __future__ import annotations

import asyncio
import re

from gpu_rca.schemas import attributes as A
from gpu_rca.schemas.error_types import GPU_LOST_CLASSES as _GPU_LOST_CLASSES
from gpu_rca.schemas.error_types import OOM_CLASSES as _OOM_CLASSES
from gpu_rca.schemas.error_types import TEXT_PATTERNS as _PATTERNS

_CUDA_HINT = re.compile(r"\bCUDA\b|\bcuda\w*Error")
_MAX_CHAIN = 8


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it (`raise … from`, implicit context), bounded against cycles."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < _MAX_CHAIN and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def class_name(exc: BaseException) -> str:
    """The exception's class name, module-qualified unless builtin (`ValueError`, `PIL.UnidentifiedImageError`)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def classify_error(exc: BaseException, *, gpu_lost: bool = False) -> str:
    """`error.type` (docs/contracts.md §1). `gpu_lost`: the span's GPU answered GpuIsLost, so a CUDA error is `gpu_lost`."""
    chain = _chain(exc)
    for item in chain:
        name = type(item).__name__
        if name in _OOM_CLASSES:
            return A.ERROR_CUDA_OOM
        if name in _GPU_LOST_CLASSES:
            return A.ERROR_GPU_LOST
        message = str(item)
        for pattern, error_type in _PATTERNS:
            if pattern.search(message):
                if gpu_lost and error_type != A.ERROR_CUDA_OOM:
                    return A.ERROR_GPU_LOST
                return error_type
        if gpu_lost and _CUDA_HINT.search(message):
            return A.ERROR_GPU_LOST
    for item in chain:
        if isinstance(item, (TimeoutError, asyncio.TimeoutError)) or type(item).__name__.endswith("Timeout"):
            return A.ERROR_TIMEOUT
    return class_name(exc)
