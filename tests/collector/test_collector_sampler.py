"""The sampler: windows, unsupported fields, NVML failures on one GPU, no library, the thread, fork."""

from __future__ import annotations

import collections
import itertools
import json
import os
import time

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca import lab
from gpu_rca.collector import Collector, Ring, Sampler
from gpu_rca.collector._nvml import DeviceInfo, Sample
from gpu_rca.collector._stamp import aggregate, identity, quiet_stamps, write_quiet_stamps
from gpu_rca.schemas import attributes as A
from tests.support.collector import FLEET, PERIOD_NS, Sim, make_sim


def _sample(ts: int) -> Sample:
    return Sample(ts, 40, 50.0, 72.0, 0, 2040, 6251, 10.0, 5.0, 1, 2, None, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (250, 450, [200, 300, 400]),  # last at or before start, then (start, end]
        (300, 300, [300]),  # a sample exactly at start belongs to the window
        (310, 390, [300]),  # shorter than one period
        (50, 150, [100]),  # nothing before start: the window begins inside the span
        (600, 900, [500]),  # nothing after start: only the last one (stale, if old)
    ],
)
def test_ring_window_is_contract_1s(start: int, end: int, expected: list[int]):
    ring = Ring(capacity=100)
    for ts in (100, 200, 300, 400, 500):
        ring.append(_sample(ts))
    assert [s.ts_ns for s in ring.window(start, end)] == expected


def test_ring_stays_bounded():
    ring = Ring(capacity=8)
    dropped = sum(ring.append(_sample(ts)) for ts in range(1000))
    assert len(ring.window(0, 10_000)) <= 10
    assert ring.latest().ts_ns == 999
    assert dropped >= 1000 - 10


def test_rejects_bad_rates():
    with pytest.raises(ValueError, match="sample_hz"):
        Sampler(pynvml, sample_hz=1000)
    with pytest.raises(ValueError, match="sample_hz"):
        Sampler(pynvml, sample_hz=0)


