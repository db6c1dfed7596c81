"""Inference spans: open when a request is accepted for a GPU, stamp the window's telemetry before ending."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gpu_rca.collector._health import Health
from gpu_rca.schemas import attributes as A


class SpanOwner(Protocol):
    """What an inference span needs of the collector that opened it. `Collector` is the one; declaring it
    here keeps the import one way (the collector imports its spans, never the reverse)."""

    health: Health
    clock: Callable[[], int]

    def start_inference_span(
        self,
        name: str = ...,
        *,
        gpu: Any = ...,
        attributes: Mapping[str, Any] | None = ...,
        start_ns: int | None = ...,
        kind: SpanKind = ...,
        context: Any = ...,
    ) -> InferenceSpan: ...

    def _finish(self, span: InferenceSpan, end_ns: int | None, exception: BaseException | None) -> None: ...


class InferenceSpan:
    """One request's inference span. Set workload attributes on it; call `gpu_work_started()` when GPU work begins.

    Everything else an OTel span offers is reachable through it (`.span`, or attribute access).
    """

    __slots__ = ("_ended", "collector", "device", "identity", "inflight_max", "ring", "span", "start_ns", "target")

    def __init__(
        self,
        collector: SpanOwner,
        span: Span,
        start_ns: int,
        target: Any,
        device: Any = None,
        identity: dict[str, Any] | None = None,
        ring: Any = None,
    ) -> None:
        self.collector = collector
        self.span = span
        self.start_ns = start_ns
        self.target = target
        #: the GPU's DeviceInfo when the span has telemetry (resolved once, at start)
        self.device = device
        #: the GPU's identity stamps (shared, never changed), resolved with the device
        self.identity = identity
        #: the GPU's sample ring (the sampler's `Ring`), resolved with the device
        self.ring = ring
        self.inflight_max = 1
        self._ended = False

    def set_attribute(self, key: str, value: Any) -> None:
        """Set a workload attribute (`ddcolor.input_size`, `image.width`, …)."""
        self.span.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes."""
        self.span.set_attributes(attributes)

    def gpu_work_started(self, ts_ns: int | None = None) -> None:
        """Mark when GPU work begins: `inference.queue_ms` is the time since the request was accepted."""
        try:
            now = self.collector.clock() if ts_ns is None else int(ts_ns)
            self.span.set_attribute(A.QUEUE_MS, (now - self.start_ns) / 1e6)
        except Exception as exc:
            self.collector.health.failure("errors", "queue_ms", "setting inference.queue_ms failed", exc)

    def end(self, end_ns: int | None = None, exception: BaseException | None = None) -> None:
        """Stamp the window's telemetry (and the failure, if any), then end the span. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self.collector._finish(self, end_ns, exception)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.span, name)


class InferenceSpanScope:
    """What `inference_span(...)` returns: a context manager, and a decorator of sync and async functions."""

    def __init__(
        self,
        collector: Callable[[], SpanOwner],
        name: str,
        gpu: Any,
        attributes: Mapping[str, Any] | None,
        kind: SpanKind,
    ) -> None:
        self._collector = collector
        self._name = name
        self._gpu = gpu
        self._attributes = attributes
        self._kind = kind
        self._active: list[tuple[InferenceSpan, object]] = []

    def _open(self) -> tuple[InferenceSpan, object]:
        # Resolved per call: a function decorated at import time uses whatever configure() set up later.
        span = self._collector().start_inference_span(
            self._name, gpu=self._gpu, attributes=self._attributes, kind=self._kind
        )
        token = otel_context.attach(trace.set_span_in_context(span.span))
        return span, token

    @staticmethod
    def _close(span: InferenceSpan, token: object, exc: BaseException | None) -> None:
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        finally:
            span.end(exception=exc)

    def __enter__(self) -> InferenceSpan:
        span, token = self._open()
        self._active.append((span, token))
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span, token = self._active.pop()
        self._close(span, token, exc)
        # Returning None: the caller's exception propagates unchanged.

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                span, token = self._open()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    self._close(span, token, exc)
                    raise
                self._close(span, token, None)
                return result

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            span, token = self._open()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._close(span, token, exc)
                raise
            self._close(span, token, None)
            return result

        return wrapper


def writable_attributes(span: Span, adding: int) -> BoundedAttributes | None:
    """The SDK span's own attribute table when `adding` attributes whose values are already valid OTel
    values may be written straight into its dict, holding `span._lock` (every SDK write to the table takes
    it first): an SDK span, no value-length limit, room for them. None otherwise: take the public path."""
    bounded = getattr(span, "_attributes", None)
    if (
        type(bounded) is BoundedAttributes
        and type(bounded._dict) is dict
        and not bounded._immutable
        and bounded.max_value_len is None
        and (bounded.maxlen is None or len(bounded._dict) + adding <= bounded.maxlen)
    ):
        return bounded
    return None


def set_clean_attributes(span: Span, attributes: dict[str, Any], more: dict[str, Any] | None = None) -> None:
    """Set attributes whose values are already valid OTel values (str/bool/int/float, tuples of them):
    `attributes`, then `more` (which wins where both name a key).

    The SDK re-validates every value on `set_attributes`, which made validation the largest cost of a
    stamp (about 25 attributes per span). The stamps are built valid, so on the SDK span this writes them
    under the same locks the SDK uses (`writable_attributes`); any other span, a value-length limit or a
    full attribute table takes the public path.
    """
    bounded = writable_attributes(span, len(attributes) + len(more or ()))
    if bounded is not None:
        with span._lock:  # type: ignore[attr-defined]
            if span._end_time is None:  # type: ignore[attr-defined]
                with bounded._lock:
                    bounded._dict.update(attributes)
                    if more:
                        bounded._dict.update(more)
                return
    span.set_attributes(attributes if not more else {**attributes, **more})


def record_failure(span: Span, exc: BaseException, error_type: str, timestamp_ns: int | None = None) -> None:
    """`error.type`, the exception event (at `timestamp_ns`, the collector's clock) and status ERROR."""
    span.set_attribute(A.ERROR_TYPE, error_type)
    span.record_exception(exc, timestamp=timestamp_ns)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:512]))


__all__ = ["InferenceSpan", "InferenceSpanScope", "record_failure", "set_clean_attributes", "writable_attributes"]
