"""Prometheus data -> metric samples: `query_range` answers (files, or the pull) and exposition text.

Every metric name is mapped to its canonical dcgm-exporter name with its unit factor; the GPU is named by
its UUID label, else found later by PCI bus id or index on its host. NaN and ±Inf are counted, never stored.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_rca.correlate.readers.common import FileCounts, IngestOptions
from gpu_rca.correlate.readers.opening import Opened, json_documents
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.records import GpuRecord, MetricSample, PodRecord
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.errors import InputError
from gpu_rca.schemas.pci import normalize_pci_bus_id

SKIP_NON_FINITE = "NaN/Inf samples"
SKIP_UNKNOWN_METRIC = "samples of metrics gpu-rca does not use"
SKIP_NO_GPU = "samples naming no GPU (no UUID, PCI bus id or index label)"
BATCH_SAMPLES = 100_000
_DEVICE_INDEX = re.compile(r"^(?:nvidia)?(\d+)$")


@dataclass
class SeriesSamples:
    """Samples and GPU inventory records read from Prometheus series, and what was skipped (by reason)."""

    samples: list[MetricSample] = field(default_factory=list)
    gpus: list[GpuRecord] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    #: Which pod held which GPU, from dcgm-exporter's Kubernetes labels.
    pods: list[PodRecord] = field(default_factory=list)


@dataclass(frozen=True)
class _Gpu:
    uuid: str | None
    host: str | None
    pci_bus_id: str | None
    index: int | None
    name: str | None
    #: (namespace, pod, container) of the pod holding the GPU, when the series names one.
    pod: tuple[str, str, str] | None = None


def _first(labels: Mapping[str, str], names: Iterable[str]) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def _gpu_of(labels: Mapping[str, str]) -> _Gpu:
    host = _first(labels, m.HOST_LABELS)
    if host is not None and labels.get("instance") == host:
        host = host.rsplit(":", 1)[0] if re.search(r":\d+$", host) else host  # `instance` is host:port
    pci = labels.get(m.LABEL_PCI_BUS_ID)
    try:
        pci = normalize_pci_bus_id(pci) if pci else None
    except ValueError:
        pci = None
    index_text = labels.get(m.LABEL_GPU) or labels.get(m.LABEL_DEVICE) or ""
    match = _DEVICE_INDEX.match(index_text)
    return _Gpu(
        _first(labels, m.UUID_LABELS),
        host,
        pci,
        int(match[1]) if match else None,
        labels.get(m.LABEL_MODEL_NAME) or None,
        _pod_of(labels),
    )


def _pod_of(labels: Mapping[str, str]) -> tuple[str, str, str] | None:
    """The pod dcgm-exporter says holds the GPU. Scraped by a Prometheus that keeps the target's own `pod`
    label, dcgm-exporter's are renamed `exported_pod`, `exported_namespace`, `exported_container`."""
    if labels.get("exported_" + m.LABEL_POD):
        prefix = "exported_"
    elif labels.get(m.LABEL_POD):
        prefix = ""
    else:
        return None
    return (
        labels.get(prefix + m.LABEL_NAMESPACE, ""),
        labels[prefix + m.LABEL_POD],
        labels.get(prefix + m.LABEL_CONTAINER, ""),
    )