def test_at_100_hz_the_slow_fields_are_read_every_tenth_tick_and_carried_between():
    sim = make_sim(sample_hz=100.0)
    sim.gpus[0].load(0.6)
    sim.nvml.readings.clear()
    sim.tick(30)
    calls = collections.Counter(name for _, name, index, _ in sim.nvml.readings if index == 0)
    for fast in ("nvmlDeviceGetTemperature", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetMemoryInfo"):
        assert calls[fast] == 30, fast
    assert calls["nvmlDeviceGetCurrentClocksEventReasons"] == 30
    for slow in ("nvmlDeviceGetUtilizationRates", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetFieldValues"):
        assert calls[slow] == 3, slow
    assert calls["nvmlDeviceGetComputeRunningProcesses"] == 3
    assert calls["nvmlDeviceGetClockInfo"] == 30 + 3  # the SM clock every tick, the memory clock slow
    assert "nvmlDeviceGetTotalEccErrors" not in calls  # the counters come in the one field-values call
    samples = sim.collector.sampler.window(0, 0, sim.clock.now_ns())[-30:]
    utilisation = [u.gpu for u in sim.nvml.values("nvmlDeviceGetUtilizationRates", 0, 0, sim.clock.now_ns())]
    slow_ticks = [
        ts for ts, name, index, _ in sim.nvml.readings if name == "nvmlDeviceGetUtilizationRates" and index == 0
    ]
    for sample in samples:  # each carries the utilisation of the newest slow read at or before it
        newest = max(i for i, ts in enumerate(slow_ticks) if ts <= sample.ts_ns)
        assert sample.utilization_pct == utilisation[newest]
    temperatures = sim.nvml.values("nvmlDeviceGetTemperature", 0, 0, sim.clock.now_ns())[-30:]
    assert [s.temperature_c for s in samples] == temperatures


def test_a_driver_without_field_values_reads_the_counters_one_call_each():
    sim = make_sim()

    def missing(*args: object) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    sim.nvml.nvmlDeviceGetFieldValues = missing  # an older driver
    sim.nvml.readings.clear()
    sim.tick(3)
    ecc = sim.nvml.values("nvmlDeviceGetTotalEccErrors", 0, 0, sim.clock.now_ns())
    assert len(ecc) == 2 * 3  # corrected and uncorrected, each tick (10 Hz: every field every tick)
    assert sim.collector.health.snapshot()[("unsupported", "field_values")] == len(sim.gpus)  # once per GPU
    latest = sim.collector.sampler.latest(0)
    assert latest is not None and latest.ecc_corrected == ecc[-2] and latest.energy_mj is not None


def test_unsupported_fields_are_recorded_once_not_retried():
    sim = make_sim([{"host": "gamer", "gpus": 1, "model": "RTX-4090"}])  # GeForce: no ECC
    sim.tick(20)
    ecc_calls = [r for r in sim.nvml.readings if r[1] == "nvmlDeviceGetTotalEccErrors"]
    assert ecc_calls == []  # answered NotSupported once, at the first tick, then never asked again
    assert sim.collector.health.snapshot()[("unsupported", "ecc_corrected")] == 1
    span = sim.collector.start_inference_span("inf", gpu=0, start_ns=sim.clock.now_ns())
    sim.tick(2)
    span.end(end_ns=sim.clock.now_ns())
    a = sim.spans()[0].attributes
    assert A.ECC_UNCORRECTED_DELTA not in a and a[A.TELEMETRY_SAMPLES] == 3


def test_gpu_lost_mid_run_becomes_an_event_and_other_gpus_keep_sampling(sim: Sim):
    sim.tick(5)
    lost, healthy = sim.gpus
    lost.lost_at_ns = sim.clock.now_ns() + 1
    lost.record_xid(lost.lost_at_ns, 79, "GPU has fallen off the bus.", None, None)
    span = sim.collector.start_inference_span("inf", gpu=0, start_ns=sim.clock.now_ns())
    sim.tick(10)
    span.end(end_ns=sim.clock.now_ns(), exception=RuntimeError("CUDA error: unspecified launch failure"))
    assert sim.collector.sampler.is_lost(0) and not sim.collector.sampler.is_lost(1)
    assert [(e.gpu_index, e.kind) for e in sim.collector.sampler.events] == [(0, "gpu_lost")]
    assert len(sim.collector.sampler.window(1, 0, sim.clock.now_ns())) == 15
    assert len(sim.collector.sampler.window(0, 0, sim.clock.now_ns())) == 6  # 5 readings + the XID it left
    a = sim.spans()[0].attributes
    assert a[A.ERROR_TYPE] == A.ERROR_GPU_LOST  # a CUDA error on a GPU that fell off the bus
    assert a[A.TELEMETRY_STALE] is True
    assert a[A.XID] == (79,) and a[A.TELEMETRY_SAMPLES] == 2
    assert a[A.POWER_LIMIT] > 0 and a[A.ECC_UNCORRECTED_DELTA] == 0  # from the last sample that read them
    assert [e.name for e in sim.spans()[0].events] == [A.EVENT_XID, "exception"]
    assert healthy.uuid != lost.uuid


def test_driver_errors_on_one_gpu_are_counted_and_it_recovers(sim: Sim):
    sim.tick(2)
    sim.nvml.fail[0] = pynvml.NVMLError_Unknown
    sim.tick(3)
    del sim.nvml.fail[0]
    sim.tick(2)
    health = sim.collector.health.snapshot()
    assert health[("errors", "nvml_temperature_c")] == 3
    assert health[("samples", "1")] == 7 and health[("samples", "0")] == 4
    assert health[("dropped", "nvml_failed_sample")] == 3
    assert [(e.gpu_index, e.kind) for e in sim.collector.sampler.events] == [(0, "nvml_error")] * 3
    window = sim.collector.sampler.window(0, 0, sim.clock.now_ns())
    assert [s.ts_ns for s in window] == [sim.clock.now_ns() - k * PERIOD_NS for k in (6, 5, 1, 0)]


def test_no_nvml_library_runs_with_source_none():
    # This machine has no NVIDIA driver: the real pynvml raises NVMLError_LibraryNotFound.
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present")
    except pynvml.NVMLError_LibraryNotFound:
        pass
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    collector = Collector(pynvml, background=False, tracer_provider=provider)
    assert collector.start() is False
    with collector.inference_span("inf", gpu=0):
        result = 42
    with pytest.raises(KeyError):
        with collector.inference_span("inf", gpu=0):
            raise KeyError("the request's own error")
    assert result == 42
    assert [s.attributes[A.TELEMETRY_SOURCE] for s in exporter.get_finished_spans()] == [A.SOURCE_NONE] * 2
    health = collector.health.snapshot()
    assert health[("errors", "nvml_init")] == 1
    assert health[("dropped", "span_without_telemetry")] == 2
    assert [e.kind for e in collector.sampler.events] == ["driver_error"]


def test_background_thread_samples_at_the_configured_rate():
    nvml = lab.simulated_nvml(FLEET)
    collector = Collector(nvml, sample_hz=50, cuda_visible_devices=None)
    try:
        assert collector.start()
        deadline = time.monotonic() + 5
        while collector.health.total("samples") < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert collector.health.total("samples") >= 20
    finally:
        collector.shutdown()
        collector.shutdown()  # safe twice
    assert collector.sampler._thread is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sampler_restarts_lazily_in_a_forked_child():
    nvml = lab.simulated_nvml(FLEET)
    collector = Collector(nvml, sample_hz=50, cuda_visible_devices=None)
    collector.start()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the thread did not survive; the first span restarts it
        try:
            before = collector.sampler._thread is None
            with collector.inference_span("inf", gpu=0):
                time.sleep(0.3)
            alive = collector.sampler._thread is not None and collector.sampler._thread.is_alive()
            os.write(write_fd, json.dumps([before, alive, collector.sampler._thread_pid == os.getpid()]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    answer = json.loads(os.read(read_fd, 1000))
    os.close(read_fd)
    collector.shutdown()
    assert answer == [True, True, True]


def test_importing_collector_starts_nothing():
    import subprocess
    import sys

    code = (
        "import sys, threading\nfrom gpu_rca import collector\n"
        "bad = [m for m in ('duckdb', 'gpu_rca.correlate', 'gpu_rca.lab', 'pandas', 'numpy', 'pynvml', 'torch') if m in sys.modules]\n"
        "print(bad, threading.active_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] 1"


def test_period_is_one_over_rate():
    assert Sampler(pynvml, sample_hz=10).period_ns == PERIOD_NS


def test_first_span_starts_the_thread_and_shutdown_keeps_it_stopped():
    collector = Collector(lab.simulated_nvml(FLEET), sample_hz=50, cuda_visible_devices=None)
    assert collector.sampler._thread is None  # constructing starts nothing
    with collector.inference_span("inf", gpu=0):
        pass
    assert collector.sampler._thread is not None and collector.sampler._thread.is_alive()
    collector.shutdown()
    with collector.inference_span("inf", gpu=0):
        pass
    assert collector.sampler._thread is None


@st.composite
def _samples(draw: st.DrawFn) -> list[Sample]:
    """Time-ordered samples with unread fields, clock-event masks, ECC counts and XIDs."""
    count = draw(st.integers(1, 60))
    sparse = draw(st.booleans())  # most GPUs read every field; some lack one or fail now and then
    out, ecc = [], 0
    for i in range(count):

        def field(values: st.SearchStrategy) -> object:
            return draw(st.one_of(st.none(), values) if sparse else values)

        ecc += draw(st.sampled_from([0, 0, 0, 1]))
        out.append(
            Sample(
                (i + 1) * 100,
                field(st.integers(30, 95)),
                field(st.floats(20, 700, allow_nan=False)),
                300.0,
                0,
                field(st.integers(200, 2100)),
                6251,
                field(st.floats(0, 100, allow_nan=False)),
                5.0,
                field(st.integers(0, 80 * 2**30)),
                80 * 2**30,
                field(st.integers(0, 80 * 2**30)),
                0,
                ecc,
                draw(st.sampled_from([0, 0, 0, 4, 64])),
                0,
                draw(st.sampled_from([(), (), (), (), (79,)])),
            )
        )
    return out


@settings(max_examples=150, deadline=None)
@given(samples=_samples(), capacity=st.integers(4, 64), bounds=st.tuples(st.integers(0, 6500), st.integers(0, 3000)))
def test_ring_window_stats_match_the_window_reduced_directly(
    samples: list[Sample], capacity: int, bounds: tuple[int, int]
):
    ring = Ring(capacity=capacity)
    for sample in samples:
        ring.append(sample)  # old samples age out in chunks: the kept structures must still agree
    start = bounds[0]
    end = start + bounds[1]
    window, reductions, quiet = ring.window_stats(start, end)
    assert window == ring.window(start, end)
    expected = []
    for field, how in (
        ("temperature_c", max),
        ("power_w", max),
        ("power_w", "mean"),
        ("memory_used_bytes", max),
        ("process_memory_bytes", max),
        ("utilization_pct", "mean"),
        ("utilization_pct", max),
        ("sm_clock_mhz", min),
    ):
        values = [getattr(s, field) for s in window if getattr(s, field) is not None]
        if not values:
            expected.append(None)
        else:
            expected.append(sum(values) / len(values) if how == "mean" else how(values))
    assert [r is None for r in reductions] == [e is None for e in expected]
    assert [r for r in reductions if r is not None] == pytest.approx([e for e in expected if e is not None], rel=1e-12)
    changed = any(
        b.xids or b.throttle_mask != a.throttle_mask or b.ecc_uncorrected != a.ecc_uncorrected
        for a, b in itertools.pairwise(window)
    )
    assert not (quiet and changed)  # quiet may be conservative (a change after the window), never wrong
    device = DeviceInfo(0, "GPU-0", "NVIDIA A100", "00000000:3B:00.0", 88, 92, 1410, 1593, 80 * 2**30)
    if window:
        from_ring = aggregate(device, window, end, 100, (window, reductions, quiet))
        direct = aggregate(device, window, end, 100)
        assert from_ring[1] == direct[1]
        assert from_ring[0].keys() == direct[0].keys()
        for key, value in direct[0].items():
            assert from_ring[0][key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key
        # The request path's fast case stamps the same names and values (after the identity), in order.
        quick = ring.quiet_window(start, end)
        static_identity = identity(device, "simulated", None)
        fast = quiet_stamps(quick, end, 100) if quick is not None else None
        if fast is not None:
            static = {key: value for key, value in direct[0].items() if key not in fast}
            assert list({**static, **fast}) == list(direct[0])
            for key, value in direct[0].items():
                if key in fast:
                    assert fast[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key
        # Written straight into a span's attribute dict: the identity, the same stamps, then in-flight.
        store: dict = {"caller": 1}
        written = write_quiet_stamps(store, static_identity, quick, end, 100, 3) if quick is not None else False
        assert written == (fast is not None)
        if fast is not None:
            assert store == {"caller": 1, **static_identity, **fast, A.INFLIGHT_MAX: 3}
            assert list(store) == ["caller", *static_identity, *fast, A.INFLIGHT_MAX]
        else:
            assert store == {"caller": 1}


def test_the_reductions_name_sample_fields_and_contract_1_stamps_once():
    from gpu_rca.collector._nvml import Sample
    from gpu_rca.collector._ring import REDUCED_STAMPS, REDUCTIONS
    from gpu_rca.schemas.attributes import STAMPS_BY_ATTRIBUTE

    assert {name for name, _, _ in REDUCTIONS} <= set(Sample._fields)
    assert {how for _, how, _ in REDUCTIONS} <= {"max", "min", "mean"}
    assert len(set(REDUCED_STAMPS)) == len(REDUCTIONS)
    assert all(stamp in STAMPS_BY_ATTRIBUTE for stamp in REDUCED_STAMPS)
    assert all(STAMPS_BY_ATTRIBUTE[stamp].kind is float for _, how, stamp in REDUCTIONS if how == "mean")
