"""Admission advice: accept a request, or name the largest input size that fits the GPU now, and why.

The advisor learns, per model and GPU type, a request's peak device memory and its service time as lines in
input pixels, from the inference spans the collector ends (a span processor reads them, stamps included).
It answers from the sampler's newest sample (device memory used by others and by this process, SM clock and
throttle reasons, utilisation) and the inference spans open on the GPU, whose memory and work are still to
come. Until a model has `min_spans` observations on two or more sizes it uses conservative defaults.

Light like the rest of the collector: no numpy, no DuckDB; prometheus_client only when its gauge is scraped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from gpu_rca.collector._collector import Collector
from gpu_rca.collector._fit import Line, OnlineFit
from gpu_rca.collector._nvml import ERRORS
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as M

GIB = 1024**3
#: NVML's clock-event reasons that mean the GPU is slowed (idle and application clocks are not).
_SLOWING_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
_SLOWING_NAMES = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}


@dataclass(frozen=True, slots=True)
class Advice:
    """The answer for one request: accept it, or the largest input size that fits now (None: none does)."""

    accept: bool
    input_size: int
    max_input_size: int | None
    reason: str
    retry_after_s: int
    model: str
    gpu_uuid: str | None


@dataclass(frozen=True, slots=True)
class ModelFit:
    """What the advisor has learnt for one model on one GPU type (None: still on defaults)."""

    model: str
    gpu_name: str
    memory: Line | None
    service_time: Line | None
    ooms_seen: int


@dataclass(frozen=True, slots=True)
class _GpuNow:
    uuid: str
    gpu_name: str
    total_bytes: int
    others_bytes: int
    baseline_bytes: int
    inflight: tuple[tuple[str, int, int], ...]  # (model, input_size, start_ns) of each open inference span
    speed: float
    slowed_by: tuple[str, ...]
    utilization_pct: float | None
    now_ns: int


class AdmissionAdvisor:
    """Admission advice for one collector's GPUs. Registers its span processor on the collector's provider.

    `max_concurrency`: requests the service runs on one GPU at once (its worker's limit; None: all admitted
    requests may hold memory together). `timeout_s`: the request timeout; a request whose queue plus service
    time would pass `latency_budget` of it is refused like one that does not fit in memory.
    """

    def __init__(
        self,
        collector: Collector,
        *,
        models: Iterable[str] = (),
        size_attribute: str = A.DDCOLOR_INPUT_SIZE,
        model_attribute: str = A.DDCOLOR_MODEL,
        max_concurrency: int | None = None,
        timeout_s: float = 30.0,
        latency_budget: float = 0.8,
        size_step: int = 32,
        min_input_size: int = 256,
        max_input_size: int = 2048,
        min_spans: int = 8,
        headroom_fraction: float = 0.05,
        default_bytes_per_pixel: float = 8192.0,
        default_seconds_per_pixel: float = 2e-6,
        quantile: float = 0.95,
        history: int = 512,
    ) -> None:
        if size_step <= 0 or min_input_size <= 0 or max_input_size < min_input_size:
            raise ValueError("sizes must satisfy 0 < min_input_size <= max_input_size and size_step > 0")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if timeout_s <= 0 or not 0 < latency_budget <= 1 or not 0 <= headroom_fraction < 1:
            raise ValueError("timeout_s > 0, 0 < latency_budget <= 1 and 0 <= headroom_fraction < 1 are required")
        self.collector = collector
        self.size_attribute = size_attribute
        self.model_attribute = model_attribute
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.latency_budget = latency_budget
        self.size_step = size_step
        self.min_input_size = _round_down(min_input_size, size_step) or size_step
        self.max_input_size = _round_down(max_input_size, size_step)
        self.min_spans = min_spans
        self.headroom_fraction = headroom_fraction
        self.default_bytes_per_pixel = default_bytes_per_pixel
        self.default_seconds_per_pixel = default_seconds_per_pixel
        self._quantile = quantile
        self._history = history
        self._lock = threading.Lock()
        self._models: list[str] = list(dict.fromkeys(models))
        self._memory: dict[tuple[str, str], OnlineFit] = {}
        self._time: dict[tuple[str, str], OnlineFit] = {}
        self._ooms: dict[tuple[str, str], int] = {}
        self._baseline: dict[str, int] = {}  # uuid -> least memory this process held (context + weights)
        self.processor = AdvisorSpanProcessor(self)
        provider = collector.tracer_provider or trace.get_tracer_provider()
        if hasattr(provider, "add_span_processor"):
            provider.add_span_processor(self.processor)

    # --- learning ---------------------------------------------------------------------------------
    def observe(self, span: ReadableSpan) -> None:
        """Learn from one ended span (the processor calls this; other spans than inference ones are ignored)."""
        attrs = span.attributes or {}
        if attrs.get(A.TELEMETRY_SOURCE) in (None, A.SOURCE_NONE):
            return
        model, size, gpu_name = attrs.get(self.model_attribute), attrs.get(self.size_attribute), attrs.get(A.GPU_NAME)
        if not isinstance(model, str) or not isinstance(size, int) or size <= 0 or not isinstance(gpu_name, str):
            return
        key = (model, gpu_name)
        pixels = size * size
        with self._lock:
            if model not in self._models:
                self._models.append(model)
            memory = self._memory.setdefault(key, OnlineFit(self._history, self._quantile))
            service = self._time.setdefault(key, OnlineFit(self._history, self._quantile))
            error = attrs.get(A.ERROR_TYPE)
            if error == A.ERROR_CUDA_OOM:
                self._ooms[key] = self._ooms.get(key, 0) + 1
            if error is not None:
                return
            baseline = self._baseline.get(str(attrs.get(A.GPU_UUID)))
        alone = attrs.get(A.INFLIGHT_MAX) == 1
        peak = attrs.get(A.INFERENCE_MEMORY_PEAK)
        process_max = attrs.get(A.MEMORY_PROCESS_MAX)
        if isinstance(peak, int) and peak > 0:
            memory.add(pixels, peak)
        elif alone and isinstance(process_max, int) and baseline is not None:
            # Without the service's own measurement, what the process held above its idle footprint while
            # this request ran alone: an upper bound (the caching allocator keeps earlier blocks).
            memory.add(pixels, max(process_max - baseline, 0))
        if alone and span.start_time is not None and span.end_time is not None:
            queue_ms, reasons = attrs.get(A.QUEUE_MS, 0.0), attrs.get(A.THROTTLE_REASONS) or ()
            seconds = (span.end_time - span.start_time) / 1e9 - (
                queue_ms / 1e3 if isinstance(queue_ms, int | float) else 0.0
            )
            clock_min, clock_max = attrs.get(A.CLOCK_SM_MIN), attrs.get(A.CLOCK_SM_MAX)
            slowed = set(reasons if isinstance(reasons, tuple | list) else ()) & set(_SLOWING_NAMES.values())
            if slowed and isinstance(clock_min, int) and isinstance(clock_max, int) and clock_max > 0:
                # As if at full clock: a throttled span took longer. (Idle clocks before the work began are
                # not a slowdown, so only a slowing reason counts.)
                seconds *= min(clock_min / clock_max, 1.0)
            if seconds > 0:
                service.add(pixels, seconds)

    def fits(self) -> list[ModelFit]:
        """What has been learnt so far, per model and GPU type."""
        with self._lock:
            keys = sorted(set(self._memory) | set(self._time))
            return [
                ModelFit(
                    m,
                    g,
                    self._ready(self._memory.get((m, g))),
                    self._ready(self._time.get((m, g))),
                    self._ooms.get((m, g), 0),
                )
                for m, g in keys
            ]

    def _ready(self, fit: OnlineFit | None) -> Line | None:
        if fit is None or fit.count < self.min_spans or fit.distinct_x() < 2:
            return None
        return fit.line()

    # --- advice -------------------------------------------------------------------------------------
    def advise(self, gpu: Any, model: str, input_size: int) -> Advice:
        """Accept `input_size` for `model` on `gpu` (the collector's `gpu=`), or the largest size that fits now."""
        now = self._gpu_now(gpu)
        if now is None:
            return Advice(True, input_size, None, "no GPU telemetry: admitted without advice", 0, model, None)
        problem = self._problem(now, model, input_size)
        if problem is None:
            need = self._memory_need(now.gpu_name, model, input_size * input_size)
            reason = f"fits: {input_size} needs ~{_gib(need)} GiB of {_gib(self._available(now))} GiB available"
            return Advice(True, input_size, self._largest(now, model, self.max_input_size), reason, 0, model, now.uuid)
        reason, retry_after_s = problem
        largest = self._largest(now, model, input_size - self.size_step)
        if largest is not None:
            reason += f"; {largest} or less fits now"
        return Advice(False, input_size, largest, reason, retry_after_s, model, now.uuid)

    def largest_input_size(self, gpu: Any, model: str) -> int | None:
        """The largest input size (a multiple of `size_step`, up to `max_input_size`) that fits now."""
        now = self._gpu_now(gpu)
        if now is None:
            return None
        return self._largest(now, model, self.max_input_size)

    def _largest(self, now: _GpuNow, model: str, ceiling: int) -> int | None:
        size = _round_down(min(ceiling, self.max_input_size), self.size_step)
        while size >= self.min_input_size:
            if self._problem(now, model, size) is None:
                return size
            size -= self.size_step
        return None

    def _problem(self, now: _GpuNow, model: str, size: int) -> tuple[str, int] | None:
        """Why `size` does not fit now (reason, seconds worth waiting), or None when it does."""
        pixels = size * size
        need = self._memory_need(now.gpu_name, model, pixels)
        available = self._available(now)
        busy = f"{len(now.inflight)} in flight" + (
            f", {now.utilization_pct:.0f}% busy" if now.utilization_pct is not None else ""
        )
        slowed = f", clocks at {now.speed:.0%} ({', '.join(now.slowed_by)})" if now.slowed_by else ""
        if need > available:
            return (
                f"GPU memory: {size} needs ~{_gib(need)} GiB, {_gib(available)} GiB available ({busy}{slowed})",
                self._retry_after(now),
            )
        ahead_s = sum(self._service_s(now.gpu_name, m, s * s) for m, s, _ in now.inflight)
        finish_s = (ahead_s + self._service_s(now.gpu_name, model, pixels)) / now.speed
        budget_s = self.latency_budget * self.timeout_s
        if finish_s > budget_s:
            return (
                f"GPU time: {size} would finish in ~{finish_s:.0f} s, over {budget_s:.0f} s "
                f"({self.latency_budget:.0%} of the {self.timeout_s:g} s timeout; {busy}{slowed})",
                max(1, math.ceil(finish_s - budget_s)),
            )
        return None

    def _available(self, now: _GpuNow) -> float:
        """Device memory a new request can use: total less headroom, other processes, this process's idle
        footprint and the peaks of the requests already admitted (the largest that can run together)."""
        peaks = sorted((self._memory_need(now.gpu_name, m, s * s) for m, s, _ in now.inflight), reverse=True)
        if self.max_concurrency is not None:
            peaks = peaks[: self.max_concurrency - 1]
        headroom = self.headroom_fraction * now.total_bytes
        return now.total_bytes - headroom - now.others_bytes - now.baseline_bytes - sum(peaks)

    def _memory_need(self, gpu_name: str, model: str, pixels: int) -> float:
        with self._lock:
            line = self._ready(self._memory.get((model, gpu_name)))
        return line.predict(pixels) if line is not None else self.default_bytes_per_pixel * pixels

    def _service_s(self, gpu_name: str, model: str, pixels: int) -> float:
        with self._lock:
            line = self._ready(self._time.get((model, gpu_name)))
        return line.predict(pixels) if line is not None else self.default_seconds_per_pixel * pixels

    def _retry_after(self, now: _GpuNow) -> int:
        """Seconds until the first admitted request should be done (memory frees then)."""
        if not now.inflight:
            return 5  # memory held by someone else: no estimate of when it frees
        remaining = min(
            self._service_s(now.gpu_name, m, s * s) / now.speed - (now.now_ns - start) / 1e9
            for m, s, start in now.inflight
        )
        return max(1, math.ceil(remaining))

    def _gpu_now(self, gpu: Any) -> _GpuNow | None:
        collector = self.collector
        try:
            target = collector.resolve_gpu(gpu)
            sampler = collector.sampler
            if target is None or sampler is None:
                return None
            device = sampler.device(target.index)
            sample = sampler.latest(target.index)
        except Exception as exc:
            collector.health.failure(ERRORS, "advisor", "reading GPU state for advice failed", exc)
            return None
        if device is None or sample is None:
            return None
        total = device.memory_total_bytes or sample.memory_total_bytes or 0
        used = sample.memory_used_bytes or 0
        process = sample.process_memory_bytes
        with self._lock:
            if process is not None:
                self._baseline[device.uuid] = min(self._baseline.get(device.uuid, process), process)
            baseline = self._baseline.get(device.uuid, 0)
        # Without a per-process reading, all memory in use counts as someone else's.
        others = used - process if process is not None else used
        inflight = []
        for span in collector.inflight(target.index):
            attrs = getattr(span.span, "attributes", None) or {}
            model, size = attrs.get(self.model_attribute), attrs.get(self.size_attribute)
            if isinstance(model, str) and isinstance(size, int):
                inflight.append((model, size, span.start_ns))
        speed = 1.0
        slowed: tuple[str, ...] = ()
        mask = sample.throttle_mask or 0
        if mask & _SLOWING_MASK and sample.sm_clock_mhz and device.max_sm_clock_mhz:
            speed = min(max(sample.sm_clock_mhz / device.max_sm_clock_mhz, 0.05), 1.0)
            slowed = tuple(name for bit, name in _SLOWING_NAMES.items() if mask & bit)
        return _GpuNow(
            device.uuid,
            device.name,
            total,
            max(others, 0),
            baseline,
            tuple(inflight),
            speed,
            slowed,
            sample.utilization_pct,
            collector.clock(),
        )

    # --- the gauge ---------------------------------------------------------------------------------
    def metric_families(self) -> Iterator[Any]:
        """`gpu_rca_advisor_max_input_size{UUID,model}` for every GPU and known model (0: nothing fits)."""
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            M.ADVISOR_MAX_INPUT_SIZE,
            "Largest input size the admission advisor accepts now, per GPU and model (0: none fits).",
            labels=[M.LABEL_UUID, "model"],
        )
        sampler = self.collector.sampler
        with self._lock:
            models = list(self._models)
        devices = sampler.devices if sampler is not None else ()
        for device in devices:
            if sampler is None or sampler.is_lost(device.index):
                continue
            now = self._gpu_now(device.uuid)
            for model in models:
                size = self._largest(now, model, self.max_input_size) if now is not None else None
                family.add_metric([device.uuid, model], float(size or 0))
        yield family

    def prometheus_collector(self) -> Any:
        """A prometheus_client collector to register beside the exporter's (`registry.register(...)`)."""
        return _AdvisorCollector(self)


class _AdvisorCollector:
    def __init__(self, advisor: AdmissionAdvisor) -> None:
        self.advisor = advisor

    def collect(self) -> Iterator[Any]:
        yield from self.advisor.metric_families()


class AdvisorSpanProcessor(SpanProcessor):
    """Feeds every ended span to the advisor; a failure is counted, never raised."""

    def __init__(self, advisor: AdmissionAdvisor) -> None:
        self.advisor = advisor

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self.advisor.observe(span)
        except Exception as exc:
            self.advisor.collector.health.failure(ERRORS, "advisor", "learning from a span failed", exc)

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing buffered."""
        return True


def _round_down(size: int, step: int) -> int:
    return size // step * step


def _gib(value: float) -> str:
    return f"{max(value, 0.0) / GIB:.1f}"


__all__ = ["AdmissionAdvisor", "Advice", "AdvisorSpanProcessor", "ModelFit"]
