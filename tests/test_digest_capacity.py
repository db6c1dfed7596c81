"""The digest's capacity answer on the demo incident: per-request memory against the lab's own memory model,
and the concurrency per GPU it derives checked by the advisor benchmark's burst."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_rca.lab import ddcolor

GIB = 1024**3
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_capacity(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from gpu_rca.commands.demo import run_demo

    result = run_demo("large-uploads-10am", tmp_path_factory.mktemp("demo") / "gpu-rca-demo")
    return result.digest.capacity["request_memory"]


def test_per_request_memory_by_size_is_within_15_percent_of_the_lab_model(demo_capacity):
    fit = demo_capacity["fit"]
    assert fit["points"] >= 8 and fit["r2"] is not None and fit["r2"] > 0.8
    rows = demo_capacity["rows"]
    assert {r["input_size"] for r in rows} == {512, 1024, 1280}
    for row in rows:
        truth = ddcolor.peak_memory_bytes(row["model"], row["input_size"]) / GIB
        assert row["memory_gib"] == pytest.approx(truth, rel=0.15), row
        assert row["requests"] > 0 and row["task_types"] == "building, landscape, person"


def test_pools_name_a_concurrency_per_gpu_and_size_with_a_memory_limit(demo_capacity):
    (l4,) = demo_capacity["gpus"]
    assert l4["gpu_name"] == "NVIDIA L4"
    (pools,) = demo_capacity["pools"]["by_gpu"]
    by_size = {size: p for p in pools["pools"] for size in p["input_sizes"]}
    assert by_size[1280]["concurrency"] == 1  # one ConvNeXt-L 1280 request (~11 GiB) at a time on 22.5 GiB
    assert by_size[512]["concurrency"] > by_size[1024]["concurrency"] > by_size[1280]["concurrency"]
    for pool in pools["pools"]:
        assert pool["memory_limit_gib"] <= l4["memory_total_gib"]
    answers = demo_capacity["pools"]["answers"]
    assert "Separate pools by input size" in answers[0] and "OOM failures" in answers[0]
    assert answers[1].startswith("Pools by task type would not have helped")


def _advisor_bench(concurrency: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "advisor", "--seeds", "7", "--concurrency", str(concurrency), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["results"]


def test_the_advisor_benchmark_confirms_the_1280_concurrency_avoids_ooms(demo_capacity):
    pytest.importorskip("httpx")
    (pools,) = demo_capacity["pools"]["by_gpu"]
    concurrency = next(p["concurrency"] for p in pools["pools"] if 1280 in p["input_sizes"])
    # The benchmark's burst is 1280 px on one L4 with the large model, the advisor not enforcing (off).
    assert _advisor_bench(concurrency)["off"]["oom"] == 0
    assert _advisor_bench(concurrency + 1)["off"]["oom"] > 0  # and it is the largest that does
