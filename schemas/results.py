"""Result types of `analyze` and `explain` (docs/contracts.md §3): TypedDicts that are the JSON documents themselves."""

from __future__ import annotations

from typing import Literal, TypedDict

Confidence = Literal["high", "medium", "low"]
#: The confidence labels, strongest first.
CONFIDENCES: tuple[Confidence, ...] = ("high", "medium", "low")


class WindowResult(TypedDict):
    """The analysed window, RFC 3339 UTC."""

    start: str
    end: str


class SpanCounts(TypedDict):
    """Inference spans in the window (server and child spans are not counted)."""

    total: int
    failed: int
    slow: int  # failed spans that did not error: latency incidents or slower than --slow


class Driver(TypedDict):
    """An attribute value that concentrates a cause's failures (Elastic failed-transaction correlation)."""

    attribute: str
    value: str | int | float
    failure_share: float
    baseline_share: float
    lift: float | None
    p_value: float


class Evidence(TypedDict):
    """One checkable observation behind a cause: a metric, a stamp, a kernel event, a log or a count."""

    kind: str
    name: str
    gpu_uuid: str | None
    host: str | None
    value: float | int | str
    baseline: float | int | None
    unit: str | None
    start: str | None
    end: str | None


class CauseResult(TypedDict):
    """One ranked root cause."""

    cause: str
    score: float
    confidence: Confidence
    summary: str
    drivers: list[Driver]
    evidence: list[Evidence]
    failed_spans: int
    gpus: list[str]
    hosts: list[str]
    example_traces: list[str]


class AnalyzeResult(TypedDict):
    """The whole `analyze --json` document."""

    window: WindowResult
    spans: SpanCounts
    warnings: list[str]
    causes: list[CauseResult]


class SpanStory(TypedDict):
    """The request `explain` tells about: identity, outcome and every stamp it carries."""

    trace_id: str
    span_id: str
    name: str
    service: str | None
    host: str | None
    gpu_uuid: str | None
    start: str
    end: str
    duration_ms: float
    status: str
    error_type: str | None
    failed: bool
    slow: bool  # failed without an error: latency detection found it far slower than comparable requests
    stamps: dict[str, object]
    attributes: dict[str, object]


class MetricPoint(TypedDict):
    """One metric sample of the request's GPU near the request."""

    metric: str
    ts: str
    value: float


class LogLine(TypedDict):
    """A log record of the request's trace, or a kernel event of its GPU near it."""

    ts: str
    kind: str
    severity: str | None
    message: str


class LatencyPart(TypedDict):
    """One part of a request's latency against the median of the same part among comparable requests."""

    part: str
    ms: float
    baseline_ms: float
    factor: float
    change: str  # "grew", "unchanged" or "shrank" (by more than a factor 1.25 either way)


class RequestLatency(TypedDict):
    """How slow a completed request was against comparable requests before it, and which part grew."""

    duration_ms: float
    baseline_median_ms: float
    baseline_p99_ms: float
    factor: float
    comparable_requests: int
    baseline_start: str
    baseline_end: str
    grew: list[str]
    parts: list[LatencyPart]


class ExplainResult(TypedDict):
    """The whole `explain --json` document."""

    trace_id: str
    span: SpanStory
    latency: RequestLatency | None
    metrics: list[MetricPoint]
    logs: list[LogLine]
    cause: CauseResult | None
    warnings: list[str]


__all__ = [
    "CONFIDENCES",
    "AnalyzeResult",
    "CauseResult",
    "Confidence",
    "Driver",
    "Evidence",
    "ExplainResult",
    "LatencyPart",
    "LogLine",
    "MetricPoint",
    "RequestLatency",
    "SpanCounts",
    "SpanStory",
    "WindowResult",
]
