"""gpu-rca's contracts as code: every attribute, metric and cause name is spelled here once.

This package imports nothing else of the project, so the collector (inside an inference server),
the correlator and the lab can all depend on it.
"""

from __future__ import annotations

from schemas import attributes, causes, metrics, throttle
from schemas.errors import EmptyWindowError, GpuRcaError, InputError, StoreError, UsageError
from schemas.pci import normalize_pci_bus_id
from schemas.throttle import THROTTLE_REASONS, decode_throttle_reasons, encode_throttle_reasons

__all__ = [
    "EmptyWindowError",
    "GpuRcaError",
    "InputError",
    "StoreError",
    "THROTTLE_REASONS",
    "UsageError",
    "attributes",
    "causes",
    "decode_throttle_reasons",
    "encode_throttle_reasons",
    "metrics",
    "normalize_pci_bus_id",
    "throttle",
]
