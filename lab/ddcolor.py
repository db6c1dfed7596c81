"""DDColor's cost model: service time and peak GPU memory per request, by model, input size and GPU.

No published DDColor latency or memory figures exist (https://github.com/piddnad/DDColor: README, MODEL_ZOO.md
and issues have none), so every number here is an
ESTIMATE, calibrated to be plausible: the released checkpoints are ConvNeXt-T (`ddcolor_paper_tiny`)
or ConvNeXt-L (the others) encoders with a 9-layer colour decoder; activations, and so both peak
memory and compute, grow with the square of `input_size` (the image is resized to size × size).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
REFERENCE_SIZE = 512  # DDColor's default input_size
#: Share of a request's peak activation memory allocated when it starts (the encoder's feature maps); the
#: rest comes halfway through, when the colour decoder runs. Estimate.
EARLY_ALLOCATION_SHARE = 0.8


@dataclass(frozen=True)
class ModelCost:
    """One model family's costs at the reference size on an L4 at max clock (estimates)."""

    family: str
    weights_bytes: int
    activation_bytes_512: int
    compute_s_512: float
    overhead_s: float = 0.015  # pre/post-processing, launch latency


TINY = ModelCost("convnext-t", int(0.22 * GIB), int(0.9 * GIB), 0.11)
LARGE = ModelCost("convnext-l", int(0.87 * GIB), int(1.8 * GIB), 0.34)
MODEL_COSTS: dict[str, ModelCost] = {
    "ddcolor_paper_tiny": TINY,
    "ddcolor_paper": LARGE,
    "ddcolor_modelscope": LARGE,
    "ddcolor_artistic": LARGE,
}


def peak_memory_bytes(model: str, input_size: int) -> int:
    """Activation memory one request allocates at its peak (weights excluded)."""
    cost = MODEL_COSTS[model]
    return int(cost.activation_bytes_512 * (input_size / REFERENCE_SIZE) ** 2)


def work_s(model: str, input_size: int) -> float:
    """GPU seconds one request needs alone on an L4 at max clock."""
    cost = MODEL_COSTS[model]
    return cost.overhead_s + cost.compute_s_512 * (input_size / REFERENCE_SIZE) ** 2


#: Host CPU seconds to decode and resize an uploaded photo (`preprocess`) and to encode the result (`decode`)
#: at the reference size, on an uncontended core (estimates of PIL/OpenCV JPEG work for a 512 px image).
PREPROCESS_S_512 = 0.012
POSTPROCESS_S_512 = 0.008


def preprocess_s(input_size: int) -> float:
    """Host CPU seconds of a request's `preprocess` span (photo decode + resize), uncontended."""
    return 0.003 + PREPROCESS_S_512 * (input_size / REFERENCE_SIZE) ** 2


def postprocess_s(input_size: int) -> float:
    """Host CPU seconds of a request's `decode` span (colour output back to an image), uncontended."""
    return 0.002 + POSTPROCESS_S_512 * (input_size / REFERENCE_SIZE) ** 2


def weights_bytes(models: set[str] | list[str]) -> int:
    """Memory for the weights of every model family a worker serves (each family loaded once)."""
    families = {MODEL_COSTS[m].family: MODEL_COSTS[m].weights_bytes for m in models}
    return sum(families.values())


def image_dimensions(input_size: int, u: float) -> tuple[int, int]:
    """A plausible original photo size for a request (`u` uniform in [0, 1)): DDColor resizes it anyway."""
    long_side = int(input_size * (1.0 + 2.0 * u)) // 16 * 16
    short_side = int(long_side * (0.66 + 0.1 * u)) // 16 * 16
    return (long_side, short_side) if u < 0.6 else (short_side, long_side)


__all__ = [
    "EARLY_ALLOCATION_SHARE",
    "MODEL_COSTS",
    "ModelCost",
    "image_dimensions",
    "peak_memory_bytes",
    "weights_bytes",
    "work_s",
]
