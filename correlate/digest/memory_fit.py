"""What one request costs in GPU memory, fitted from stored spans: `memory = base + k[model] · pixels`.

NVML's per-process reading is what the process holds: its idle footprint (CUDA context and weights: the
`base`), plus everything the caching allocator has reserved for all requests so far, released only when
the process idles. A request's own stamp therefore says what the process held, not what the request
needed. Two kinds of observation say more:

- The service's own measurement (`inference.memory.peak_bytes`, torch's peak for the request), where the
  service sets it: one point per request, `x` its own pixels.
- A rise: a span during which the process reading rose above the previous span's reading on that GPU.
  Reserved memory only grows when what is allocated now passes everything reserved before, so the new
  reading less `base` is what the requests running then held together. Only spans whose overlapping spans
  all ran at one common instant, and all succeeded, are used: `x` is the pixels of each of them, by model.

The fit is least squares through the origin with one slope per model (a request's memory grows with its
pixels; DDColor resizes every image to size × size), reported with its points and R².
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from gpu_rca.schemas import attributes as A

#: Fewer observations than this give no fit (the section says so instead of guessing).
MIN_POINTS = 8


@dataclass(frozen=True)
class MemoryFit:
    """Bytes per pixel by model (None: spans without a model attribute), the base per GPU, and fit quality."""

    bytes_per_pixel: dict[str | None, float]
    base_bytes: dict[str, int]  # GPU name -> the serving process's least reading there (context + weights)
    points: int
    r2: float | None
    rms_bytes: float
    source: str  # "service" (the service's own per-request peak) or "rises" (process readings)

    def request_bytes(self, model: str | None, input_size: float) -> float | None:
        """One request's memory at `input_size` (square images), or None when the model was not fitted."""
        k = self.bytes_per_pixel.get(model)
        return None if k is None else k * float(input_size) ** 2


@dataclass(frozen=True)
class _Span:
    gpu: str
    gpu_name: str
    start_ns: int
    end_ns: int
    model: str | None
    pixels: float | None
    process_bytes: int | None
    failed: bool
    own_peak: int | None
    device_start: int | None  # device memory used when the span began (all processes)


def fit_request_memory(con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int) -> MemoryFit | None:
    """The fit over inference spans starting in [start_ns, end_ns]; None with too few observations."""
    spans = _spans(con, start_ns, end_ns)
    base = _base(spans)
    own = [(s.model, s.pixels, float(s.own_peak)) for s in spans if s.own_peak and s.pixels]
    if len(own) >= MIN_POINTS:
        points = [({m: x}, y) for m, x, y in own]
        source = "service"
    else:
        points = _rises(spans, base)
        source = "rises"
    if len(points) < MIN_POINTS:
        return None
    models = sorted({m for x, _ in points for m in x}, key=lambda m: (m is None, m or ""))
    slopes = _least_squares([[x.get(m, 0.0) for m in models] for x, _ in points], [y for _, y in points])
    if slopes is None:
        return None
    predicted = [sum(k * x.get(m, 0.0) for m, k in zip(models, slopes, strict=True)) for x, _ in points]
    ys = [y for _, y in points]
    residual = sum((y - p) ** 2 for y, p in zip(ys, predicted, strict=True))
    mean = sum(ys) / len(ys)
    spread = sum((y - mean) ** 2 for y in ys)
    return MemoryFit(
        bytes_per_pixel={m: max(k, 0.0) for m, k in zip(models, slopes, strict=True)},
        base_bytes=base,
        points=len(points),
        r2=None if spread <= 0 else max(1.0 - residual / spread, 0.0),
        rms_bytes=(residual / len(ys)) ** 0.5,
        source=source,
    )


