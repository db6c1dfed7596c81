"""Seeded OpenTelemetry id generation: same scenario and seed, same trace and span ids."""

from __future__ import annotations

import random

from opentelemetry.sdk.trace.id_generator import IdGenerator


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a string-seeded RNG (independent of PYTHONHASHSEED)."""

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        """A non-zero 64-bit span id."""
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        """A non-zero 128-bit trace id."""
        return self._rng.getrandbits(128) or 1


__all__ = ["SeededIdGenerator"]
