"""One GPU's bounded sample buffer, and the window aggregates it keeps ready for the request path.

Stamping a span reduces its window (about ten samples at 10 Hz, more for long spans): maxima, a minimum,
two means. Doing that on the request path meant slicing a column per field and reducing each slice. The
ring instead does the work as samples arrive, on the sampler's thread: a block structure per max/min column
(`BlockExtreme`: any range's extreme in at most four lookups, about one operation an append) and a prefix
sum per mean, so a span's reductions cost about the same for a window of ten samples or of ten thousand, and
the exact answer either way. The ring also remembers the newest sample that lacked a field and
the newest that changed the clock-event mask or ECC counters or reported an XID, so a window that needs the
careful path is known without scanning it.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import threading
from collections.abc import Callable
from typing import Any

from gpu_rca.collector._nvml import Sample
from gpu_rca.schemas import attributes as A

#: What stamping reduces, in this order: (Sample field, reduction, stamp) with reduction one of max, min,
#: mean. The one definition: the fields the ring reads, its range structures, its fast path,
#: `reduce_samples` and the stamps the values go to are all derived from it.
REDUCTIONS: tuple[tuple[str, str, str], ...] = (
    ("temperature_c", "max", A.TEMPERATURE_MAX),
    ("power_w", "max", A.POWER_MAX),
    ("power_w", "mean", A.POWER_MEAN),
    ("memory_used_bytes", "max", A.MEMORY_USED_MAX),
    ("process_memory_bytes", "max", A.MEMORY_PROCESS_MAX),
    ("utilization_pct", "mean", A.UTILIZATION_MEAN),
    ("utilization_pct", "max", A.UTILIZATION_MAX),
    ("sm_clock_mhz", "min", A.CLOCK_SM_MIN),
)
#: The stamp each of REDUCTIONS' values goes to.
REDUCED_STAMPS: tuple[str, ...] = tuple(stamp for _, _, stamp in REDUCTIONS)
#: The Sample fields REDUCTIONS read, each once, in order of first use.
REDUCED_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(name for name, _, _ in REDUCTIONS))
#: Picks REDUCED_FIELDS' values from a Sample, in C.
reduced_values = operator.itemgetter(*(Sample._fields.index(name) for name in REDUCED_FIELDS))
#: Each reduction as (index into REDUCED_FIELDS, reduction).
_PLAN: tuple[tuple[int, str], ...] = tuple((REDUCED_FIELDS.index(name), how) for name, how, _ in REDUCTIONS)
#: A window without samples: nothing reduced.
NOTHING_REDUCED: tuple[None, ...] = (None,) * len(REDUCTIONS)

#: `(samples, reductions, quiet)`, copies safe to read outside the ring's lock. `reductions`: REDUCTIONS'
#: values in order, each over the samples that read its field (None when none did). `quiet`: no sample
#: after the first changes the clock-event mask or the ECC counters or reports an XID, so nothing
#: happened inside the window and its mask is the first sample's. (A plain tuple: a NamedTuple's
#: constructor cost a measurable share of a stamp.)
RingWindow = tuple[list[Sample], tuple[Any, ...], bool]

#: `(count, first, last, *reductions)` of a quiet window whose samples read every reduced field (see
#: `Ring.quiet_window`): what stamping needs of it, without a copy of its samples.
QuietWindow = tuple[Any, ...]

_BUILTINS: dict[str, Callable[[list[Any]], Any]] = {"max": max, "min": min, "mean": lambda v: sum(v) / len(v)}


def reduce_samples(samples: list[Sample]) -> tuple[Any, ...]:
    """REDUCTIONS over `samples`, each over the values that were read (None when none was)."""
    columns = [[v for v in column if v is not None] for column in zip(*map(reduced_values, samples))]
    if not columns:
        return NOTHING_REDUCED
    return tuple(_BUILTINS[how](columns[col]) if columns[col] else None for col, how in _PLAN)


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
    about ranges where every value was read. The ring keeps one over its blocks' extremes (`BlockExtreme`).
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


#: Samples per block of a `BlockExtreme` (a power of two); `BLOCK_SHIFT` is its log2.
BLOCK_SHIFT = 3
BLOCK = 1 << BLOCK_SHIFT
_BLOCK_MASK = BLOCK - 1


class BlockExtreme:
    """The max (or min) of any index range in at most four lookups, for about one operation an append.

    Values are grouped in blocks of BLOCK. `prefix[i]` is the extreme from the start of i's block to i,
    kept on append; `suffix[i]` the extreme from i to the end of its block, filled when the block is full;
    `blocks` a sparse table over the full blocks' extremes, extended once a block. A range within one
    block is scanned (at most BLOCK values); a range over two blocks is `suffix[lo]` and `prefix[hi - 1]`;
    a longer one adds the table's two lookups over the blocks between. (A sparse table over every value
    answered in two lookups, but added one entry per level — 13 at 6,000 samples — to each structure on
    every append: most of the sampler's own time at 100 Hz.) Values are numbers: the ring stores 0 for an
    unread value, so entries over one mean nothing, and it asks only about ranges where every value was read
    (such a range's answer reads no entry that covers a value outside it). Dropped counts are whole blocks.
    The ring appends through `_append_values`, the same steps written out for all its structures at once.
    """

    __slots__ = ("_pick", "blocks", "prefix", "suffix", "values")

    def __init__(self, pick: Callable[..., Any]) -> None:
        self._pick = pick
        self.values: list[Any] = []
        self.prefix: list[Any] = []
        self.suffix: list[Any] = []
        self.blocks = RangeExtreme(pick)

    def append(self, value: Any) -> None:
        values, prefix = self.values, self.prefix
        n = len(values)
        values.append(value)
        if n & _BLOCK_MASK:
            prefix.append(self._pick(prefix[-1], value))
            if n & _BLOCK_MASK == _BLOCK_MASK:
                self.close_block()
        else:
            prefix.append(value)

    def close_block(self) -> None:
        """After the last value of a block: its suffix extremes, and its extreme into the block table."""
        tail = list(itertools.accumulate(reversed(self.values[-BLOCK:]), self._pick))
        tail.reverse()
        self.suffix.extend(tail)
        self.blocks.append(self.prefix[-1])

    def query(self, lo: int, hi: int) -> Any:
        """The extreme of values `[lo, hi)`, `hi > lo`, every one read."""
        last = hi - 1
        first_block, last_block = lo >> BLOCK_SHIFT, last >> BLOCK_SHIFT
        if first_block == last_block:
            return self._pick(self.values[lo:hi])
        extreme = self._pick(self.suffix[lo], self.prefix[last])
        if last_block - first_block > 1:
            extreme = self._pick(extreme, self.blocks.query(first_block + 1, last_block))
        return extreme

    def drop(self, count: int) -> None:
        """Drop the oldest `count` values, a multiple of BLOCK."""
        del self.values[:count]
        del self.prefix[:count]
        del self.suffix[:count]
        self.blocks.drop(count >> BLOCK_SHIFT)


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


_STRUCTURE: dict[str, Callable[[], BlockExtreme | PrefixSum]] = {
    "max": lambda: BlockExtreme(max),
    "min": lambda: BlockExtreme(min),
    "mean": PrefixSum,
}


def _compile_reduce_range() -> tuple[
    Callable[[tuple[Any, ...], int, int], tuple[Any, ...]], Callable[[Ring, int, int], QuietWindow | None]
]:
    """REDUCTIONS over the index range `[lo, hi)` (`hi > lo`, every value read) from the ring's structures;
    and `Ring.quiet_window` with the same reduction written into it (one call and no tuple in between, on
    every stamp).

    This runs on every stamp, so it is written out as straight-line code, generated here from REDUCTIONS
    (as `collections.namedtuple` generates its class): a loop over the reductions, or a call per column,
    measured about 0.8 µs more per stamp, nearly doubling the window lookup. Every structure shares the
    same blocks, so the case is decided once: a range over two blocks (a span of a few samples, the common
    one) is each extreme's `suffix[lo]` against `prefix[hi - 1]`; over more, those two and the block table's
    two lookups (`BlockExtreme.query`); within one block, `prefix[hi - 1]` when the range starts the block,
    the value itself for one sample, else a scan of at most BLOCK values. A mean is one subtraction of
    prefix sums.
    """
    hows = [how for _, how in _PLAN]
    extremes = [(i, how, ">=" if how == "max" else "<=") for i, how in enumerate(hows) if how != "mean"]

    def case(indent: str, lines_of: Callable[[int, str, str], list[str]]) -> list[str]:
        return [indent + line for i, pick, keep in extremes for line in lines_of(i, pick, keep)]

    def body(indent: str) -> list[str]:
        """Statements setting `v{i}` (each extreme) from `x{i}` (the structures), `lo` and `hi`."""
        lines = [
            "last = hi - 1",
            f"first_block = lo >> {BLOCK_SHIFT}",
            f"last_block = last >> {BLOCK_SHIFT}",
            "if last_block == first_block + 1:",
            *case(
                "    ",
                lambda i, pick, keep: [
                    f"a = x{i}.suffix[lo]",
                    f"b = x{i}.prefix[last]",
                    f"v{i} = a if a {keep} b else b",
                ],
            ),
            "elif last_block != first_block:",
            "    k = (last_block - first_block - 1).bit_length() - 1",
            "    j = first_block + 1",
            "    m = last_block - (1 << k)",
            *case(
                "    ",
                lambda i, pick, keep: [
                    f"a = x{i}.suffix[lo]",
                    f"b = x{i}.prefix[last]",
                    f"level = x{i}.blocks.levels[k]",
                    "c = level[j]",
                    "d = level[m]",
                    f"a = a if a {keep} b else b",
                    f"c = c if c {keep} d else d",
                    f"v{i} = a if a {keep} c else c",
                ],
            ),
            f"elif not lo & {_BLOCK_MASK}:  # within one block, from its start",
            *case("    ", lambda i, pick, keep: [f"v{i} = x{i}.prefix[last]"]),
            "elif n == 1:",
            *case("    ", lambda i, pick, keep: [f"v{i} = x{i}.values[lo]"]),
            "else:",
            *case("    ", lambda i, pick, keep: [f"v{i} = {pick}(x{i}.values[lo:hi])"]),
        ]
        return [indent + line for line in lines]

    values = ", ".join(
        f"(x{i}.totals[hi] - x{i}.totals[lo]) / n" if how == "mean" else f"v{i}" for i, how in enumerate(hows)
    )
    unpack = f"{', '.join(f'x{i}' for i in range(len(hows)))}, = "
    source = "\n".join(
        [
            "def reduce_range(structures, lo, hi):",
            f"    {unpack}structures",
            "    n = hi - lo",
            *body("    "),
            f"    return ({values},)",
            "",
            "def quiet_window(self, start_ns, end_ns):",
            "    with self._lock:",
            "        ts = self._ts",
            "        lo = _bisect_right(ts, start_ns)",
            "        hi = _bisect_right(ts, end_ns, lo)",
            "        if lo:",
            "            lo -= 1",
            "        if hi <= lo:",
            "            return None",
            "        first = self._seq0 + lo",
            "        if self._last_unread >= first or self._last_change > first:",
            "            return None",
            "        samples = self._samples",
            "        first, last_sample = samples[lo], samples[hi - 1]",
            "        n = hi - lo",
            "        offset = self._offset",
            "        lo += offset",
            "        hi += offset",
            f"        {unpack}self._structures",
            *body("        "),
            f"        return n, first, last_sample, {values}",
        ]
    )
    namespace: dict[str, Any] = {"_bisect_right": bisect.bisect_right}
    exec(compile(source, f"<{__name__} reduce_range>", "exec"), namespace)
    reduce_range: Callable[[tuple[Any, ...], int, int], tuple[Any, ...]] = namespace["reduce_range"]
    quiet_window: Callable[[Ring, int, int], QuietWindow | None] = namespace["quiet_window"]
    return reduce_range, quiet_window


_reduce_range, _quiet_window = _compile_reduce_range()


def _compile_append_values() -> Callable[[tuple[Any, ...], tuple[Any, ...]], None]:
    """`append_values(structures, values)`: REDUCED_FIELDS' values (numbers) into every structure, as each
    structure's `append` would, written out as straight-line code (generated, as `_compile_reduce_range`):
    the block position is the same for all of them, so it is decided once, and a prefix extreme is a
    comparison rather than a call. A method call per structure was most of the sampler's own time."""
    hows = [how for _, how in _PLAN]
    columns = [column for column, _ in _PLAN]
    extremes = [(i, columns[i], ">=" if how == "max" else "<=") for i, how in enumerate(hows) if how != "mean"]
    means = [(i, columns[i]) for i, how in enumerate(hows) if how == "mean"]
    source = "\n".join(
        [
            "def append_values(structures, values):",
            f"    {', '.join(f'x{i}' for i in range(len(hows)))}, = structures",
            f"    {', '.join(f'c{c}' for c in range(len(REDUCED_FIELDS)))}, = values",
            f"    n = len(x{extremes[0][0]}.values)",
            f"    if n & {_BLOCK_MASK}:",
            *(
                line
                for i, c, keep in extremes
                for line in (
                    f"        x{i}.values.append(c{c})",
                    f"        b = x{i}.prefix[-1]",
                    f"        x{i}.prefix.append(b if b {keep} c{c} else c{c})",
                )
            ),
            f"        if n & {_BLOCK_MASK} == {_BLOCK_MASK}:",
            *(f"            x{i}.close_block()" for i, _, _ in extremes),
            "    else:",
            *(
                line
                for i, c, _ in extremes
                for line in (f"        x{i}.values.append(c{c})", f"        x{i}.prefix.append(c{c})")
            ),
            *(line for i, c in means for line in (f"    t = x{i}.totals", f"    t.append(t[-1] + c{c})")),
        ]
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{__name__} append_values>", "exec"), namespace)
    function: Callable[[tuple[Any, ...], tuple[Any, ...]], None] = namespace["append_values"]
    return function


_append_values = _compile_append_values()


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
        #: one range structure per reduction, in REDUCTIONS' order
        self._structures: tuple[BlockExtreme | PrefixSum, ...] = tuple(_STRUCTURE[how]() for _, how in _PLAN)
        #: The structures drop whole blocks only: index i here is `i + self._offset` in them.
        self._offset = 0

    def append(self, sample: Sample) -> int:
        """Add a sample; returns how many of the oldest samples aged out to stay bounded."""
        with self._lock:
            if self._ts and sample.ts_ns < self._ts[-1]:
                return 0  # out of order (a clock stepped back): keep the buffer sorted
            seq = self._seq0 + len(self._ts)
            if self._samples and transition_between(self._samples[-1], sample):
                self._last_change = seq
            values = reduced_values(sample)
            if None in values:  # stored as 0, in entries no query reads (see BlockExtreme)
                self._last_unread = seq
                values = tuple(0 if value is None else value for value in values)
            _append_values(self._structures, values)
            self._ts.append(sample.ts_ns)
            self._samples.append(sample)
            excess = len(self._ts) - self.capacity
            # Trim in chunks so appends stay amortised O(1); memory stays under 2x capacity.
            if excess >= max(1, self.capacity // 4):
                del self._ts[:excess]
                del self._samples[:excess]
                offset = self._offset + excess
                whole = offset - offset % BLOCK
                for structure in self._structures:
                    structure.drop(whole)
                self._offset = offset - whole
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
                return samples, NOTHING_REDUCED, True
            first = self._seq0 + lo
            if self._last_unread < first:  # every field read in every sample: the structures answer
                reductions = _reduce_range(self._structures, lo + self._offset, hi + self._offset)
            else:
                reductions = reduce_samples(samples)
            return samples, reductions, self._last_change <= first

    def quiet_window(self, start_ns: int, end_ns: int) -> QuietWindow | None:
        """The common window in O(1), without copying it: `(count, first, last, *reductions)` when every
        sample in it read every reduced field and nothing happened inside it (see `RingWindow`'s `quiet`);
        None otherwise (then `window_stats` has what stamping needs). Replaced below by the generated one
        (`_compile_reduce_range`); this body is the same call."""
        return _quiet_window(self, start_ns, end_ns)

    def latest(self) -> Sample | None:
        """The newest sample, if any."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def reset_lock(self) -> None:
        """A new lock (after a fork the old one may be held by a thread that no longer exists)."""
        self._lock = threading.Lock()


Ring.quiet_window = _quiet_window  # type: ignore[method-assign, assignment]


__all__ = [
    "BLOCK",
    "NOTHING_REDUCED",
    "REDUCED_FIELDS",
    "REDUCED_STAMPS",
    "REDUCTIONS",
    "BlockExtreme",
    "PrefixSum",
    "QuietWindow",
    "RangeExtreme",
    "Ring",
    "RingWindow",
    "reduce_samples",
    "reduced_values",
    "transition_between",
]
