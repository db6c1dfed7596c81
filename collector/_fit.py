"""An online least-squares line with a safety margin: the upper quantile of its own residuals (pure Python)."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Line:
    """`y ≈ intercept + slope·x`; `margin` is the upper quantile of the residuals, added to every prediction."""

    intercept: float
    slope: float
    margin: float
    points: int

    def predict(self, x: float) -> float:
        """The fitted value at `x` plus the margin: an upper estimate, not a mean."""
        return self.intercept + self.slope * x + self.margin


def upper_quantile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


class OnlineFit:
    """Least squares over the last `capacity` points, refitted lazily when asked after new points.

    The slope is never negative: memory and service time do not fall as inputs grow, and a negative slope
    from noise would make large inputs look free. The margin never makes a prediction smaller.
    """

    def __init__(self, capacity: int = 512, quantile: float = 0.95) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.quantile = quantile
        self._points: deque[tuple[float, float]] = deque(maxlen=capacity)
        self._line: Line | None = None
        self._lock = threading.Lock()

    def add(self, x: float, y: float) -> None:
        """One observation."""
        with self._lock:
            self._points.append((float(x), float(y)))
            self._line = None

    @property
    def count(self) -> int:
        """Points held (at most `capacity`)."""
        return len(self._points)

    def distinct_x(self) -> int:
        """How many different x values the points cover (a slope needs two)."""
        with self._lock:
            return len({x for x, _ in self._points})

    def line(self) -> Line | None:
        """The current fit, or None before two distinct x values are seen."""
        with self._lock:
            if self._line is None:
                self._line = _solve(list(self._points), self.quantile)
            return self._line


def _solve(points: list[tuple[float, float]], quantile: float) -> Line | None:
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx <= 0.0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = max(sxy / sxx, 0.0)
    intercept = mean_y - slope * mean_x
    residuals = [y - (intercept + slope * x) for x, y in points]
    return Line(intercept, slope, max(upper_quantile(residuals, quantile), 0.0), n)


__all__ = ["Line", "OnlineFit", "upper_quantile"]
