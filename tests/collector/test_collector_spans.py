"""Inference spans stamped from the lab's simulated GPUs through a real OTel SDK pipeline."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.trace import StatusCode

from gpu_rca.schemas import attributes as A
from gpu_rca.schemas.pci import normalize_pci_bus_id
from tests.support import data_file, shared_sample
from tests.support.collector import PERIOD_NS, SERVICE_PID, Sim

_CLASS_PREFIX = re.compile(r"^[\w.]+Error: ?")


def test_stamps_match_what_nvml_reported_in_the_window(sim: Sim):
    gpu = sim.gpus[0]
    gpu.load(0.9)
    gpu.set_process(SERVICE_PID, "python3", 6 * 2**30)
    gpu.set_process(777, "other", 2 * 2**30)
    sim.tick(30)
    start = sim.clock.now_ns() + 30_000_000
    span = sim.collector.start_inference_span(
        "ddcolor.inference", gpu=0, attributes={A.DDCOLOR_INPUT_SIZE: 1280}, start_ns=start
    )
    first_ts = sim.clock.now_ns()
    sim.tick(10)
    end = sim.clock.now_ns() + 20_000_000
    span.gpu_work_started(start + 5_000_000)
    span.end(end_ns=end)

    (s,) = sim.spans()
    a = s.attributes
    rec = sim.nvml
    temps = rec.values("nvmlDeviceGetTemperature", 0, first_ts, end)
    powers = [p / 1000 for p in rec.values("nvmlDeviceGetPowerUsage", 0, first_ts, end)]
    utils = [u.gpu for u in rec.values("nvmlDeviceGetUtilizationRates", 0, first_ts, end)]
    mems = [m.used for m in rec.values("nvmlDeviceGetMemoryInfo", 0, first_ts, end)]
    clocks = rec.values("nvmlDeviceGetClockInfo", 0, first_ts, end)[::2]  # SM, MEM alternate
    assert len(temps) == 11
    assert s.start_time == start and s.end_time == end
    assert a[A.TELEMETRY_SOURCE] == A.SOURCE_SIMULATED
    assert a[A.TELEMETRY_SAMPLES] == 11
    assert a[A.TELEMETRY_STALE] is False
    assert a[A.GPU_INDEX] == 0 and a[A.GPU_UUID] == gpu.uuid and a[A.GPU_NAME] == "NVIDIA L4"
    assert a[A.GPU_PCI_BUS_ID] == normalize_pci_bus_id(gpu.pci_bus_id)  # NVML's 00000000:18:00.0 -> 0000:18:00.0
    assert a[A.DDCOLOR_INPUT_SIZE] == 1280
    assert a[A.TEMPERATURE_MAX] == max(temps)
    assert a[A.TEMPERATURE_SLOWDOWN] == gpu.profile.slowdown_temp_c
    assert a[A.POWER_MAX] == pytest.approx(max(powers))
    assert a[A.POWER_MEAN] == pytest.approx(sum(powers) / len(powers))
    assert a[A.POWER_LIMIT] == pytest.approx(gpu.power_limit_w)
    assert a[A.MEMORY_USED_START] == mems[0] and a[A.MEMORY_USED_MAX] == max(mems)
    assert a[A.MEMORY_TOTAL] == gpu.profile.memory_total_bytes
    assert a[A.MEMORY_PROCESS_MAX] == 6 * 2**30
    assert a[A.UTILIZATION_MEAN] == pytest.approx(sum(utils) / len(utils))
    assert a[A.UTILIZATION_MAX] == max(utils)
    assert a[A.CLOCK_SM_MIN] == min(clocks)
    assert a[A.CLOCK_SM_MAX] == gpu.profile.max_sm_clock_mhz
    assert a[A.THROTTLE_REASONS] == ()
    assert a[A.ECC_CORRECTED_DELTA] == 0 and a[A.ECC_UNCORRECTED_DELTA] == 0
    assert a[A.XID] == ()
    assert a[A.INFLIGHT_MAX] == 1
    assert a[A.QUEUE_MS] == pytest.approx(5.0)
    assert s.status.status_code is StatusCode.UNSET
    assert s.events == ()


def test_throttle_active_only_mid_span_ecc_increment_and_xid(sim: Sim):
    gpu = sim.gpus[0]
    gpu.load(0.8)
    sim.tick(5)
    gpu.record_xid(sim.clock.now_ns() - 1, 31, "before the span", None, None)  # not this span's
    sim.tick(1)
    span = sim.collector.start_inference_span("inf", gpu=0, start_ns=sim.clock.now_ns() + 1)
    sim.tick(3)
    gpu.slowdown = 0.5  # external power brake, only mid-span
    sim.tick(3)
    gpu.slowdown = 0.0
    gpu.ecc_uncorrected += 2
    gpu.ecc_corrected += 5
    gpu.record_xid(sim.clock.now_ns() + 1, 48, "Double Bit ECC Error", SERVICE_PID, "python3")
    sim.tick(3)
    span.end(end_ns=sim.clock.now_ns())

    (s,) = sim.spans()
    a = s.attributes
    assert a[A.THROTTLE_REASONS] == ("hw_slowdown", "hw_power_brake")
    assert a[A.CLOCK_SM_MIN] == gpu.profile.max_sm_clock_mhz // 2
    assert a[A.ECC_UNCORRECTED_DELTA] == 2 and a[A.ECC_CORRECTED_DELTA] == 5
    assert a[A.XID] == (48,)
    events = [(e.name, dict(e.attributes)) for e in s.events]
    assert events == [
        (A.EVENT_THROTTLE, {A.THROTTLE_REASONS: ("hw_slowdown", "hw_power_brake")}),
        (A.EVENT_THROTTLE, {A.THROTTLE_REASONS: ()}),
        (A.EVENT_ECC, {A.ECC_CORRECTED_DELTA: 5, A.ECC_UNCORRECTED_DELTA: 2}),
        (A.EVENT_XID, {A.XID: 48}),
    ]
    assert all(s.start_time < e.timestamp <= s.end_time for e in s.events)


def test_span_shorter_than_one_sampling_period(sim: Sim):
    sim.gpus[0].load(0.5)
    sim.tick(10)
    tick = sim.clock.now_ns()
    span = sim.collector.start_inference_span("inf", gpu=0, start_ns=tick + 20_000_000)
    span.end(end_ns=tick + 60_000_000)
    a = sim.spans()[0].attributes
    assert a[A.TELEMETRY_SAMPLES] == 1
    assert a[A.TELEMETRY_STALE] is False
    assert a[A.TEMPERATURE_MAX] == sim.nvml.values("nvmlDeviceGetTemperature", 0, tick, tick)[0]


def test_stale_when_the_newest_sample_is_older_than_three_periods(sim: Sim):
    sim.tick(2)
    span = sim.collector.start_inference_span("inf", gpu=1, start_ns=sim.clock.now_ns())
    span.end(end_ns=sim.clock.now_ns() + 3 * PERIOD_NS + 1)
    a = sim.spans()[0].attributes
    assert a[A.TELEMETRY_STALE] is True and a[A.TELEMETRY_SAMPLES] == 1 and a[A.GPU_INDEX] == 1


def test_inflight_max_counts_overlapping_spans_on_the_same_gpu(sim: Sim):
    sim.tick()
    t = sim.clock.now_ns()
    first = sim.collector.start_inference_span("a", gpu=0, start_ns=t)
    second = sim.collector.start_inference_span("b", gpu=0, start_ns=t + 1)
    other_gpu = sim.collector.start_inference_span("c", gpu=1, start_ns=t + 2)
    second.end(end_ns=t + 3)
    third = sim.collector.start_inference_span("d", gpu=0, start_ns=t + 4)
    for span in (first, third, other_gpu):
        span.end(end_ns=t + 5)
    got = {s.name: s.attributes[A.INFLIGHT_MAX] for s in sim.spans()}
    assert got == {"a": 2, "b": 2, "c": 1, "d": 2}


def test_inflight_max_holds_when_threads_open_and_end_spans_at_once(sim: Sim):
    sim.tick()
    t = sim.clock.now_ns()
    threads = 8
    for _ in range(20):  # each round: every thread's span open at once, then all ended together
        opened = threading.Barrier(threads)

        def request(i: int, opened: threading.Barrier = opened) -> None:
            span = sim.collector.start_inference_span(f"r{i}", gpu=0, start_ns=t)
            opened.wait(timeout=10)
            span.end(end_ns=t + 1)

        workers = [threading.Thread(target=request, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        assert sim.collector.inflight(0) == ()
    assert {s.attributes[A.INFLIGHT_MAX] for s in sim.spans()} == {threads}


def _oom_blocks(path: Path) -> list[tuple[str, str]]:
    """Every error text in a file of CUDA error texts (blank-line separated), with the error.type it must get."""
    text = path.read_text()
    blocks = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if not line.startswith("#")]
        if not lines:
            continue
        message = "\n".join(lines)
        if message.startswith("Exception raised from"):  # the tail of the NCCL block
            continue
        if "out of memory" in message:
            expected = A.ERROR_CUDA_OOM
        elif "illegal memory access" in message:
            expected = A.ERROR_CUDA_ILLEGAL_ADDRESS
        else:
            expected = A.ERROR_CUDA_LAUNCH_FAILURE
        blocks.append((message, expected))
    return blocks


def _classify_all(sim: Sim, blocks: list[tuple[str, str]]) -> None:
    for message, expected in blocks:
        # The text as PyTorch raises it: the class prefix is the traceback's, the rest is str(exc).
        error = RuntimeError(_CLASS_PREFIX.sub("", message))
        span = sim.collector.start_inference_span("inf", gpu=0)
        span.end(exception=error)
        assert sim.spans()[-1].attributes[A.ERROR_TYPE] == expected, message


def test_every_cuda_error_text_is_classified(sim: Sim):
    blocks = _oom_blocks(data_file("torch-oom.txt"))
    assert {expected for _, expected in blocks} == {
        A.ERROR_CUDA_OOM,
        A.ERROR_CUDA_ILLEGAL_ADDRESS,
        A.ERROR_CUDA_LAUNCH_FAILURE,
    }
    assert len(blocks) >= 10
    _classify_all(sim, blocks)


def test_every_verbatim_public_cuda_error_text_is_classified(sim: Sim):
    """Extra: the texts users published, where the shared samples are beside the checkout."""
    blocks = _oom_blocks(shared_sample("torch-oom.txt"))
    assert len(blocks) >= 10
    _classify_all(sim, blocks)


def test_failure_from_a_real_oom_message_records_exception_and_status(sim: Sim):
    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError, duck-typed by name
        pass

    message, _ = _oom_blocks(data_file("torch-oom.txt"))[0]
    foreign = re.search(r"Process \d+ has [\d.]+ GiB memory in use", message)
    assert foreign, "the first fixture text is the current template naming another process"
    error = OutOfMemoryError(_CLASS_PREFIX.sub("", message))
    sim.tick()
    with pytest.raises(OutOfMemoryError) as raised:
        with sim.collector.inference_span("ddcolor.inference", gpu=0):
            raise error
    assert raised.value is error
    (s,) = sim.spans()
    assert s.attributes[A.ERROR_TYPE] == A.ERROR_CUDA_OOM
    assert s.status.status_code is StatusCode.ERROR
    assert [e.name for e in s.events] == ["exception"]
    assert foreign[0] in s.events[0].attributes["exception.message"]  # kept whole: it tells who holds memory
    assert s.attributes[A.TELEMETRY_SOURCE] == A.SOURCE_SIMULATED


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad image"), "ValueError"),
        (TimeoutError(), A.ERROR_TIMEOUT),
        (TimeoutError(), A.ERROR_TIMEOUT),
        (KeyError("x"), "KeyError"),
    ],
)
def test_other_failures_get_their_class_name(sim: Sim, error: BaseException, expected: str):
    span = sim.collector.start_inference_span("inf", gpu=0)
    span.end(exception=error)
    assert sim.spans()[0].attributes[A.ERROR_TYPE] == expected


def test_non_builtin_exceptions_are_module_qualified(sim: Sim):
    UnidentifiedImageError = type("UnidentifiedImageError", (OSError,), {"__module__": "PIL"})
    span = sim.collector.start_inference_span("inf", gpu=0)
    span.end(exception=UnidentifiedImageError("cannot identify image file"))
    assert sim.spans()[0].attributes[A.ERROR_TYPE] == "PIL.UnidentifiedImageError"


def test_decorates_sync_and_async_functions_and_keeps_results_and_exceptions(sim: Sim):
    scope = sim.collector.inference_span("ddcolor.inference", gpu=0, attributes={A.DDCOLOR_MODEL: "ddcolor_paper_tiny"})

    @scope
    def colorize(x: int) -> int:
        """Doc kept."""
        return x * 2

    @scope
    async def colorize_async(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise ValueError("negative")
        return x + 1

    assert colorize(21) == 42
    assert colorize.__doc__ == "Doc kept."
    assert asyncio.run(colorize_async(1)) == 2
    with pytest.raises(ValueError, match="negative"):
        asyncio.run(colorize_async(-1))
    spans = sim.spans()
    assert [s.attributes[A.DDCOLOR_MODEL] for s in spans] == ["ddcolor_paper_tiny"] * 3
    assert [s.attributes.get(A.ERROR_TYPE) for s in spans] == [None, None, "ValueError"]
    assert all(s.attributes[A.GPU_INDEX] == 0 for s in spans)


def test_span_is_current_inside_so_children_and_logs_join_it(sim: Sim):
    tracer = sim.provider.get_tracer("app")
    with sim.collector.inference_span("inf", gpu=0) as span:
        span.set_attribute(A.IMAGE_WIDTH, 640)
        with tracer.start_as_current_span("child"):
            pass
    child, parent = sim.spans()
    assert child.parent.span_id == parent.context.span_id
    assert parent.attributes[A.IMAGE_WIDTH] == 640


def test_processor_stamps_the_start_snapshot_on_spans_that_name_a_gpu(sim: Sim):
    sim.tick(3)
    tracer = sim.provider.get_tracer("auto-instrumentation")
    uuid = sim.gpus[1].uuid
    with tracer.start_as_current_span("by-uuid", start_time=sim.clock.now_ns(), attributes={A.GPU_UUID: uuid}):
        pass
    with tracer.start_as_current_span("by-index", start_time=sim.clock.now_ns(), attributes={A.GPU_INDEX: 0}):
        pass
    with tracer.start_as_current_span("plain"):
        pass
    by_uuid, by_index, plain = (s.attributes for s in sim.spans())
    assert by_uuid[A.GPU_INDEX] == 1 and by_uuid[A.TELEMETRY_SOURCE] == A.SOURCE_SIMULATED
    assert by_uuid[A.TELEMETRY_SAMPLES] == 1 and A.TEMPERATURE_MAX in by_uuid
    assert by_index[A.GPU_UUID] == sim.gpus[0].uuid
    assert A.TELEMETRY_SOURCE not in plain


def test_no_gpu_named_means_source_none_and_a_dropped_count(sim: Sim):
    assert sim.collector.start_inference_span("inf", gpu=None) is not None
    sim.collector.start_inference_span("cpu", gpu=SimpleNamespace(type="cpu", index=None)).end()
    a = sim.spans()[0].attributes
    assert a[A.TELEMETRY_SOURCE] == A.SOURCE_NONE and A.GPU_UUID not in a
    assert sim.collector.health.total("dropped") == 1
