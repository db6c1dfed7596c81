"""Faults change the model's inputs and failures arise from the mechanism, seen through the real collector."""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise

import pytest

from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.scenario import parse_scenario
from gpu_rca.schemas import attributes as A

NS = 1_000_000_000


def _run(faults, *, fleet=None, workload=None, duration="4m"):
    scenario = parse_scenario(
        {
            "name": "t",
            "seed": 5,
            "duration": duration,
            "fleet": fleet or [{"host": "node-a", "gpus": 2, "model": "L4"}],
            "workload": workload or {"rate": "2/s", "input_size": {512: 1}},
            "faults": faults,
        }
    )
    run = run_scenario(scenario)
    return run, scenario.start_ns


def _on(run, ref):
    uuid = run.fleet.gpu(ref).uuid
    return [s for s in run.inference_spans if s.attributes[A.GPU_UUID] == uuid]


def test_xid_79_fails_every_later_request_on_that_gpu_while_the_others_keep_serving():
    run, start = _run([{"kind": "xid", "gpu": "node-a/1", "code": 79, "start": "1m", "severity": 1.0}])
    lost_at = run.fleet.gpu("node-a/1").lost_at_ns
    assert lost_at is not None and lost_at >= start + 60 * NS
    later = [s for s in _on(run, "node-a/1") if s.start_time > lost_at]
    assert len(later) > 50
    assert {s.attributes.get(A.ERROR_TYPE) for s in later} == {A.ERROR_GPU_LOST}
    healthy = [s for s in _on(run, "node-a/0") if s.start_time > lost_at]
    assert len(healthy) > 50 and not any(A.ERROR_TYPE in s.attributes for s in healthy)
    assert any(" 79, " in line and "GPU has fallen off the bus" in line for line in run.kernel_log)


def test_memory_taken_by_another_process_fails_requests_of_every_size_with_the_real_oom_message():
    run, _ = _run(
        [{"kind": "foreign_process", "gpu": "node-a/0", "start": "30s", "severity": 0.95}],
        workload={"rate": "3/s", "input_size": {256: 0.3, 512: 0.4, 1024: 0.3}},
    )
    failed = [s for s in _on(run, "node-a/0") if s.attributes.get(A.ERROR_TYPE) == A.ERROR_CUDA_OOM]
    assert {s.attributes[A.DDCOLOR_INPUT_SIZE] for s in failed} == {256, 512, 1024}
    message = next(e for e in failed[0].events if e.name == "exception").attributes["exception.message"]
    assert message.startswith("CUDA out of memory. Tried to allocate ")
    assert "GPU 0 has a total capacity of 22.49 GiB of which " in message
    assert message.endswith(
        "(https://docs.pytorch.org/docs/stable/notes/cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf)"
    )
    # PyTorch names every other process on the GPU before this one's own memory.
    assert re.search(r"is free\. Process \d+ has 21\.\d\d GiB memory in use\. Including non-PyTorch memory", message)
    assert not any(s.attributes.get(A.ERROR_TYPE) for s in _on(run, "node-a/1"))
    assert max(s.attributes[A.MEMORY_USED_MAX] for s in failed) > 0.95 * failed[0].attributes[A.MEMORY_TOTAL]


def test_large_inputs_overflow_memory_and_a_small_request_can_be_the_victim():
    run, _ = _run(
        [],
        workload={
            "rate": "1.6/s",
            "input_size": {1280: 0.6, 512: 0.4},
            "model": {"ddcolor_paper": 1},
            "timeout": "60s",
        },
        duration="6m",
    )
    oom = Counter(
        s.attributes[A.DDCOLOR_INPUT_SIZE]
        for s in run.inference_spans
        if s.attributes.get(A.ERROR_TYPE) == A.ERROR_CUDA_OOM
    )
    assert oom[1280] > oom[512] > 0


def test_a_lowered_power_limit_sets_sw_power_cap_and_slows_requests_until_they_time_out():
    run, start = _run(
        [{"kind": "power_cap", "gpu": "node-a/0", "start": "30s", "severity": 1.0}],
        workload={"rate": "4.4/s", "input_size": {512: 1}, "model": {"ddcolor_paper": 1}, "timeout": "15s"},
        duration="5m",
    )
    capped = [s for s in _on(run, "node-a/0") if s.start_time > start + 60 * NS]
    assert all(s.attributes[A.POWER_LIMIT] == pytest.approx(28.8) for s in capped)
    assert any("sw_power_cap" in s.attributes[A.THROTTLE_REASONS] for s in capped)
    assert min(s.attributes[A.CLOCK_SM_MIN] for s in capped) < 0.7 * 2040
    assert Counter(s.attributes.get(A.ERROR_TYPE) for s in capped)[A.ERROR_TIMEOUT] > 20
    assert not any(s.attributes.get(A.ERROR_TYPE) for s in _on(run, "node-a/1"))


