"""The admission advisor: its fit, what it learns from real stamped spans, and its advice on live GPU state."""

from __future__ import annotations

import math
import re
import subprocess

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca import collector, lab
from gpu_rca.collector._fit import OnlineFit, upper_quantile
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as M
from tests.support import require_binary

START_NS = 1_772_445_600_000_000_000
GIB = 1024**3
PID = 4242
MODEL = "ddcolor_paper"
BYTES_PER_PIXEL = 7200.0  # what the spans below report: a request's peak is this times its pixels


# --- the fit -------------------------------------------------------------------------------------


def test_fit_recovers_a_line_and_adds_the_upper_quantile_of_residuals() -> None:
    fit = OnlineFit(capacity=64, quantile=0.9)
    assert fit.line() is None
    for i in range(10):
        fit.add(i, 3.0 + 2.0 * i + (1.0 if i == 9 else 0.0))  # one point above the line
    line = fit.line()
    assert line is not None and line.points == 10
    residuals = [3.0 + 2.0 * i + (1.0 if i == 9 else 0.0) - (line.intercept + line.slope * i) for i in range(10)]
    assert line.margin == pytest.approx(upper_quantile(residuals, 0.9))
    assert line.predict(20) == pytest.approx(line.intercept + line.slope * 20 + line.margin)
    assert line.predict(9) >= 3.0 + 2.0 * 9  # an upper estimate covers the points it was fitted on (90 %)


def test_fit_needs_two_sizes_never_slopes_down_and_forgets_old_points() -> None:
    fit = OnlineFit(capacity=4)
    fit.add(5, 1.0)
    fit.add(5, 2.0)
    assert fit.line() is None  # one x value: no slope
    for x, y in [(1, 10.0), (2, 9.0), (3, 8.0), (4, 7.0)]:
        fit.add(x, y)
    line = fit.line()
    assert fit.count == 4 and line is not None and line.slope == 0.0  # the (5, …) points were pushed out
    assert line.predict(100) >= 10.0
    with pytest.raises(ValueError, match="quantile"):
        OnlineFit(quantile=0.0)
    assert upper_quantile([], 0.5) == 0.0 and upper_quantile([3.0, 1.0, 2.0], 0.5) == 2.0


# --- the advisor on a real collector over a simulated GPU ----------------------------------------------


class Gpu:
    """A simulated L4 on a virtual clock, a real collector over it, and an advisor on that collector."""

    def __init__(self, **advisor_options: object) -> None:
        self.clock = lab.VirtualClock(START_NS)
        self.nvml = lab.simulated_nvml([{"host": "node-a", "gpus": 1, "model": "L4"}], clock=self.clock.now_ns)
        self.device = self.nvml.devices[0]
        self.device.set_process(PID, "python3", int(1.5 * GIB))  # CUDA context and weights
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.collector = collector.Collector(
            nvml=self.nvml,
            clock=self.clock.now_ns,
            tracer_provider=provider,
            sample_hz=10,
            background=False,
            cuda_visible_devices=None,
            pid=PID,
        )
        self.collector.start()
        self.advisor = collector.AdmissionAdvisor(self.collector, models=[MODEL], **advisor_options)
        self.tick(0.1)

    def tick(self, seconds: float) -> None:
        self.clock.advance(int(seconds * 1e9))
        self.collector.sample_once()

    def request(self, size: int, seconds: float, *, peak: bool = True, error: BaseException | None = None) -> None:
        """One request alone on the GPU: its memory shows in NVML while it runs."""
        span = self.collector.start_inference_span(
            "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: size, A.DDCOLOR_MODEL: MODEL}
        )
        span.gpu_work_started()
        need = int(BYTES_PER_PIXEL * size * size)
        self.device.set_process(PID, "python3", int(1.5 * GIB) + need)
        self.device.load(1.0)
        self.tick(seconds)
        self.device.load(0.0)
        if peak and error is None:
            span.set_attribute(A.INFERENCE_MEMORY_PEAK, need)
        span.end(exception=error)
        self.device.set_process(PID, "python3", int(1.5 * GIB))
        self.tick(0.1)

    def warm_up(self, sizes: tuple[int, ...] = (512, 768, 1024), **kwargs: object) -> None:
        for _ in range(3):
            for size in sizes:
                self.request(size, 0.2 + size * size * 1e-6, **kwargs)


