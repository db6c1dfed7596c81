"""The collector as an instance: sampler + GPU resolution + inference spans over one tracer provider."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind

from gpu_rca.collector._errors import classify_error
from gpu_rca.collector._gpu import GpuResolver, Target
from gpu_rca.collector._health import Health
from gpu_rca.collector._logs import OtlpLogSink, trace_patcher
from gpu_rca.collector._nvml import DROPPED, ERRORS, DeviceInfo
from gpu_rca.collector._nvml_source import NvmlSource
from gpu_rca.collector._ring import QuietWindow, Ring
from gpu_rca.collector._sampler import Sampler, as_clock
from gpu_rca.collector._spans import (
    InferenceSpan,
    InferenceSpanScope,
    record_failure,
    set_clean_attributes,
    writable_attributes,
)
from gpu_rca.collector._stamp import QUIET_STAMP_COUNT, aggregate, identity, quiet_stamps, write_quiet_stamps
from gpu_rca.schemas import attributes as A

_UNSET: Any = object()
#: Open inference spans tracked per GPU for `gpu.inflight.max`; past this, new spans are not tracked.
MAX_TRACKED_INFLIGHT = 1024


def telemetry_source(nvml: NvmlSource) -> str:
    """`nvml` for a real NVML binding (a module, such as pynvml); `simulated` for any other object (the lab's
    simulated GPUs). A source may declare its own with a `TELEMETRY_SOURCE` string attribute."""
    try:
        declared = getattr(nvml, "TELEMETRY_SOURCE", None)
    except Exception:
        declared = None
    if isinstance(declared, str):
        return declared
    return A.SOURCE_NVML if isinstance(nvml, ModuleType) else A.SOURCE_SIMULATED


class Collector:
    """GPU telemetry on inference spans, from one NVML source, on one tracer provider.

    `nvml`: pynvml or another `NvmlSource` (the lab's simulated GPUs); None runs with source `none`.
    `clock`: `() -> Unix ns` (or an object with `now_ns()`), shared by the sampler and the spans.
    `tracer_provider`: default, the global one. `background=False` leaves sampling to `sample_once(now_ns)`.
    """

    def __init__(
        self,
        nvml: NvmlSource | None = None,
        *,
        clock: Any = None,
        tracer_provider: trace.TracerProvider | None = None,
        resource: Any = None,
        sample_hz: float = 10.0,
        history_s: float = 60.0,
        background: bool = True,
        cuda_visible_devices: str | None = _UNSET,
        pid: int | None = None,
        health: Health | None = None,
        source: str | None = None,
        logger_provider: Any = None,
        host: str | None = None,
    ) -> None:
        self.health = health or Health()
        self.clock = as_clock(clock)
        if nvml is None:
            self.source = A.SOURCE_NONE
        else:
            self.source = source or telemetry_source(nvml)
        #: Where `otlp_log_sink` sends loguru records (default: the global logger provider).
        self.logger_provider = logger_provider
        #: The host this collector runs on (the exporter's Hostname label; default: this machine's name).
        self.host = host
        self.sampler: Sampler | None = None
        if nvml is not None:
            self.sampler = Sampler(
                nvml, clock=self.clock, sample_hz=sample_hz, history_s=history_s, health=self.health, pid=pid
            )
        #: The sampling period, ns (a window's newest sample older than 3 of them is stale).
        self.period_ns = self.sampler.period_ns if self.sampler is not None else int(1e9 / sample_hz)
        self.background = background
        if cuda_visible_devices is _UNSET:
            cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._cuda_visible_devices = cuda_visible_devices
        if tracer_provider is None and resource is not None:
            from opentelemetry.sdk.trace import TracerProvider

            tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        self._resolver: GpuResolver | None = None
        self._inflight_lock = threading.Lock()
        self._inflight: dict[int, set[InferenceSpan]] = {}
        self._identities: dict[tuple[int, int | None], tuple[DeviceInfo, dict[str, Any]]] = {}
        self._span_gpus: dict[Any, tuple[Target, DeviceInfo, dict[str, Any], Ring | None]] = {}
        self._span_gpus_of: tuple[DeviceInfo, ...] | None = None
        self.processor = GpuSpanProcessor(self)
        if tracer_provider is not None and hasattr(tracer_provider, "add_span_processor"):
            tracer_provider.add_span_processor(self.processor)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start sampling (the thread, unless `background=False`). False when there is no telemetry."""
        if self.sampler is None:
            return False
        return self.sampler.start() if self.background else self.sampler.init()

    def sample_once(self, now_ns: int | None = None) -> None:
        """Step the sampler by hand (a virtual clock drives it this way)."""
        if self.sampler is not None:
            self.sampler.sample_once(now_ns)

    def shutdown(self) -> None:
        """Stop sampling and stamping at span start; safe to call twice. (Providers belong to whoever
        made them, and the SDK cannot remove a processor, so this collector's one is switched off.)"""
        self.processor.enabled = False
        if self.sampler is not None:
            self.sampler.stop()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the tracer (and logger) provider this collector was given, where they can."""
        ok = True
        for provider in (self.tracer_provider, self.logger_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                ok = bool(flush(timeout_millis)) and ok
        return ok

    def patch_record(self, record: dict[str, Any]) -> None:
        """loguru patcher (`logger.patch(c.patch_record)`): the current span's ids in `extra`, and the
        collector's time as the record's time when its clock is not wall time (the lab's virtual clock)."""
        trace_patcher(record)
        if self.clock is not time.time_ns:
            record["time"] = datetime.fromtimestamp(self.clock() / 1e9, tz=UTC)

    @property
    def otlp_log_sink(self) -> OtlpLogSink:
        """A loguru sink exporting records as OTel logs through `logger_provider` (else the global one)."""
        from opentelemetry._logs import get_logger_provider

        return OtlpLogSink(self.logger_provider or get_logger_provider(), health=self.health)

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """The GPUs the sampler sees (empty without telemetry)."""
        return self.sampler.devices if self.sampler is not None else ()

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer for inference spans (the global provider's, unless one was given)."""
        if self._tracer is None:
            provider = self.tracer_provider or trace.get_tracer_provider()
            self._tracer = provider.get_tracer("gpu_rca.collector")
        return self._tracer

    # --- GPU resolution --------------------------------------------------------------------------
    def _ready_sampler(self) -> Sampler | None:
        """The sampler, initialised (and restarted in a forked child), or None without telemetry."""
        sampler = self.sampler
        if sampler is None:
            return None
        if self.background:
            sampler.ensure_started()
        return sampler if sampler.init() else None

    def resolve_gpu(self, gpu: Any) -> Target | None:
        """The NVML device `gpu=` names (docs/contracts.md §1), or None."""
        sampler = self._ready_sampler() if gpu is not None else None
        if sampler is None:
            return None
        resolver = self._resolver
        if resolver is None or resolver.devices is not sampler.devices:
            resolver = self._resolver = GpuResolver(sampler.devices, self._cuda_visible_devices)
        return resolver.resolve(gpu)

    def _span_gpu(self, gpu: Any) -> tuple[Target, DeviceInfo, dict[str, Any], Ring | None] | None:
        """What an inference span needs of the GPU `gpu=` names: its target, device, identity stamps and
        sample ring; None without telemetry. Kept per `gpu=` value (an int or str) while the same GPUs are discovered:
        resolving on every request cost a measurable share of a stamp."""
        sampler = self.sampler
        if gpu is None or sampler is None:
            return None
        if self.background:  # `_ready_sampler`, written out: this runs on every span
            sampler.ensure_started()
        if not sampler.init():
            return None
        if self._span_gpus_of is not sampler.devices:
            self._span_gpus = {}
            self._span_gpus_of = sampler.devices
        key = gpu if type(gpu) is int or type(gpu) is str else None
        found = self._span_gpus.get(key) if key is not None else None
        if found is None:
            target = self.resolve_gpu(gpu)
            device = self._device(target)
            if target is None or device is None:
                return None
            found = (target, device, self._identity(device, target.mig_instance_id), sampler.ring(device.index))
            if key is not None:
                self._span_gpus[key] = found
        return found

    def _device(self, target: Target | None) -> DeviceInfo | None:
        if target is None or self.sampler is None:
            return None
        return self.sampler.device(target.index)

    # --- spans -----------------------------------------------------------------------------------
    def inference_span(
        self,
        name: str = "inference",
        *,
        gpu: Any = None,
        attributes: Mapping[str, Any] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> InferenceSpanScope:
        """A context manager and decorator that opens an inference span and stamps it before it ends."""
        return InferenceSpanScope(lambda: self, name, gpu, attributes, kind)

    def start_inference_span(
        self,
        name: str = "inference",
        *,
        gpu: Any = None,
        attributes: Mapping[str, Any] | None = None,
        start_ns: int | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        context: Any = None,
    ) -> InferenceSpan:
        """Open an inference span at `start_ns` (default: now); end it with `.end(end_ns, exception)`."""
        start = self.clock() if start_ns is None else int(start_ns)
        resolved = None
        try:
            resolved = self._span_gpu(gpu)
        except Exception as exc:
            self.health.failure(ERRORS, "resolve_gpu", f"resolving gpu={gpu!r} failed", exc)
        # The source goes in at start, so samplers and on_start processors see an inference span; the
        # GPU's identity is stamped at the end with the window, in one unchecked write.
        attrs: dict[str, Any] = dict(attributes) if attributes else {}
        attrs[A.TELEMETRY_SOURCE] = self.source if resolved is not None else A.SOURCE_NONE
        tracer = self._tracer or self.tracer
        otel = tracer.start_span(name, context=context, kind=kind, attributes=attrs, start_time=start)
        if resolved is None:
            return InferenceSpan(self, otel, start, None)
        span = InferenceSpan(self, otel, start, *resolved)
        # In-flight tracking without a lock per span: a set's add, discard, len and copy are each one atomic
        # operation; only raising other spans' maxima (read, compare, write) takes the lock.
        spans = self._inflight.get(resolved[0].index)
        if spans is None:
            spans = self._inflight.setdefault(resolved[0].index, set())
        if len(spans) < MAX_TRACKED_INFLIGHT:
            spans.add(span)
        else:  # spans opened and never ended: stay bounded rather than slow down every start
            self.health.count(DROPPED, "inflight_tracking")
        count = len(spans)
        if count > 1:  # alone on its GPU, the span's own 1 stands
            with self._inflight_lock:
                for other in tuple(spans):
                    if other.inflight_max < count:
                        other.inflight_max = count
        return span

    def inflight(self, index: int) -> tuple[InferenceSpan, ...]:
        """The inference spans open on NVML device `index` now (the admission advisor reads them)."""
        return tuple(self._inflight.get(index, ()))

    def _finish(self, span: InferenceSpan, end_ns: int | None, exception: BaseException | None) -> None:
        end = self.clock() if end_ns is None else int(end_ns)
        otel = span.span
        try:
            target = span.target
            if target is None:
                self.health.count(DROPPED, "span_without_telemetry")
            else:
                self._inflight[target.index].discard(span)
            if otel.is_recording():
                ring, identity = span.ring, span.identity
                done = False
                # The common case, written out here (it runs on every request): a quiet window whose
                # samples read every field, stamped as the GPU's identity then the window's stamps.
                if (
                    ring is not None
                    and identity is not None
                    and (quiet := ring.quiet_window(span.start_ns, end)) is not None
                ):
                    # Straight into the SDK span's attribute dict where it allows it (holding the span's
                    # lock, which every SDK write to the table takes first), else the public path.
                    bounded = writable_attributes(otel, len(identity) + QUIET_STAMP_COUNT)
                    if bounded is not None:
                        with otel._lock:  # type: ignore[attr-defined]
                            done = otel._end_time is not None or write_quiet_stamps(  # type: ignore[attr-defined]
                                bounded._dict, identity, quiet, end, self.period_ns, span.inflight_max
                            )
                    else:
                        done = self._stamp_quiet_public(span, quiet, end)
                if done:
                    if exception is not None:
                        self._record_failure(span, end, exception)
                else:
                    self._stamp(span, end, exception)
        except Exception as exc:
            self.health.failure(ERRORS, "stamp", "stamping an inference span failed", exc)
        otel.end(end_time=end)

    def _stamp_quiet_public(self, span: InferenceSpan, quiet: QuietWindow, end: int) -> bool:
        """Stamp a quiet window through `set_clean_attributes` (a span whose attribute table cannot take the
        stamps directly). False, stamping nothing, where the window needs `aggregate` after all."""
        stamps = quiet_stamps(quiet, end, self.period_ns)
        if stamps is None:
            return False
        stamps[A.INFLIGHT_MAX] = span.inflight_max
        set_clean_attributes(span.span, span.identity or {}, stamps)
        return True

    def _stamp(self, span: InferenceSpan, end: int, exception: BaseException | None) -> None:
        """Stamp the window the careful way (something happened in it, or some field was not read)."""
        otel = span.span
        target = span.target
        sampler = self.sampler
        device = span.device
        if device is not None and sampler is not None:
            static = span.identity or self._identity(device, target.mig_instance_id if target else None)
            window = sampler.window_stats(device.index, span.start_ns, end)
            attrs, events = aggregate(device, window[0], end, sampler.period_ns, window, static)
            attrs[A.INFLIGHT_MAX] = span.inflight_max
            set_clean_attributes(otel, attrs)
            for name, event_attrs, ts in events:
                otel.add_event(name, event_attrs, timestamp=ts)
        if exception is not None:
            self._record_failure(span, end, exception)

    def _record_failure(self, span: InferenceSpan, end: int, exception: BaseException) -> None:
        device, sampler = span.device, self.sampler
        lost = device is not None and sampler is not None and sampler.is_lost(device.index)
        record_failure(span.span, exception, classify_error(exception, gpu_lost=lost), end)

    def _identity(self, device: DeviceInfo, mig_instance_id: int | None) -> dict[str, Any]:
        """The GPU's identity stamps, built once per GPU (and MIG slice); callers copy, never change them."""
        key = (device.index, mig_instance_id)
        cached = self._identities.get(key)
        if cached is None or cached[0] is not device:  # a GPU rediscovered (after a fork) is stamped anew
            cached = self._identities[key] = (device, identity(device, self.source, mig_instance_id))
        return cached[1]

    def start_snapshot(self, target: Target, start_ns: int) -> dict[str, Any]:
        """Stamps for a span that names a GPU at its start: identity plus the sample at or before start."""
        device = self._device(target)
        if device is None or self.sampler is None:
            return {A.TELEMETRY_SOURCE: A.SOURCE_NONE}
        static = self._identity(device, target.mig_instance_id)
        samples = self.sampler.window(device.index, start_ns, start_ns)
        return aggregate(device, samples, start_ns, self.sampler.period_ns, static=static)[0]


class GpuSpanProcessor(SpanProcessor):
    """Stamps the start snapshot on any span that names a GPU when it starts (`gpu.uuid` or `gpu.index`),
    so auto-instrumented spans carry it too. Inference spans (already carrying a source) are left alone."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.enabled = True

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        attrs = span.attributes
        if not attrs or not self.enabled or A.TELEMETRY_SOURCE in attrs:
            return
        uuid = attrs.get(A.GPU_UUID)
        index = attrs.get(A.GPU_INDEX)
        if uuid is None and index is None:
            return
        try:
            if isinstance(uuid, str):
                target = self.collector.resolve_gpu(uuid)
            else:  # gpu.index is the NVML index (docs/contracts.md §1), not a CUDA ordinal
                sampler = self.collector._ready_sampler()
                known = sampler is not None and isinstance(index, int) and sampler.device(index) is not None
                target = Target(index) if known else None
            stamps = (
                self.collector.start_snapshot(target, span.start_time)
                if target
                else {A.TELEMETRY_SOURCE: A.SOURCE_NONE}
            )
            span.set_attributes(stamps)
        except Exception as exc:
            self.collector.health.failure(ERRORS, "span_processor", "stamping a span at start failed", exc)

    def on_end(self, span: Any) -> None:
        """Nothing: an ended span is read-only."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing buffered."""
        return True
