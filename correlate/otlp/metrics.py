"""OTLP metrics requests -> GPU metric samples, and the data points left out (counted by reason).

A data point is a GPU sample when its metric is one gpu-rca reads: a dcgm-exporter name or alias (what the
OTel Collector's prometheus receiver forwards from dcgm-exporter, labels as attributes), or an OTel hardware
semantic-conventions `hw.*` name (`schemas.metrics.HW_METRICS`). Its GPU is named, as for Prometheus series,
by a UUID label or by PCI bus id or index on its host; on OTel data `gpu.uuid`, an NVIDIA UUID in `hw.id`
and the resource's `host.name` name it too. Everything else (other metrics, histograms, summaries) is
acknowledged and counted, never stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_rca.correlate.otlp.decode import key_values
from gpu_rca.correlate.prometheus.files import SKIP_NO_GPU, SKIP_NON_FINITE, SKIP_UNKNOWN_METRIC, SeriesConverter
from gpu_rca.correlate.store.records import GpuRecord, MetricSample, PodRecord
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import metrics as m

SOURCE = "otlp"
#: Why a data point was not stored (the label of serve's ignored-points counter).
NOT_GPU_METRIC = "not_gpu_metric"
NO_GPU = "no_gpu"
NON_FINITE = "non_finite"
NO_VALUE = "no_value"
_REASONS = {SKIP_UNKNOWN_METRIC: NOT_GPU_METRIC, SKIP_NO_GPU: NO_GPU, SKIP_NON_FINITE: NON_FINITE}
#: DataPointFlags.FLAG_NO_RECORDED_VALUE: the point marks a gap, it holds no value.
_NO_RECORDED_VALUE = 1
#: OTel instrument names are case-insensitive (the Python SDK lowercases them): the known spellings by lowercase.
_KNOWN_NAMES = {name.lower(): name for name in (*m.METRICS_BY_NAME, *m.ALIASES_BY_NAME)}
#: Prefixes of an NVIDIA GPU or MIG UUID, the only `hw.id` values taken as a GPU UUID.
_UUID_PREFIXES = ("GPU-", "MIG-")


@dataclass
class MetricBatch:
    """The GPU samples of one request, the GPUs they name, and the data points not stored, by reason."""

    samples: list[MetricSample] = field(default_factory=list)
    gpus: list[GpuRecord] = field(default_factory=list)
    pods: list[PodRecord] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)

    @property
    def points(self) -> int:
        """Every data point of the request."""
        return len(self.samples) + sum(self.ignored.values())


def point_count(request: Any) -> int:
    """Data points in an ExportMetricsServiceRequest, of every metric type."""
    total = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                total += len(getattr(metric, kind).data_points) if kind else 0
    return total


def _labels(attributes: Mapping[str, Any]) -> dict[str, str]:
    """String labels for the Prometheus label lookups, with the OTel spellings of the GPU and host added."""
    labels = {key: str(value) for key, value in attributes.items() if isinstance(value, (str, int)) and value != ""}
    uuid = labels.get(a.GPU_UUID) or labels.get(m.HW_ID, "")
    if "gpu_uuid" not in labels and uuid.startswith(_UUID_PREFIXES):
        labels["gpu_uuid"] = uuid
    if a.HOST_NAME in labels and not any(labels.get(name) for name in m.HOST_LABELS):
        labels["host"] = labels[a.HOST_NAME]
    return labels


def metrics_from_request(request: Any) -> MetricBatch:
    """The GPU samples of an ExportMetricsServiceRequest; other data points are counted in `ignored`."""
    converter = SeriesConverter(SOURCE)
    batch = MetricBatch()
    for resource_metrics in request.resource_metrics:
        resource = key_values(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind not in ("gauge", "sum"):  # histograms and summaries hold no GPU reading gpu-rca uses
                    batch.ignored[NOT_GPU_METRIC] += len(getattr(metric, kind).data_points) if kind else 0
                    continue
                for point in getattr(metric, kind).data_points:
                    value_kind = point.WhichOneof("value")
                    if value_kind is None or point.flags & _NO_RECORDED_VALUE:
                        batch.ignored[NO_VALUE] += 1
                        continue
                    attributes = {**resource, **key_values(point.attributes)}
                    name, factor = _KNOWN_NAMES.get(metric.name.lower(), metric.name), 1.0
                    hw = m.hw_canonical(name, attributes)
                    if hw is not None:
                        name, factor = hw
                    resolved = converter.resolve(name, _labels(attributes))
                    converter.add(resolved, point.time_unix_nano, float(getattr(point, value_kind)) * factor)
    result = converter.result()
    batch.samples, batch.gpus, batch.pods = result.samples, result.gpus, result.pods
    for reason, count in result.skipped.items():
        batch.ignored[_REASONS.get(reason, reason)] += count
    return batch


__all__ = [
    "NON_FINITE",
    "NOT_GPU_METRIC",
    "NO_GPU",
    "NO_VALUE",
    "SOURCE",
    "MetricBatch",
    "metrics_from_request",
    "point_count",
]