def test_cold_start_uses_the_conservative_defaults() -> None:
    gpu = Gpu()
    advice = gpu.advisor.advise(0, MODEL, 1280)
    assert advice.accept and advice.gpu_uuid == gpu.device.uuid and advice.retry_after_s == 0
    assert gpu.advisor.fits() == []
    # 8 KiB per pixel by default: 1280 needs 12.5 GiB, so two of them do not fit a 22.5 GiB L4 together.
    assert "1280 needs ~12.5 GiB" in advice.reason
    span = gpu.collector.start_inference_span(
        "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: 1280, A.DDCOLOR_MODEL: MODEL}
    )
    second = gpu.advisor.advise(0, MODEL, 1280)
    span.end()
    assert not second.accept and second.max_input_size is not None and second.max_input_size < 1280


def test_it_learns_memory_and_time_per_model_and_gpu_type_from_stamped_spans() -> None:
    gpu = Gpu()
    gpu.warm_up()
    (fit,) = gpu.advisor.fits()
    assert (fit.model, fit.gpu_name) == (MODEL, "NVIDIA L4")
    assert fit.memory is not None and fit.memory.slope == pytest.approx(BYTES_PER_PIXEL, rel=1e-6)
    assert fit.memory.margin == pytest.approx(0.0, abs=1.0)
    assert fit.service_time is not None and fit.service_time.slope > 0
    # Time from the span's stamps: 0.2 s + 1 µs per pixel, on the sampler's 100 ms grid.
    assert fit.service_time.predict(1024 * 1024) == pytest.approx(0.2 + 1024 * 1024 * 1e-6, abs=0.15)


def test_without_the_peak_attribute_it_learns_an_upper_bound_from_the_process_memory_stamp() -> None:
    gpu = Gpu()
    gpu.advisor.advise(0, MODEL, 512)  # reads the process's idle footprint (its baseline)
    gpu.warm_up(peak=False)
    (fit,) = gpu.advisor.fits()
    assert fit.memory is not None
    for size in (512, 1024):
        assert fit.memory.predict(size * size) >= BYTES_PER_PIXEL * size * size


def test_advice_on_live_memory_names_the_largest_size_that_fits_and_why() -> None:
    gpu = Gpu(max_concurrency=3)
    gpu.warm_up()
    gpu.device.set_process(9999, "foreign-trainer", 12 * GIB)  # another process takes 12 GiB
    gpu.tick(0.1)
    advice = gpu.advisor.advise(0, MODEL, 1280)
    assert not advice.accept and advice.input_size == 1280
    total = gpu.device.profile.memory_total_bytes
    available = total * 0.95 - 12 * GIB - 1.5 * GIB
    expected = math.isqrt(int(available / BYTES_PER_PIXEL)) // 32 * 32
    assert advice.max_input_size == expected and expected % 32 == 0
    assert re.search(rf"GPU memory: 1280 needs ~11\.0 GiB, {available / GIB:.1f} GiB available", advice.reason)
    assert advice.reason.endswith(f"{expected} or less fits now")
    assert advice.retry_after_s == 5  # nothing of ours in flight: no estimate of when it frees
    assert gpu.advisor.advise(0, MODEL, expected).accept
    assert gpu.advisor.largest_input_size(0, MODEL) == expected


def test_requests_in_flight_hold_their_predicted_memory_and_set_retry_after() -> None:
    gpu = Gpu(max_concurrency=2)
    gpu.warm_up()
    first = gpu.collector.start_inference_span(
        "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: 1280, A.DDCOLOR_MODEL: MODEL}
    )
    second = gpu.collector.start_inference_span(
        "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: 1024, A.DDCOLOR_MODEL: MODEL}
    )
    advice = gpu.advisor.advise(0, MODEL, 1280)
    # Two may run at once: the new request shares the GPU with the largest one in flight, 11 GiB.
    available = gpu.device.profile.memory_total_bytes * 0.95 - 1.5 * GIB - BYTES_PER_PIXEL * 1280 * 1280
    assert not advice.accept and "2 in flight" in advice.reason
    assert advice.max_input_size == math.isqrt(int(available / BYTES_PER_PIXEL)) // 32 * 32
    assert advice.retry_after_s >= 1
    first.end()
    second.end()
    assert gpu.advisor.advise(0, MODEL, 1280).accept


