"""The real DDColor backend: ModelScope's DDColor pipeline over weights already on disk (never downloaded).

Needs the `ddcolor` extra (torch, modelscope) and a GPU. The weights directory is ModelScope's model folder
for `damo/cv_ddcolor_image-colorization` (or a local copy with the same files): `configuration.json` and
`pytorch_model.pt`. Fetch it once, outside the service, e.g. `modelscope download --model
damo/cv_ddcolor_image-colorization --local_dir DIR`; the service only ever reads DIR.

GPU work is serialised (one request on the GPU at a time): the pipeline keeps its input size on the object,
so concurrent calls would race, and one at a time makes torch's peak-memory counter the request's own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from examples.ddcolor_service.backend import Colorized
from gpu_rca.schemas.errors import InputError

REQUIRED_FILES = ("configuration.json", "pytorch_model.pt")
MODELSCOPE_MODEL = "damo/cv_ddcolor_image-colorization"


def check_weights(weights_dir: str | Path) -> Path:
    """The weights folder, or InputError naming what is missing and how to get it."""
    path = Path(weights_dir).expanduser()
    if not path.is_dir():
        raise InputError(
            f"DDColor weights not found: {path} is not a directory (download {MODELSCOPE_MODEL} "
            f"there first; the service never downloads at run time)"
        )
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise InputError(
            f"DDColor weights incomplete in {path}: missing {', '.join(missing)} "
            f"(expected ModelScope's {MODELSCOPE_MODEL} folder)"
        )
    return path


class DDColorBackend:
    """DDColor on a CUDA device through ModelScope's image-colorization pipeline."""

    name = "ddcolor"
    max_concurrency = 1

    def __init__(
        self, weights_dir: str | Path, *, device: str = "cuda:0", model_name: str = "ddcolor_modelscope"
    ) -> None:
        path = check_weights(weights_dir)
        try:
            import torch
            from modelscope.pipelines import pipeline
            from modelscope.utils.constant import Tasks
        except ImportError as exc:
            raise InputError(
                f"the DDColor backend needs torch and modelscope ({exc.name} is missing): "
                "pip install 'gpu-rca[ddcolor]'"
            ) from exc
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"the DDColor backend needs a CUDA GPU for device {device!r}; none is visible")
        self.models = (model_name,)
        self._torch = torch
        self._device = device
        self._pipeline = pipeline(Tasks.image_colorization, model=str(path), device=device.replace("cuda:", "gpu:"))
        self._lock = threading.Lock()

    async def colorize(
        self, image: Any, *, input_size: int, model: str, task_type: str, on_gpu_start: Callable[[int], None]
    ) -> Colorized:
        """Run the pipeline in a worker thread at `input_size`; report torch's peak memory for the request."""
        return await asyncio.to_thread(self._run, image, input_size, on_gpu_start)

    def _run(self, image: Any, input_size: int, on_gpu_start: Callable[[int], None]) -> Colorized:
        import numpy as np
        from modelscope.outputs import OutputKeys
        from PIL import Image

        torch = self._torch
        bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()
        with self._lock:
            on_gpu_start(time.time_ns())
            torch.cuda.reset_peak_memory_stats(self._device)
            before = torch.cuda.memory_allocated(self._device)
            self._pipeline.input_size = input_size
            output = self._pipeline(bgr)[OutputKeys.OUTPUT_IMG]
            peak = torch.cuda.max_memory_allocated(self._device) - before
        return Colorized(Image.fromarray(output[:, :, ::-1].astype("uint8")), int(peak))


__all__ = ["MODELSCOPE_MODEL", "REQUIRED_FILES", "DDColorBackend", "check_weights"]
