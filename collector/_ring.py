"""One GPU's bounded sample buffer, and the window aggregates it keeps ready for the request path.

Stamping a span reduces its window (about ten samples at 10 Hz, more for long spans): maxima, a minimum,
two means. Doing that on the request path meant slicing a column per field and reducing each slice. The
ring instead does the work as samples arrive, on the sampler's thread: a sparse table per max/min column
(any range's extreme is two lookups) and a prefix sum per mean, so a span's reductions cost the same for a
window of ten samples or of ten thousand. The ring also remembers the newest sample that lacked a field and
the newest that changed the clock-event mask or ECC counters or reported an XID, so a window that needs the
careful path is known without scanning it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import Any

from gpu_rca.collector._nvml import STAMP_COLUMN_NAMES, STAMP_COLUMNS, Sample

#: `(samples, reductions, quiet)`, copies safe to read outside the ring's lock. `reductions`: REDUCTIONS'
#: values in order, each over the samples that read its field (None when none did). `quiet`: no sample
#: after the first changes the clock-event mask or the ECC counters or reports an XID, so nothing
#: happened inside the window and its mask is the first sample's. (A plain tuple: a NamedTuple's
#: constructor cost a measurable share of a stamp.)
RingWindow = tuple[list[Sample], tuple[Any, ...], bool]

_TEMP, _POWER, _USED, _PROC, _UTIL, _SM = range(len(STAMP_COLUMN_NAMES))
#: What stamping reduces, in this order: (column, reduction) with reduction one of max, min, mean.
REDUCTIONS: tuple[tuple[int, str], ...] = (
    (_TEMP, "max"),
    (_POWER, "max"),
    (_POWER, "mean"),
    (_USED, "max"),
    (_PROC, "max"),
    (_UTIL, "mean"),
    (_UTIL, "max"),
    (_SM, "min"),
)
_BUILTINS: dict[str, Callable[[list[Any]], Any]] = {"max": max, "min": min, "mean": lambda v: sum(v) / len(v)}


def reduce_samples(samples: list[Sample]) -> tuple[Any, ...]:
    """REDUCTIONS over `samples`, each over the values that were read (None when none was)."""
    columns = [[v for v in column if v is not None] for column in zip(*map(STAMP_COLUMNS, samples))]
    if not columns:
        return (None,) * len(REDUCTIONS)
    return tuple(_BUILTINS[how](columns[col]) if columns[col] else None for col, how in REDUCTIONS)


def transition_between(previous: Sample, sample: Sample) -> bool:
    """Whether `sample` may be a transition after `previous`: an XID, or another mask or ECC count (a field
    read in one and not the other counts as changed; the stamping decides what it means)."""
    return (
        sample.xids != ()
        or sample.throttle_mask != previous.throttle_mask
        or sample.ecc_corrected != previous.ecc_corrected
        or sample.ecc_uncorrected != previous.ecc_uncorrected
    )


class RangeExtreme:
    """The max (or min) of any index range in two lookups: a sparse table extended on every append.

    `levels[k][j]` is the extreme of values `[j, j + 2**k)`. Appending value n adds, on each level k, the
    one entry that ends at n (O(log n)); dropping the oldest values drops the same count from every level,
    which keeps every entry's meaning. An entry covering an unread value (None) is None; the ring asks only
    about ranges where every value was read.
    """

    __slots__ = ("_pick", "levels")

    def __init__(self, pick: Callable[[Any, Any], Any]) -> None:
        self.levels: list[list[Any]] = [[]]
        self._pick = pick

    def append(self, value: Any) -> None:
        levels, pick = self.levels, self._pick
        levels[0].append(value)
        n = len(levels[0])
        k, width = 1, 2
        while width <= n:
            if k == len(levels):
                levels.append([])
            below = levels[k - 1]
            j = n - width
            a, b = below[j], below[j + width // 2]
            levels[k].append(None if a is None or b is None else pick(a, b))
            k, width = k + 1, width * 2

    def query(self, lo: int, hi: int) -> Any:
        """The extreme of values `[lo, hi)`, `hi > lo`."""
        k = (hi - lo).bit_length() - 1
        level = self.levels[k]
        return self._pick(level[lo], level[hi - (1 << k)])

    def drop(self, count: int) -> None:
        for level in self.levels:
            del level[:count]


class PrefixSum:
    """The sum of any index range in one subtraction. Rebased when the oldest values are dropped, so the
    running total stays near the window's scale and keeps its precision; an unread value adds nothing."""

    __slots__ = ("totals",)

    def __init__(self) -> None:
        self.totals: list[float] = [0.0]

    def append(self, value: Any) -> None:
        self.totals.append(self.totals[-1] + (value if value is not None else 0.0))

    def query(self, lo: int, hi: int) -> float:
        return self.totals[hi] - self.totals[lo]

    def drop(self, count: int) -> None:
        base = self.totals[count]
        self.totals = [total - base for total in self.totals[count:]]


