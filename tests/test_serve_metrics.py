"""POST /v1/metrics on a real `gpu-rca serve`, fed by the real OpenTelemetry SDK's OTLP/HTTP metric exporter.

GPU metrics (dcgm-exporter names, or OTel `hw.*` names) become samples in `metric_samples`, in the canonical
metric's unit; every other data point is acknowledged and counted, so an SDK pointed at serve logs nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.otlp_json import message_to_json
from tests.support import REPO

UUID = "GPU-0a1b2c3d-1111-2222-3333-444455556666"
HOST = "node-a"
GIB = 1024**3


def _gauge(
    value: float, attributes: dict[str, str], *more: tuple[float, dict[str, str]]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, attrs) for v, attrs in ((value, attributes), *more)]

    return callback


def _record(provider: MeterProvider) -> None:
    """What an inference service might export: dcgm and hw.* GPU gauges, and its own request metrics."""
    meter = provider.get_meter("test")
    dcgm = {m.LABEL_UUID: UUID, m.LABEL_HOSTNAME: HOST, m.LABEL_GPU: "0"}
    hw = {m.HW_ID: UUID, m.HW_TYPE: "gpu"}
    meter.create_observable_gauge(m.GPU_TEMP, [_gauge(71, dcgm)])  # the SDK sends it lowercased
    meter.create_observable_up_down_counter("hw.gpu.memory.usage", [_gauge(3 * GIB, hw)], unit="By")
    meter.create_observable_up_down_counter("hw.gpu.memory.limit", [_gauge(24 * GIB, hw)], unit="By")
    utilization = _gauge(0.25, {**hw, m.HW_GPU_TASK: "general"}, (0.5, {**hw, m.HW_GPU_TASK: "encoder"}))
    meter.create_observable_gauge("hw.gpu.utilization", [utilization], unit="1")
    power = _gauge(212.5, hw, (40.0, {m.HW_ID: "psu0", m.HW_TYPE: "power_supply"}))
    meter.create_observable_gauge("hw.power", [power], unit="W")
    meter.create_counter("http.server.request.count").add(3, {"http.route": "/colorize"})
    meter.create_histogram("http.server.request.duration", unit="s").record(0.42)


def _stored(db: Path) -> dict[str, tuple[float, str, str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT metric, value, gpu_uuid, host, source FROM metric_samples").fetchall()
    return {metric: (value, uuid, host, source) for metric, value, uuid, host, source in rows}


def _serve_counters(process: ServeProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{process.url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServeProcess, Path]]:
    db = tmp_path / "store.duckdb"
    with ServeProcess(db) as process:
        yield process, db


def test_sdk_metrics_store_gpu_samples_and_acknowledge_the_rest(
    served: tuple[ServeProcess, Path], caplog: pytest.LogCaptureFixture
) -> None:
    process, db = served
    exporter = OTLPMetricExporter(endpoint=f"{process.url}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({a.HOST_NAME: HOST}))
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        _record(provider)
        provider.shutdown()  # collects and exports once more, then stops
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []

    counters = _serve_counters(process)
    assert counters[(m.SERVE_METRIC_POINTS_STORED, ())] == 5
    assert counters[(m.SERVE_REQUESTS, (("code", "200"), ("route", "/v1/metrics")))] >= 1
    # The encoder's utilization, the power supply's power, the request counter and histogram.
    assert counters[(m.SERVE_METRIC_POINTS_IGNORED, (("reason", "not_gpu_metric"),))] == 4
    process.stop()

    stored = _stored(db)
    assert stored == {
        m.GPU_TEMP: (71.0, UUID, HOST, "otlp"),
        m.FB_USED: (3 * 1024.0, UUID, HOST, "otlp"),  # bytes -> MiB
        m.FB_TOTAL: (24 * 1024.0, UUID, HOST, "otlp"),
        m.GPU_UTIL: (25.0, UUID, HOST, "otlp"),  # fraction -> %
        m.POWER_USAGE: (212.5, UUID, HOST, "otlp"),
    }


def _request(provider_setup: Callable[[Meter], object]) -> bytes:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({a.HOST_NAME: HOST}))
    provider_setup(provider.get_meter("test"))
    data = reader.get_metrics_data()
    assert data is not None
    provider.shutdown()
    return encode_metrics(data).SerializeToString()


def test_otlp_json_metrics_are_stored_too(served: tuple[ServeProcess, Path]) -> None:
    process, db = served
    body = _request(
        lambda meter: meter.create_observable_gauge(
            "hw.temperature", [_gauge(83, {m.HW_ID: UUID, m.HW_TYPE: "gpu"})], unit="Cel"
        )
    )
    response = httpx.post(
        f"{process.url}/v1/metrics",
        content=message_to_json(ExportMetricsServiceRequest.FromString(body)),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {}
    process.stop()
    assert _stored(db) == {m.GPU_TEMP: (83.0, UUID, HOST, "otlp")}


def test_a_gpu_sample_naming_no_known_gpu_is_a_partial_success(served: tuple[ServeProcess, Path]) -> None:
    process, db = served
    # An index on a host the store has never seen: a GPU metric, but no GPU to put it on.
    body = _request(
        lambda meter: meter.create_observable_gauge(m.GPU_UTIL, [_gauge(90, {m.LABEL_GPU: "3", "Hostname": "other"})])
    )
    response = httpx.post(
        f"{process.url}/v1/metrics", content=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30
    )
    assert response.status_code == 200
    partial = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_data_points == 1
    assert "match no known GPU" in partial.error_message
    assert _serve_counters(process)[(m.SERVE_METRIC_POINTS_REJECTED, ())] == 1
    process.stop()
    assert _stored(db) == {}


def test_a_body_that_is_not_a_metrics_request_is_a_400(served: tuple[ServeProcess, Path]) -> None:
    process, db = served
    response = httpx.post(
        f"{process.url}/v1/metrics",
        content=b"\xff\x00 not protobuf",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 400
    process.stop()
    assert _stored(db) == {}


@pytest.mark.parametrize(
    ("name", "attributes", "expected"),
    [
        ("hw.errors", {m.HW_TYPE: "gpu", m.HW_ERROR_TYPE: "corrected"}, (m.ECC_SBE_VOL_TOTAL, 1.0)),
        ("hw.errors", {m.HW_TYPE: "gpu", m.HW_ERROR_TYPE: "uncorrected"}, (m.ECC_DBE_VOL_TOTAL, 1.0)),
        ("hw.errors", {m.HW_TYPE: "disk_controller", m.HW_ERROR_TYPE: "uncorrected"}, None),
        ("hw.energy", {m.HW_TYPE: "gpu"}, (m.TOTAL_ENERGY_CONSUMPTION, 1000.0)),  # J -> mJ
        ("hw.temperature", {m.HW_TYPE: "gpu"}, (m.GPU_TEMP, 1.0)),
        ("hw.temperature", {m.HW_TYPE: "temperature"}, None),  # a sensor of unknown parent
        ("hw.gpu.utilization", {}, (m.GPU_UTIL, 100.0)),  # hw.gpu.task is only recommended
        ("hw.gpu.utilization", {m.HW_GPU_TASK: "decoder"}, None),
        ("hw.gpu.io", {"network.io.direction": "receive"}, None),  # no canonical metric holds it
    ],
)
def test_hw_names_map_to_canonical_metrics_only_where_they_describe_the_same_reading(
    name: str, attributes: dict[str, str], expected: tuple[str, float] | None
) -> None:
    assert m.hw_canonical(name, attributes) == expected


def test_the_collector_doc_lists_the_hw_mapping_serve_applies() -> None:
    doc = (REPO / "docs" / "collector.md").read_text()
    section = doc.split("## `gpu.*` and OTel's `hw.*` semantic conventions\n", 1)[1].split("\n## ", 1)[0]
    documented = {
        (match[1], match[2])
        for match in re.finditer(r"^\|[^|]*\| `(hw\.[\w.]+)`[^|]*\| `(DCGM_FI_\w+)`", section, flags=re.MULTILINE)
    }
    assert documented == {(hw.name, hw.canonical) for hw in m.HW_METRICS}
