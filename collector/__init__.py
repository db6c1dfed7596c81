"""gpu-rca collector: GPU telemetry on every inference span (see docs/collector.md).

Importing it starts nothing: no NVML call, no thread. `configure()` (or a `Collector` of your own) does.
"""

from __future__ import annotations

from gpu_rca.collector._advisor import AdmissionAdvisor, Advice
from gpu_rca.collector._collector import Collector, GpuSpanProcessor, telemetry_source
from gpu_rca.collector._errors import classify_error
from gpu_rca.collector._gpu import GpuResolver, Target
from gpu_rca.collector._health import Health
from gpu_rca.collector._logs import OtlpLogSink, install_patcher, trace_patcher
from gpu_rca.collector._nvml import DeviceInfo, Sample
from gpu_rca.collector._nvml_source import NvmlSource
from gpu_rca.collector._ring import Ring
from gpu_rca.collector._sampler import Sampler, SamplerEvent
from gpu_rca.collector._setup import (
    CountingSpanExporter,
    build_resource,
    configure,
    default_collector,
    inference_span,
    shutdown,
)
from gpu_rca.collector._spans import InferenceSpan, InferenceSpanScope

#: The exporter's names, imported on first use (prometheus_client is not needed to stamp spans).
_EXPORTER_NAMES = ("DcgmCollector", "MetricsSource", "exposition", "registry_for", "serve_metrics")


def __getattr__(name: str) -> object:
    if name in _EXPORTER_NAMES:
        from gpu_rca.collector import _exporter

        return getattr(_exporter, name)
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
    "NvmlSource",
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
