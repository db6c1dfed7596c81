"""What the service asks of a colorizer, whichever runs it (the real DDColor model or the lab's cost model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Colorized:
    """A colorized image and the request's own peak GPU memory (bytes; None when unknown)."""

    image: Any  # PIL.Image.Image
    peak_memory_bytes: int | None


class Colorizer(Protocol):
    """A DDColor backend: `colorize` raises the CUDA error or TimeoutError a failed request gets."""

    name: str
    models: tuple[str, ...]
    max_concurrency: int

    async def colorize(
        self, image: Any, *, input_size: int, model: str, task_type: str, on_gpu_start: Callable[[int], None]
    ) -> Colorized:
        """Colorize `image` at `input_size`; call `on_gpu_start(ts_ns)` when its GPU work begins."""
        ...


__all__ = ["Colorized", "Colorizer"]
