"""Statistics behind the ranking: Elastic's failed-transaction p-values and score, BARO's robust scale."""

from __future__ import annotations

import math

#: Elastic's ERROR_CORRELATION_THRESHOLD: a driver must be at least this significant.
DRIVER_P_THRESHOLD = 0.02
#: The smallest p-value reported; below it doubles underflow and the ordering carries no information.
P_FLOOR = 1e-300


def proportion_p_value(hits_a: int, total_a: int, hits_b: int, total_b: int) -> float:
    """One-sided p-value that share a (hits_a/total_a) exceeds share b, by the pooled two-proportion z-test.

    Elastic ranks with significant_terms' p-value heuristic; this is the same question asked of a 2×2 table,
    answered with the normal approximation, which holds for the span counts of an incident window.
    """
    if total_a <= 0 or total_b <= 0:
        return 1.0
    share_a = hits_a / total_a
    share_b = hits_b / total_b
    pooled = (hits_a + hits_b) / (total_a + total_b)
    variance = pooled * (1.0 - pooled) * (1.0 / total_a + 1.0 / total_b)
    if variance <= 0.0:
        return 1.0
    z = (share_a - share_b) / math.sqrt(variance)
    return max(P_FLOOR, 0.5 * math.erfc(z / math.sqrt(2.0)))


def normalized_score(p_value: float) -> float:
    """Elastic's normalizedScore: a concave piecewise-linear map of −ln p onto 0..1 (p 0.02 → 0, 1e-50 → 1)."""
    s = -math.log(max(p_value, P_FLOOR))

    def clip(x: float) -> float:
        return min(1.0, max(0.0, x))

    return 0.5 * clip((s - 3.912) / 2.995) + 0.25 * clip((s - 6.908) / 6.908) + 0.25 * clip((s - 13.816) / 101.314)


def saturate(z: float | None, scale: float = 6.0) -> float:
    """Map a robust z-score (0..∞) onto 0..1: 3σ-like shifts reach about 0.4, 12 about 0.86."""
    if z is None or z <= 0 or math.isnan(z):
        return 0.0
    return 1.0 - math.exp(-z / scale)


def clean(value: float | None, digits: int = 3) -> float | None:
    """A JSON-safe rounded number: NaN and infinities become None (`allow_nan=False`)."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(float(value), digits)


def tidy(value: float | int | None) -> float | int | None:
    """A number as people read it in a summary and its evidence: integers stay integers, others 1–3 decimals."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if math.isnan(value) or math.isinf(value):
        return None
    if float(value).is_integer():
        return int(value)
    magnitude = abs(value)
    digits = 1 if magnitude >= 10 else (2 if magnitude >= 1 else 3)
    rounded = round(float(value), digits)
    return int(rounded) if rounded.is_integer() else rounded
