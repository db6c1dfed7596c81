"""The failure texts' own numbers: PyTorch's CUDA OOM templates and CUDA/NCCL error strings (fixtures in tests/data)."""

from __future__ import annotations

from gpu_rca.correlate.ranking.error_text import parse_cuda_error, parse_oom, size_bytes
from tests.support import data_file

GIB = 1024**3
MIB = 1024**2


def _blocks() -> list[str]:
    text = data_file("torch-oom.txt").read_text()
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                blocks.append("\n".join(current))
            current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _ooms() -> list[str]:
    return [b for b in _blocks() if "out of memory" in b]


def test_every_oom_fixture_parses_and_no_other_text_does() -> None:
    blocks = _blocks()
    ooms = _ooms()
    assert len(ooms) == 8
    assert all(parse_oom(b) is not None for b in ooms)
    assert all(parse_oom(b) is None for b in blocks if b not in ooms)


def test_current_template_names_the_other_process_and_this_one() -> None:
    oom = parse_oom(_ooms()[0])
    assert oom is not None
    assert oom.requested == size_bytes("3.52", "GiB")
    assert (oom.device, oom.total, oom.free) == (1, size_bytes("22.05", "GiB"), size_bytes("1.18", "GiB"))
    assert oom.others == {30117: size_bytes("11.40", "GiB")}
    assert oom.others_total == size_bytes("11.40", "GiB")
    assert oom.process == size_bytes("9.44", "GiB")
    assert oom.allocated == size_bytes("8.61", "GiB")
    assert oom.unallocated == size_bytes("402.17", "MiB")
    assert not oom.fragmented


def test_two_foreign_processes_and_a_memory_fraction() -> None:
    oom = parse_oom(_ooms()[1])
    assert oom is not None
    assert oom.others == {5512: size_bytes("40.02", "GiB"), 5618: size_bytes("20.50", "GiB")}
    assert oom.allowed == 60 * GIB
    assert oom.process == size_bytes("18.37", "GiB")


def test_fragmentation_alone_on_the_gpu() -> None:
    oom = parse_oom(_ooms()[2])
    assert oom is not None
    assert oom.others == {} and oom.others_total == 0
    assert oom.unallocated == size_bytes("6.48", "GiB")
    assert oom.fragmented  # 6.48 GiB stranded, 1.25 GiB asked for


def test_nothing_free_reads_as_zero_bytes() -> None:
    oom = parse_oom(_ooms()[3])
    assert oom is not None and oom.free == 0 and oom.device == 2


def test_torch_2_1_template_with_and_without_the_own_process() -> None:
    with_own, without = (parse_oom(b) for b in _ooms()[4:6])
    assert with_own is not None and without is not None
    assert with_own.total == size_bytes("7.79", "GiB") and with_own.process == size_bytes("7.60", "GiB")
    assert without.process is None and without.others_total is None  # cannot tell who else was there
    assert without.unallocated == size_bytes("4.72", "GiB") and without.fragmented


def test_legacy_template_reserved_or_cached() -> None:
    reserved, cached = (parse_oom(b) for b in _ooms()[6:8])
    assert reserved is not None and cached is not None
    assert reserved.requested == 48 * MIB and reserved.device == 1
    assert reserved.allocated == size_bytes("14.21", "GiB")
    assert reserved.unallocated == size_bytes("14.66", "GiB") - size_bytes("14.21", "GiB")
    assert reserved.free == size_bytes("30.62", "MiB")
    assert cached.unallocated is None and cached.total == size_bytes("3.95", "GiB")


def test_cuda_and_nccl_error_strings() -> None:
    errors = [parse_cuda_error(b) for b in _blocks() if "CUDA error" in b]
    assert [e.error for e in errors if e] == [
        "an illegal memory access was encountered",
        "an illegal memory access was encountered",
        "unspecified launch failure",
        "unspecified launch failure",
        "unspecified launch failure",
    ]
    assert [e.nccl_rank for e in errors if e] == [None, None, None, None, 3]
    assert parse_cuda_error("ValueError: operands could not be broadcast together") is None