def test_lost_cooling_throttles_for_heat_and_a_mild_one_is_harmless():
    run, start = _run(
        [
            {"kind": "thermal", "gpu": "node-a/0", "start": "10s", "severity": 0.95},
            {"kind": "thermal", "gpu": "node-a/1", "start": "10s", "severity": 0.25},
        ],
        workload={"rate": "4/s", "input_size": {512: 1}, "model": {"ddcolor_paper": 1}, "timeout": "20s"},
        duration="6m",
    )
    hot = [s for s in _on(run, "node-a/0") if s.start_time > start + 150 * NS]
    assert any("sw_thermal" in s.attributes[A.THROTTLE_REASONS] for s in hot)
    assert max(s.attributes[A.TEMPERATURE_MAX] for s in hot) >= hot[0].attributes[A.TEMPERATURE_SLOWDOWN] - 3
    assert any(s.attributes.get(A.ERROR_TYPE) == A.ERROR_TIMEOUT for s in hot)
    warm = _on(run, "node-a/1")
    assert not any("sw_thermal" in s.attributes[A.THROTTLE_REASONS] for s in warm)
    assert not any(s.attributes.get(A.ERROR_TYPE) for s in warm)


def test_external_slowdown_sets_the_hw_slowdown_and_power_brake_bits():
    run, start = _run([{"kind": "hw_slowdown", "gpu": "node-a/1", "start": "30s", "severity": 0.8}], duration="2m")
    slowed = [s for s in _on(run, "node-a/1") if s.start_time > start + 40 * NS]
    assert slowed and all({"hw_slowdown", "hw_power_brake"} <= set(s.attributes[A.THROTTLE_REASONS]) for s in slowed)


def test_an_illegal_address_poisons_the_worker_until_it_restarts():
    run, _start = _run(
        [{"kind": "xid", "gpu": "node-a/0", "code": 13, "start": "1m", "end": "3m", "severity": 0.0}],
        workload={"rate": "4/s", "input_size": {512: 1}},
    )
    xid_at = run.fleet.gpu("node-a/0").xids[0].ts_ns
    spans = _on(run, "node-a/0")
    during = [s for s in spans if xid_at + 2 * NS < s.start_time < xid_at + 14 * NS]
    after = [s for s in spans if xid_at + 16 * NS < s.start_time]
    assert during and {s.attributes.get(A.ERROR_TYPE) for s in during} == {A.ERROR_CUDA_ILLEGAL_ADDRESS}
    assert after and not any(s.attributes.get(A.ERROR_TYPE) for s in after)
    assert any(": 13, pid=" in line for line in run.kernel_log)


def test_an_application_bug_fails_only_its_model_with_an_application_exception():
    run, _ = _run(
        [{"kind": "app_bug", "model": "ddcolor_artistic", "start": "1m", "severity": 0.5}],
        workload={"rate": "3/s", "input_size": {512: 1}, "model": {"ddcolor_paper_tiny": 0.5, "ddcolor_artistic": 0.5}},
    )
    failed = Counter((s.attributes[A.DDCOLOR_MODEL], s.attributes.get(A.ERROR_TYPE)) for s in run.inference_spans)
    assert failed[("ddcolor_artistic", "ValueError")] > 20
    assert not any(e for (m, e) in failed if m == "ddcolor_paper_tiny" and e)


def _memory(span) -> int:
    return span.attributes[A.MEMORY_PROCESS_MAX]


def test_a_leaking_version_climbs_with_requests_served_and_is_recycled_in_a_sawtooth():
    run, _ = _run(
        [{"kind": "memory_leak", "gpu": "node-b/0", "version": "1.5.0", "severity": 1.0}],
        fleet=[{"host": "node-a", "gpus": 1, "model": "T4"}, {"host": "node-b", "gpus": 1, "model": "T4"}],
        workload={"rate": "4/s", "input_size": {512: 1}},
        duration="6m",
    )
    leaking, healthy = _on(run, "node-b/0"), _on(run, "node-a/0")
    assert {s.resource.attributes[A.SERVICE_VERSION] for s in leaking} == {"1.5.0"}
    assert {s.resource.attributes[A.SERVICE_VERSION] for s in healthy} != {"1.5.0"}
    ok = sorted((s for s in leaking if A.ERROR_TYPE not in s.attributes), key=lambda s: s.end_time)
    # The process memory climbs with requests served, then falls back when the supervisor recycles the worker.
    climbs = sum(1 for a, b in pairwise(ok) if _memory(b) > _memory(a))
    falls = [(a, b) for a, b in pairwise(ok) if _memory(b) < _memory(a) - 2 * 1024**3]
    assert climbs > len(ok) // 3 and falls
    ooms = [s for s in leaking if s.attributes.get(A.ERROR_TYPE) == A.ERROR_CUDA_OOM]
    assert len(ooms) >= 5 and not any(s.attributes.get(A.ERROR_TYPE) for s in healthy)
    assert max(_memory(s) for s in healthy) < 0.5 * max(_memory(s) for s in ok)


def test_fragmentation_leaves_memory_reserved_but_unallocated_in_the_oom_texts():
    run, _ = _run(
        [{"kind": "allocator_fragmentation", "gpu": "node-a/0", "start": "30s", "severity": 1.0}],
        workload={"rate": "3/s", "input_size": {512: 0.5, 768: 0.3, 1024: 0.2}},
        duration="6m",
    )
    ooms = [s for s in _on(run, "node-a/0") if s.attributes.get(A.ERROR_TYPE) == A.ERROR_CUDA_OOM]
    assert ooms and not any(s.attributes.get(A.ERROR_TYPE) for s in _on(run, "node-a/1"))
    texts = [next(e for e in s.events if e.name == "exception").attributes["exception.message"] for s in ooms]
    stranded = [re.search(r"and ([\d.]+) GiB is reserved by PyTorch but unallocated", t) for t in texts]
    assert sum(1 for m in stranded if m and float(m.group(1)) >= 1.0) >= len(texts) // 2
