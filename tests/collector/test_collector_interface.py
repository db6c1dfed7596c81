"""The names the lab and the advisor build against (the collector ⇄ lab interface in docs/collector.md)."""

from __future__ import annotations

import datetime as dt

from loguru import logger
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from gpu_rca import lab
from gpu_rca.collector import Collector, classify_error
from gpu_rca.schemas import attributes as A
from tests.support.collector import START_NS, Sim, make_sim


def test_span_handle_sampler_inventory_and_flush(sim: Sim):
    sim.tick(3)
    gpu = sim.gpus[1]
    assert [d.uuid for d in sim.collector.sampler.devices] == [g.uuid for g in sim.gpus]
    assert sim.collector.sampler.latest(gpu.uuid) == sim.collector.sampler.latest(1) is not None
    assert sim.collector.sampler.latest("GPU-unknown") is None
    span = sim.collector.start_inference_span("inf", gpu=1, start_ns=sim.clock.now_ns())
    span.gpu_work_started(sim.clock.now_ns() + 2_000_000)
    assert span.span.is_recording()
    span.end(end_ns=sim.clock.now_ns() + 5_000_000, exception=RuntimeError("CUDA error: unspecified launch failure"))
    a = sim.spans()[0].attributes
    assert a[A.QUEUE_MS] == 2.0 and a[A.ERROR_TYPE] == "cuda_launch_failure"
    assert sim.collector.force_flush() is True
    assert classify_error(TimeoutError()) == A.ERROR_TIMEOUT


def test_source_override_and_logs_on_the_virtual_clock():
    clock = lab.VirtualClock(START_NS)
    exporter = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    sim = make_sim()
    collector = Collector(
        lab.simulated_nvml([{"host": "h", "gpus": 1, "model": "T4"}], clock=clock.now_ns),
        clock=clock.now_ns,
        tracer_provider=sim.provider,
        logger_provider=logs,
        background=False,
        source="simulated",
        host="h",
    )
    collector.start()
    collector.sample_once()
    assert collector.source == "simulated" and collector.host == "h"
    log = logger.patch(collector.patch_record)
    sink = log.add(collector.otlp_log_sink, format="{message}")
    try:
        with collector.inference_span("inf", gpu=0):
            log.info("inside")
    finally:
        log.remove(sink)
    (record,) = exporter.get_finished_logs()
    span = sim.spans()[-1]
    assert record.log_record.trace_id == span.context.trace_id
    assert record.log_record.timestamp == START_NS
    assert dt.datetime.fromtimestamp(record.log_record.timestamp / 1e9, tz=dt.UTC).year == 2026
