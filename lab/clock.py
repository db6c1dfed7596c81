"""The lab's virtual clock: simulated time in Unix nanoseconds, advanced only by the simulation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: A clock is a zero-argument callable returning Unix nanoseconds (the collector's interface).
Clock = Callable[[], int]


class VirtualClock:
    """Simulated time that moves only when told to; `now_ns` is the clock the collector is given."""

    def __init__(self, start_ns: int) -> None:
        self._now_ns = int(start_ns)
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        """The current simulated time, Unix nanoseconds."""
        return self._now_ns

    def advance_to(self, ts_ns: int) -> None:
        """Move time forward to `ts_ns`; time never runs backwards."""
        with self._lock:
            if ts_ns < self._now_ns:
                raise ValueError(f"virtual time cannot go back: {ts_ns} < {self._now_ns}")
            self._now_ns = int(ts_ns)

    def advance(self, delta_ns: int) -> None:
        """Move time forward by `delta_ns`."""
        self.advance_to(self._now_ns + int(delta_ns))


class ScaledClock:
    """Wall-clock time run `speed` times faster from `start_ns` (for the live fleet).

    Without `start_ns` simulated time starts at the wall clock's now, so at speed 1 it *is* wall time.
    """

    def __init__(self, start_ns: int | None = None, speed: float = 1.0, wall: Clock = time.time_ns) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self._speed = speed
        self._wall = wall
        self._wall_start_ns = wall()
        self._start_ns = self._wall_start_ns if start_ns is None else int(start_ns)

    @property
    def start_ns(self) -> int:
        """Simulated time at the moment the clock was made."""
        return self._start_ns

    def now_ns(self) -> int:
        """Simulated time now."""
        return self._start_ns + int((self._wall() - self._wall_start_ns) * self._speed)


__all__ = ["Clock", "ScaledClock", "VirtualClock"]
