"""The collector's own sampler and spans, unchanged, read the simulated fleet."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca import lab
from gpu_rca.collector import Collector
from gpu_rca.schemas import attributes as A

NS = 1_000_000_000
GIB = 1024**3


def test_collector_stamps_spans_from_simulated_gpus():
    clock = lab.VirtualClock(1_767_225_600 * NS)
    nvml = lab.simulated_nvml([{"host": "node-a", "gpus": 2, "model": "L4"}], clock=clock.now_ns)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    collector = Collector(
        nvml=nvml,
        clock=clock.now_ns,
        tracer_provider=provider,
        sample_hz=2.0,
        background=False,
        cuda_visible_devices=None,
        pid=4242,
    )
    gpu = nvml.devices[1]
    gpu.set_process(4242, "python3", 3 * GIB)
    collector.sample_once(clock.now_ns())
    span = collector.start_inference_span(
        "ddcolor.inference", gpu=gpu.uuid, start_ns=clock.now_ns(), attributes={A.DDCOLOR_INPUT_SIZE: 512}
    )
    gpu.load(1.0)
    gpu.power_limit_w = 40.0
    for _ in range(6):
        clock.advance(NS // 2)
        if _ == 2:
            gpu.record_xid(clock.now_ns(), 13, "Graphics SM Warp Exception", 4242, "python3")
        collector.sample_once(clock.now_ns())
    span.end(end_ns=clock.now_ns(), exception=RuntimeError("CUDA error: an illegal memory access was encountered"))
    collector.shutdown()
    (finished,) = exporter.get_finished_spans()
    attrs = finished.attributes
    assert attrs[A.TELEMETRY_SOURCE] == A.SOURCE_SIMULATED
    assert (attrs[A.GPU_INDEX], attrs[A.GPU_UUID], attrs[A.GPU_NAME]) == (1, gpu.uuid, "NVIDIA L4")
    assert attrs[A.GPU_PCI_BUS_ID].endswith(":00.0") and attrs[A.GPU_PCI_BUS_ID].count(":") == 2  # dddd:bb:dd.f
    assert attrs[A.GPU_PCI_BUS_ID] == attrs[A.GPU_PCI_BUS_ID].lower() and len(attrs[A.GPU_PCI_BUS_ID]) == 12
    assert attrs[A.TELEMETRY_SAMPLES] == 7
    assert attrs[A.MEMORY_TOTAL] == 23034 * 1024 * 1024
    assert attrs[A.MEMORY_PROCESS_MAX] == 3 * GIB
    assert attrs[A.POWER_LIMIT] == 40.0 and attrs[A.POWER_MAX] <= 40.0
    assert "sw_power_cap" in attrs[A.THROTTLE_REASONS]
    assert attrs[A.CLOCK_SM_MAX] == 2040 and attrs[A.CLOCK_SM_MIN] < 2040
    assert attrs[A.UTILIZATION_MAX] > 80
    assert list(attrs[A.XID]) == [13]
    assert attrs[A.ERROR_TYPE] == A.ERROR_CUDA_ILLEGAL_ADDRESS
