"""gpu-rca's contracts as code: every attribute, metric and cause name is spelled here once.

This package imports nothing else of the project, so the collector (inside an inference server),
the correlator and the lab can all depend on it.
"""

from __future__ import annotations

from gpu_rca.schemas import attributes, causes, metrics, throttle
from gpu_rca.schemas.errors import EmptyWindowError, GpuRcaError, InputError, StoreError, UsageError
from gpu_rca.schemas.pci import normalize_pci_bus_id
from gpu_rca.schemas.throttle import THROTTLE_REASONS, decode_throttle_reasons, encode_throttle_reasons

__all__ = [
    "THROTTLE_REASONS",
    "EmptyWindowError",
    "GpuRcaError",
    "InputError",
    "StoreError",
    "UsageError",
    "attributes",
    "causes",
    "decode_throttle_reasons",
    "encode_throttle_reasons",
    "metrics",
    "normalize_pci_bus_id",
    "throttle",
]
