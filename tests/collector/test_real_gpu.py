"""The collector on real NVML and CUDA (marker `gpu`): skipped, with the reason, where no NVIDIA driver is.

Run on a machine with a GPU: `pytest -m gpu tests/collector/test_real_gpu.py`. The sampler reads every GPU
of the machine; spans stamped around real CUDA work agree with `nvidia-smi`; a provoked out-of-memory
error is classified from its real text.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pynvml
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca.collector import Collector, Sampler
from gpu_rca.schemas import attributes as A

pytestmark = pytest.mark.gpu


def _driver_missing() -> str | None:
    """Why the real-GPU tests cannot run here, or None when NVML initialises and sees a GPU."""
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound without libnvidia-ml, DriverNotLoaded without a driver
        return f"no NVIDIA driver: nvmlInit failed ({type(exc).__name__}: {exc})"
    try:
        if int(pynvml.nvmlDeviceGetCount()) == 0:
            return "NVML initialised but sees no GPU"
    finally:
        pynvml.nvmlShutdown()
    return None


_MISSING = _driver_missing()
if _MISSING is not None:
    pytestmark = [pytest.mark.gpu, pytest.mark.skip(reason=_MISSING)]


def _torch_cuda() -> Any:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    return torch


@pytest.fixture
def real() -> Iterator[tuple[Collector, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    collector = Collector(pynvml, tracer_provider=provider, sample_hz=20.0, cuda_visible_devices=None)
    assert collector.start()
    yield collector, exporter
    collector.shutdown()
    provider.shutdown()


def _smi(gpu: int, fields: str) -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        pytest.skip("nvidia-smi is not on PATH")
    out = subprocess.run(
        [smi, f"--id={gpu}", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [value.strip() for value in out.splitlines()[0].split(",")]


def test_the_sampler_reads_every_gpu_of_the_machine() -> None:
    sampler = Sampler(pynvml, sample_hz=50.0)
    assert sampler.start()
    try:
        time.sleep(1.0)
        count = int(pynvml.nvmlDeviceGetCount())
        assert [d.index for d in sampler.devices] == list(range(count))
        for device in sampler.devices:
            latest = sampler.latest(device.index)
            assert latest is not None, device
            assert latest.temperature_c is not None and 0 < latest.temperature_c < 120
            assert latest.memory_total_bytes is not None and latest.memory_total_bytes > 0
            assert device.uuid.startswith("GPU-")
    finally:
        sampler.stop()


def test_spans_around_real_cuda_work_agree_with_nvidia_smi(real: tuple[Collector, InMemorySpanExporter]) -> None:
    torch = _torch_cuda()
    collector, exporter = real
    a = torch.randn(4096, 4096, device="cuda:0")
    with collector.inference_span("matmul", gpu=0):
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    smi = _smi(collector.devices[0].index, "uuid,temperature.gpu,memory.total,clocks.max.sm")
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs[A.TELEMETRY_SOURCE] == A.SOURCE_NVML
    assert attrs[A.GPU_UUID] == smi[0]
    assert abs(int(attrs[A.TEMPERATURE_MAX]) - int(smi[1])) <= 10  # °C, read a moment apart
    assert int(attrs[A.MEMORY_TOTAL]) // 2**20 == pytest.approx(int(smi[2]), abs=2)  # MiB
    assert attrs[A.CLOCK_SM_MAX] == int(smi[3])
    assert attrs[A.UTILIZATION_MAX] > 0  # the matmul loop kept the GPU busy
    assert attrs[A.TELEMETRY_SAMPLES] >= 10


def test_a_provoked_out_of_memory_is_classified_from_its_real_text(
    real: tuple[Collector, InMemorySpanExporter],
) -> None:
    torch = _torch_cuda()
    collector, exporter = real
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(torch.OutOfMemoryError), collector.inference_span("oom", gpu=0):
        torch.empty(int(total * 2), dtype=torch.uint8, device="cuda:0")
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {})[A.ERROR_TYPE] == A.ERROR_CUDA_OOM
    assert "CUDA out of memory" in span.events[0].attributes["exception.message"]
