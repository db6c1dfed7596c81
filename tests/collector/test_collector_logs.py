"""loguru records inside an inference span carry its trace/span ids: enqueue=True sinks, serialize=True
files, and the opt-in OTLP log sink."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from gpu_rca.collector import OtlpLogSink, install_patcher
from tests.support.collector import Sim


@pytest.fixture
def loguru_sinks() -> Iterator[list[int]]:
    install_patcher()
    ids: list[int] = []
    yield ids
    for sink_id in ids:
        logger.remove(sink_id)


def test_enqueued_and_serialized_sinks_keep_trace_ids(sim: Sim, loguru_sinks: list[int], tmp_path: Path):
    seen: list[dict] = []
    path = tmp_path / "app.jsonl"
    loguru_sinks.append(logger.add(lambda m: seen.append(dict(m.record["extra"])), enqueue=True))
    loguru_sinks.append(logger.add(path, serialize=True, enqueue=True))
    logger.info("outside")
    with sim.collector.inference_span("inf", gpu=0):
        logger.info("inside")
    logger.complete()
    (span,) = sim.spans()
    trace_id = format(span.context.trace_id, "032x")
    span_id = format(span.context.span_id, "016x")
    assert seen == [{"trace_id": "", "span_id": ""}, {"trace_id": trace_id, "span_id": span_id}]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["record"]["message"], r["record"]["extra"]["trace_id"]) for r in lines] == [
        ("outside", ""),
        ("inside", trace_id),
    ]


def test_otlp_log_sink_exports_records_with_the_span_ids(sim: Sim, loguru_sinks: list[int]):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    loguru_sinks.append(logger.add(OtlpLogSink(provider), format="{message}", enqueue=True))
    with sim.collector.inference_span("inf", gpu=0):
        logger.bind(request_id="r-1").warning("slow image")
    logger.complete()
    (span,) = sim.spans()
    (record,) = exporter.get_finished_logs()
    assert record.log_record.body == "slow image"
    assert record.log_record.trace_id == span.context.trace_id
    assert record.log_record.span_id == span.context.span_id
    assert record.log_record.severity_text == "WARNING"
    assert record.log_record.attributes["request_id"] == "r-1"
    provider.shutdown()
