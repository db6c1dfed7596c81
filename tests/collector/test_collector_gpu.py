"""`gpu=` resolution: CUDA ordinals under CUDA_VISIBLE_DEVICES (indexes and UUIDs), UUIDs, torch.device, MIG."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gpu_rca.collector import GpuResolver, Target
from gpu_rca.collector._nvml import DeviceInfo, MigInfo
from gpu_rca.schemas import attributes as A
from tests.support.collector import make_sim

FLEET4 = [{"host": "node-a", "gpus": 4, "model": "L4"}]


def _device(index: int, uuid: str, pci: str, mig: tuple[MigInfo, ...] = ()) -> DeviceInfo:
    return DeviceInfo(index, uuid, "NVIDIA A100-SXM4-40GB", pci, 85, 90, 1410, 1215, 40 << 30, mig)


# NVML index order need not be PCI order in this table, to show that ordinals go by PCI bus id.
DEVICES = (
    _device(0, "GPU-aaaa0000-0000-0000-0000-000000000000", "00000000:3B:00.0"),
    _device(1, "GPU-bbbb0000-0000-0000-0000-000000000000", "00000000:18:00.0"),
    _device(
        2,
        "GPU-cccc0000-0000-0000-0000-000000000000",
        "00000000:86:00.0",
        (MigInfo("MIG-1234abcd-0000-0000-0000-000000000000", 3),),
    ),
)


@pytest.mark.parametrize(
    ("env", "gpu", "expected"),
    [
        (None, 0, Target(1)),  # ordinal 0 = lowest PCI bus id, whatever its NVML index
        (None, 1, Target(0)),
        (None, "cuda:2", Target(2)),
        (None, "cuda", Target(1)),
        (None, 3, None),
        ("2,0", 0, Target(2)),  # CUDA_VISIBLE_DEVICES indexes count in PCI order
        ("2,0", 1, Target(1)),
        ("2,0", 2, None),
        ("GPU-cccc0000-0000-0000-0000-000000000000,GPU-aaaa0000-0000-0000-0000-000000000000", 1, Target(0)),
        ("GPU-cccc", 0, Target(2)),  # an abbreviated UUID, as CUDA accepts
        ("MIG-1234abcd-0000-0000-0000-000000000000", 0, Target(2, 3)),
        ("1,bogus,2", 1, None),  # CUDA stops at the first invalid entry
        ("", 0, None),  # nothing visible
        (None, "GPU-aaaa0000-0000-0000-0000-000000000000", Target(0)),  # UUIDs ignore CUDA_VISIBLE_DEVICES
        ("2", "GPU-bbbb0000-0000-0000-0000-000000000000", Target(1)),
        (None, "MIG-1234abcd-0000-0000-0000-000000000000", Target(2, 3)),
        (None, "GPU-", None),  # ambiguous prefix
        (None, "0000:86:00.0", Target(2)),  # PCI bus id, any spelling
        (None, "00000000:3B:00.0", Target(0)),
        (None, SimpleNamespace(type="cuda", index=2), Target(2)),  # torch.device, duck-typed
        ("1", SimpleNamespace(type="cuda", index=0), Target(0)),
        (None, SimpleNamespace(type="cuda", index=None), Target(1)),  # current device (torch not imported): 0
        (None, SimpleNamespace(type="cpu", index=None), None),
        (None, None, None),
        (None, True, None),
    ],
)
def test_resolution(env: str | None, gpu: object, expected: Target | None):
    assert GpuResolver(DEVICES, env).resolve(gpu) == expected


def test_spans_stamp_the_gpu_cuda_visible_devices_names():
    for env, expected in (("3,1", 3), (None, 0)):
        sim = make_sim(FLEET4, cuda_visible_devices=env)
        sim.tick()
        sim.collector.start_inference_span("inf", gpu=0).end()
        assert sim.spans()[0].attributes[A.GPU_INDEX] == expected
    sim = make_sim(FLEET4, cuda_visible_devices=sim.gpus[2].uuid + "," + sim.gpus[0].uuid)
    sim.tick()
    sim.collector.start_inference_span("inf", gpu=1).end()
    sim.collector.start_inference_span("inf", gpu="cuda:0").end()
    assert [s.attributes[A.GPU_UUID] for s in sim.spans()] == [sim.gpus[0].uuid, sim.gpus[2].uuid]


def test_cuda_visible_devices_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    from gpu_rca.collector import Collector

    sim = make_sim(FLEET4, cuda_visible_devices=None)
    collector = Collector(sim.nvml, clock=sim.clock.now_ns, tracer_provider=sim.provider, background=False)
    collector.start()
    assert collector.resolve_gpu(0) == Target(2)
