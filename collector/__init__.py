"""gpu-rca collector: GPU telemetry on every inference span (see docs/collector.md).

Importing it starts nothing: no NVML call, no thread. `configure()` (or a `Collector` of your own) does.
"""

from __future__ import annotations

from collector._advisor import AdmissionAdvisor, Advice
from collector._collector import Collector, GpuSpanProcessor, telemetry_source
from collector._errors import classify as classify_error
from collector._gpu import GpuResolver, Target
from collector._health import Health
from collector._logs import OtlpLogSink, install_patcher, trace_patcher
from collector._nvml import DeviceInfo, Sample
from collector._sampler import Ring, Sampler, SamplerEvent
from collector._setup import (
    CountingSpanExporter,
    build_resource,
    configure,
    default_collector,
    inference_span,
    shutdown,
)
from collector._spans import InferenceSpan, InferenceSpanScope

#: The exporter's names, imported on first use (prometheus_client is not needed to stamp spans).
_EXPORTER_NAMES = ("DcgmCollector", "MetricsSource", "exposition", "registry_for", "serve_metrics")


def __getattr__(name: str) -> object:
    if name in _EXPORTER_NAMES:
        from collector import _exporter

        return getattr(_exporter, {"MetricsSource": "Source", "serve_metrics": "serve"}.get(name, name))
    raise AttributeError(f"module 'collector' has no attribute {name!r}")


__all__ = [
    "AdmissionAdvisor",
    "Advice",
    "Collector",
    "CountingSpanExporter",
    "DcgmCollector",
    "DeviceInfo",
    "GpuResolver",
    "GpuSpanProcessor",
    "Health",
    "InferenceSpan",
    "InferenceSpanScope",
    "MetricsSource",
    "OtlpLogSink",
    "Ring",
    "Sample",
    "Sampler",
    "SamplerEvent",
    "Target",
    "build_resource",
    "classify_error",
    "configure",
    "default_collector",
    "exposition",
    "inference_span",
    "install_patcher",
    "registry_for",
    "serve_metrics",
    "shutdown",
    "telemetry_source",
    "trace_patcher",
]