def test_a_queue_longer_than_the_timeout_is_refused_on_gpu_time() -> None:
    gpu = Gpu(timeout_s=2.0, max_concurrency=1)  # one at a time: memory is never the limit
    gpu.warm_up()
    spans = [
        gpu.collector.start_inference_span(
            "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: 1024, A.DDCOLOR_MODEL: MODEL}
        )
        for _ in range(2)
    ]
    advice = gpu.advisor.advise(0, MODEL, 1024)
    assert not advice.accept and advice.reason.startswith("GPU time: 1024 would finish in ~")
    assert "of the 2 s timeout" in advice.reason and advice.retry_after_s >= 1
    for span in spans:
        span.end()


def test_oom_failures_are_counted_not_fitted_and_other_spans_are_ignored() -> None:
    gpu = Gpu()
    gpu.warm_up()
    oom = RuntimeError("CUDA out of memory. Tried to allocate 11.25 GiB.")
    gpu.request(1280, 0.3, error=oom)
    with gpu.collector.tracer.start_as_current_span("GET /healthz"):
        pass  # not an inference span
    gpu.collector.start_inference_span("ddcolor.inference", gpu=None, attributes={A.DDCOLOR_INPUT_SIZE: 512}).end()
    (fit,) = gpu.advisor.fits()
    assert fit.ooms_seen == 1 and fit.memory is not None and fit.memory.points == 9
    assert gpu.collector.health.snapshot().get(("errors", "advisor"), 0) == 0


def test_no_gpu_telemetry_means_admitted_without_advice() -> None:
    bare = collector.Collector(nvml=None, tracer_provider=TracerProvider())
    advice = collector.AdmissionAdvisor(bare).advise(0, MODEL, 2048)
    assert advice.accept and advice.max_input_size is None and "no GPU telemetry" in advice.reason


def test_bad_configuration_fails_fast() -> None:
    gpu = Gpu()
    with pytest.raises(ValueError, match="max_concurrency"):
        collector.AdmissionAdvisor(gpu.collector, max_concurrency=0)
    with pytest.raises(ValueError, match="min_input_size"):
        collector.AdmissionAdvisor(gpu.collector, min_input_size=1024, max_input_size=512)


def test_the_gauge_is_served_with_the_exporter_families() -> None:
    gpu = Gpu()
    gpu.warm_up()
    registry = collector.registry_for([collector.MetricsSource(gpu.collector.sampler, "node-a")])
    registry.register(gpu.advisor.prometheus_collector())
    text = collector.exposition(registry).decode()
    expected = gpu.advisor.largest_input_size(0, MODEL)
    assert f'{M.ADVISOR_MAX_INPUT_SIZE}{{UUID="{gpu.device.uuid}",model="{MODEL}"}} {expected}\n' in text
    assert f"# TYPE {M.ADVISOR_MAX_INPUT_SIZE} gauge" in text and "DCGM_FI_DEV_FB_USED{" in text
    gpu.device.set_process(9999, "foreign", 21 * GIB)  # nothing fits now: the gauge says 0
    gpu.tick(0.1)
    assert f'model="{MODEL}"}} 0\n' in collector.exposition(registry).decode()
    check = subprocess.run([require_binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert "advisor" not in check.stdout + check.stderr  # promtool's remarks are about dcgm-exporter's own names


def test_a_power_capped_gpu_is_slower_so_a_request_that_fitted_in_time_no_longer_does() -> None:
    gpu = Gpu(timeout_s=3.5, max_concurrency=1)  # memory is never the limit here: time is
    gpu.warm_up()
    ahead = gpu.collector.start_inference_span(
        "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: 1024, A.DDCOLOR_MODEL: MODEL}
    )
    assert gpu.advisor.advise(0, MODEL, 1024).accept  # ~1.25 s ahead + ~1.25 s within 2.8 s
    gpu.device.load(1.0)
    gpu.device.power_limit_w = 30.0  # the L4's limit cut from 72 W: sw_power_cap, SM clock down
    for _ in range(30):
        gpu.tick(0.1)
    sample = gpu.collector.sampler.latest(0)
    speed = sample.sm_clock_mhz / gpu.collector.sampler.device(0).max_sm_clock_mhz
    advice = gpu.advisor.advise(0, MODEL, 1024)
    assert not advice.accept and advice.reason.startswith("GPU time: 1024 would finish in ~")
    assert f"clocks at {speed:.0%} (sw_power_cap)" in advice.reason
    assert advice.max_input_size is not None and advice.max_input_size < 1024
    ahead.end()