class SeriesConverter:
    """Turns (labels, timestamp, value) into samples, remembering each GPU once (Prometheus series and OTLP
    metric data points alike)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.out = SeriesSamples()
        self._gpus: dict[str, GpuRecord] = {}
        self._pods: dict[tuple[str, str, str, str], list[Any]] = {}
        self._label_cache: dict[tuple[tuple[str, str], ...], tuple[str, float, _Gpu] | str] = {}

    def resolve(self, name: str, labels: Mapping[str, str]) -> tuple[str, float, _Gpu] | str:
        """(canonical metric, factor, GPU) for a series, or the reason it is skipped."""
        key = (("__name__", name), *sorted(labels.items()))
        cached = self._label_cache.get(key)
        if cached is not None:
            return cached
        canonical = m.canonical_metric(name)
        if canonical is None:
            result: tuple[str, float, _Gpu] | str = SKIP_UNKNOWN_METRIC
        else:
            gpu = _gpu_of(labels)
            if gpu.uuid is None and gpu.pci_bus_id is None and gpu.index is None:
                result = SKIP_NO_GPU
            else:
                result = (canonical[0], canonical[1], gpu)
                if gpu.uuid is not None and gpu.uuid not in self._gpus:
                    self._gpus[gpu.uuid] = GpuRecord(
                        gpu.uuid,
                        host=gpu.host,
                        gpu_index=gpu.index,
                        pci_bus_id=gpu.pci_bus_id,
                        name=gpu.name,
                        host_source="metric",
                    )
        self._label_cache[key] = result
        return result

    def add(self, resolved: tuple[str, float, _Gpu] | str, ts_ns: int, value: float) -> None:
        if isinstance(resolved, str):
            self.out.skipped[resolved] += 1
            return
        if not math.isfinite(value):
            self.out.skipped[SKIP_NON_FINITE] += 1
            return
        metric, factor, gpu = resolved
        if gpu.pod is not None and gpu.uuid is not None:
            seen = self._pods.get((gpu.uuid, *gpu.pod))
            if seen is None:
                self._pods[(gpu.uuid, *gpu.pod)] = [gpu.host, ts_ns, ts_ns]
            else:
                seen[1], seen[2] = min(seen[1], ts_ns), max(seen[2], ts_ns)
        self.out.samples.append(
            MetricSample(ts_ns, metric, value * factor, gpu.uuid, gpu.host, gpu.pci_bus_id, gpu.index, self.source)
        )

    def result(self) -> SeriesSamples:
        self.out.gpus = list(self._gpus.values())
        self.out.pods = [PodRecord(*key, *seen) for key, seen in self._pods.items()]
        return self.out


def samples_from_series(series: Any, *, source: str = "prometheus") -> SeriesSamples:
    """Samples from a `query_range`/`query` answer, its `data`, or its `result` list.

    The list is what `prometheus_api_client.PrometheusConnect.custom_query_range` returns: dicts with
    `metric` (labels, `__name__` included) and `values` ([[unix seconds, "value"], …]) or `value`.
    """
    if isinstance(series, Mapping):
        if series.get("status") not in (None, "success"):
            raise InputError(f"Prometheus answered {series.get('status')!r}: {series.get('error', 'no error text')}")
        data = series.get("data", series)
        if not isinstance(data, Mapping) or not isinstance(data.get("result"), list):
            raise InputError("not a Prometheus query answer: no data.result list")
        if data.get("resultType") not in (None, "matrix", "vector"):
            raise InputError(f"Prometheus resultType {data.get('resultType')!r} holds no series")
        series = data["result"]
    converter = SeriesConverter(source)
    for position, item in enumerate(series):
        labels = item.get("metric") if isinstance(item, Mapping) else None
        if not isinstance(labels, Mapping):
            raise InputError(f"series {position}: no `metric` labels")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise InputError(f"series {position}: label names and values must be strings")
        name = labels.get("__name__")
        if not name:
            converter.out.skipped["series without __name__"] += 1  # cannot be mapped to a metric
            continue
        values = item.get("values")
        if values is None and item.get("value") is not None:
            values = [item["value"]]
        if not isinstance(values, list):
            raise InputError(f"series {position} ({name}): no `values`")
        resolved = converter.resolve(name, labels)
        for point in values:
            try:
                ts_s, text = point
                ts_ns, value = _ts_ns(float(ts_s)), float(text)
            except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an infinite timestamp
                raise InputError(f"series {position} ({name}): bad point {point!r}"[:200]) from exc
            converter.add(resolved, ts_ns, value)
    return converter.result()


def _ts_ns(seconds: float) -> int:
    # Prometheus timestamps are milliseconds; rounding there keeps float noise out of the key.
    return round(seconds * 1000) * 1_000_000


def _store(store: Store, counts: FileCounts, batch: SeriesSamples) -> None:
    counts.add(store.ingest_metric_samples(batch.samples, batch.gpus, batch.pods))
    counts.skipped.update(batch.skipped)


def read_query_range(opened: Opened, store: Store, options: IngestOptions) -> FileCounts:
    """Store every `query_range` answer in the file (one JSON document per line)."""
    counts = FileCounts(kind="samples")
    for number, document in json_documents(opened.stream, counts.warnings, strict=options.strict):
        try:
            batch = samples_from_series(document)
        except InputError as exc:
            raise InputError(f"line {number}: {exc}") from exc
        _store(store, counts, batch)
    return counts


def read_exposition(opened: Opened, store: Store, options: IngestOptions) -> FileCounts:
    """Store exposition-text samples; a sample without a timestamp takes the file's modification time."""
    from prometheus_client.parser import text_fd_to_metric_families

    counts = FileCounts(kind="samples")
    fallback_ns = _ts_ns(opened.path.stat().st_mtime)
    untimed = 0
    converter = SeriesConverter("prometheus-text")
    text = io.TextIOWrapper(opened.stream, encoding="utf-8", newline="")
    try:
        for family in text_fd_to_metric_families(text):
            for sample in family.samples:
                if sample.timestamp is None:
                    untimed += 1
                ts_ns = fallback_ns if sample.timestamp is None else _ts_ns(float(sample.timestamp))
                name = sample.name
                if family.type == "counter" and m.canonical_metric(name) is None:
                    # The parser appends `_total` to a counter written without it, as dcgm-exporter writes
                    # DCGM_FI_DEV_ECC_DBE_VOL_TOTAL and 1.x wrote dcgm_power_violation: read the written name.
                    name = family.name
                converter.add(converter.resolve(name, sample.labels), ts_ns, float(sample.value))
                if len(converter.out.samples) >= BATCH_SAMPLES:
                    _store(store, counts, converter.result())
                    converter = SeriesConverter("prometheus-text")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid Prometheus exposition text ({exc})") from exc
    finally:
        text.detach()
    _store(store, counts, converter.result())
    if untimed:
        counts.notes.append(f"{untimed} samples carried no timestamp: stamped with the file's modification time")
    return counts


__all__ = [
    "SKIP_NON_FINITE",
    "SKIP_NO_GPU",
    "SKIP_UNKNOWN_METRIC",
    "SeriesConverter",
    "SeriesSamples",
    "read_exposition",
    "read_query_range",
    "samples_from_series",
]