def _spans(con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int) -> list[_Span]:
    rows = con.execute(
        """
        SELECT gpu_uuid, coalesce(gpu_name, ''), start_ns, end_ns, ddcolor_model, ddcolor_input_size, gpu_memory_process_max,
               error_type IS NOT NULL OR status = 'ERROR',
               TRY_CAST(json_extract_string(attributes, ?) AS BIGINT), gpu_memory_used_start
        FROM spans WHERE is_inference AND gpu_uuid IS NOT NULL AND start_ns BETWEEN ? AND ?
        ORDER BY gpu_uuid, start_ns, end_ns
        """,
        [f'$."{A.INFERENCE_MEMORY_PEAK}"', start_ns, end_ns],
    ).fetchall()
    return [
        _Span(g, n, int(s), int(e), m, None if size is None else float(size) ** 2, proc, bool(bad), peak, used)
        for g, n, s, e, m, size, proc, bad, peak, used in rows
    ]


def _base(spans: Sequence[_Span]) -> dict[str, int]:
    """The least process reading per GPU model: where the allocator had released its cache (one GPU may never)."""
    base: dict[str, int] = {}
    for s in spans:
        if s.process_bytes is not None:
            base[s.gpu_name] = min(base.get(s.gpu_name, s.process_bytes), s.process_bytes)
    return base


def _rises(spans: Sequence[_Span], base: dict[str, int]) -> list[tuple[dict[str | None, float], float]]:
    """(pixels by model of the requests held together, bytes they held) at each rise of the process reading."""
    by_gpu: dict[str, list[_Span]] = defaultdict(list)
    for s in spans:
        by_gpu[s.gpu].append(s)
    points = []
    for on_gpu in by_gpu.values():
        longest = max(o.end_ns - o.start_ns for o in on_gpu)
        for i, s in enumerate(on_gpu):
            if s.failed or s.process_bytes is None or s.gpu_name not in base:
                continue
            # The reading at the span's start: the device's (it holds the process's), else the last span's.
            previous = s.device_start if s.device_start is not None else _previous_reading(on_gpu, i, longest)
            if previous is None or s.process_bytes <= previous:
                continue
            together = [s, *_overlapping(on_gpu, i, longest)]
            if any(o.failed or o.pixels is None for o in together):
                continue
            if max(o.start_ns for o in together) >= min(o.end_ns for o in together):
                continue  # not all running at one instant: which of them held memory at the rise is unknown
            x: dict[str | None, float] = defaultdict(float)
            for o in together:
                x[o.model] += o.pixels or 0.0
            points.append((dict(x), float(s.process_bytes - base[s.gpu_name])))
    return points


def _previous_reading(on_gpu: Sequence[_Span], i: int, longest: int) -> int | None:
    """The process reading of the span that ended last before span `i` began (spans sorted by start)."""
    s, best = on_gpu[i], None
    for j in range(i - 1, -1, -1):
        o = on_gpu[j]
        if best is not None and o.start_ns + longest < best.end_ns:
            break  # starting this early, no span ends after the best one
        if o.end_ns <= s.start_ns and o.process_bytes is not None and (best is None or o.end_ns > best.end_ns):
            best = o
    return None if best is None else best.process_bytes


def _overlapping(on_gpu: Sequence[_Span], i: int, longest: int) -> list[_Span]:
    s, found = on_gpu[i], []
    for j in range(i - 1, -1, -1):
        if on_gpu[j].start_ns < s.start_ns - longest:
            break
        if on_gpu[j].end_ns > s.start_ns:
            found.append(on_gpu[j])
    for o in on_gpu[i + 1 :]:
        if o.start_ns >= s.end_ns:
            break
        found.append(o)
    return found


def _least_squares(rows: list[list[float]], ys: list[float]) -> list[float] | None:
    """Solve the normal equations (through the origin) by Gaussian elimination; None when singular."""
    n = len(rows[0])
    scale = [max((abs(r[j]) for r in rows), default=0.0) or 1.0 for j in range(n)]
    xs = [[v / scale[j] for j, v in enumerate(r)] for r in rows]
    a = [
        [sum(r[i] * r[j] for r in xs) for j in range(n)] + [sum(r[i] * y for r, y in zip(xs, ys, strict=True))]
        for i in range(n)
    ]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-9:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col:
                f = a[r][col] / a[col][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col], strict=True)]
    return [a[i][n] / a[i][i] / scale[i] for i in range(n)]