class Ring:
    """A bounded, time-ordered buffer of one GPU's samples. Copies under its lock; callers work outside."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._ts: list[int] = []
        self._samples: list[Sample] = []
        self._seq0 = 0  # sequence number (appends since creation) of the sample at index 0
        self._last_change = -1  # sequence number of the newest sample that was a transition
        self._last_unread = -1  # sequence number of the newest sample that lacks a reduced field
        #: per column, the range structures of REDUCTIONS
        self._maxima = {column: RangeExtreme(max) for column in (_TEMP, _POWER, _USED, _PROC, _UTIL)}
        self._minima = {_SM: RangeExtreme(min)}
        self._sums = {_POWER: PrefixSum(), _UTIL: PrefixSum()}

    def append(self, sample: Sample) -> int:
        """Add a sample; returns how many of the oldest samples aged out to stay bounded."""
        with self._lock:
            if self._ts and sample.ts_ns < self._ts[-1]:
                return 0  # out of order (a clock stepped back): keep the buffer sorted
            seq = self._seq0 + len(self._ts)
            if self._samples and transition_between(self._samples[-1], sample):
                self._last_change = seq
            values = STAMP_COLUMNS(sample)
            if None in values:
                self._last_unread = seq
            for structures in (self._maxima, self._minima, self._sums):
                for column, structure in structures.items():
                    structure.append(values[column])
            self._ts.append(sample.ts_ns)
            self._samples.append(sample)
            excess = len(self._ts) - self.capacity
            # Trim in chunks so appends stay amortised O(1); memory stays under 2x capacity.
            if excess >= max(1, self.capacity // 4):
                del self._ts[:excess]
                del self._samples[:excess]
                for structures in (self._maxima, self._minima, self._sums):
                    for structure in structures.values():
                        structure.drop(excess)
                self._seq0 += excess
                return excess
            return 0

    def _bounds(self, start_ns: int, end_ns: int) -> tuple[int, int]:
        lo = bisect.bisect_right(self._ts, start_ns)
        hi = bisect.bisect_right(self._ts, end_ns)
        return max(lo - 1, 0), max(hi, lo)

    def window(self, start_ns: int, end_ns: int) -> list[Sample]:
        """The window (docs/contracts.md §1): the last sample at or before `start_ns` plus every sample in (start, end]."""
        with self._lock:
            lo, hi = self._bounds(start_ns, end_ns)
            return self._samples[lo:hi]

    def window_stats(self, start_ns: int, end_ns: int) -> RingWindow:
        """The window (docs/contracts.md §1) with its reductions and whether it is quiet (see `RingWindow`)."""
        with self._lock:
            ts = self._ts
            lo = bisect.bisect_right(ts, start_ns)
            hi = bisect.bisect_right(ts, end_ns)
            if hi < lo:
                hi = lo
            if lo:
                lo -= 1
            samples = self._samples[lo:hi]
            if not samples:
                return samples, (None,) * len(REDUCTIONS), True
            first = self._seq0 + lo
            if self._last_unread < first:  # every field read in every sample: the structures answer
                # Two overlapping power-of-two spans cover [lo, hi): the table's entries at lo and at j.
                # Written out rather than looped or called per column: this runs on every request.
                k = (hi - lo).bit_length() - 1
                j = hi - (1 << k)
                n = hi - lo
                maxima = self._maxima
                temp, power, used = maxima[_TEMP].levels[k], maxima[_POWER].levels[k], maxima[_USED].levels[k]
                proc, util, sm = maxima[_PROC].levels[k], maxima[_UTIL].levels[k], self._minima[_SM].levels[k]
                power_sum, util_sum = self._sums[_POWER].totals, self._sums[_UTIL].totals
                reductions = (
                    temp[lo] if temp[lo] >= temp[j] else temp[j],
                    power[lo] if power[lo] >= power[j] else power[j],
                    (power_sum[hi] - power_sum[lo]) / n,
                    used[lo] if used[lo] >= used[j] else used[j],
                    proc[lo] if proc[lo] >= proc[j] else proc[j],
                    (util_sum[hi] - util_sum[lo]) / n,
                    util[lo] if util[lo] >= util[j] else util[j],
                    sm[lo] if sm[lo] <= sm[j] else sm[j],
                )
            else:
                reductions = reduce_samples(samples)
            return samples, reductions, self._last_change <= first

    def latest(self) -> Sample | None:
        """The newest sample, if any."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def reset_lock(self) -> None:
        """A new lock (after a fork the old one may be held by a thread that no longer exists)."""
        self._lock = threading.Lock()


__all__ = ["REDUCTIONS", "PrefixSum", "RangeExtreme", "Ring", "RingWindow", "reduce_samples", "transition_between"]
