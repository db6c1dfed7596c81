"""`gpu-rca demo`: the README's main command, run as a user runs it, and its ranking across seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpu_rca.schemas import attributes as A

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _drivers(cause: dict) -> dict:
    return {d["attribute"]: d["value"] for d in cause["drivers"]}


def test_demo_from_a_fresh_folder_ranks_oom_on_large_inputs_and_writes_the_digest(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GPU_RCA_DB", "GPU_RCA_GRAFANA_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "demo", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    analysis = json.loads(done.stdout)  # exactly one JSON document on stdout
    top = analysis["causes"][0]
    assert top["cause"] == "gpu_oom_large_inputs"
    assert _drivers(top)[A.DDCOLOR_INPUT_SIZE] == 1280
    assert "gpu_oom_large_inputs" in done.stderr and "The lab injected: gpu_oom_large_inputs" in done.stderr

    out = tmp_path / "gpu-rca-demo"
    assert json.loads((out / "analysis.json").read_text()) == analysis
    html = (out / "digest.html").read_text()
    assert 'id="causes"' in html and 'src="plots/overview-requests.png"' in html  # the folder's own files
    assert 'href="digest.md"' in html and 'href="digest.json"' in html and 'href="/digests"' not in html
    assert json.loads((out / "digest.json").read_text())["causes"][0]["cause"] == "gpu_oom_large_inputs"
    markdown = (out / "digest.md").read_text()
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert {"gpu_oom_large_inputs-metrics.png", "overview-requests.png"} <= set(plots)
    assert all((out / "plots" / name).read_bytes().startswith(PNG_MAGIC) for name in plots)
    assert all(f"](plots/{name})" in markdown for name in plots)
    assert "Cap `ddcolor.input_size` at 1024" in markdown  # the largest size that fitted, read from the spans
    assert sorted(p.name for p in (out / "lab").iterdir()) == [
        "kernel.log",
        "logs.otlp.jsonl",
        "metrics.prom.jsonl",
        "traces.otlp.jsonl",
        "truth.json",
    ]


def test_demo_prints_the_ranked_causes_and_stores_its_digest(tmp_path):
    from gpu_rca.correlate.digest import list_digests
    from gpu_rca.correlate.store import Store

    done = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "demo", "--scenario", "quiet-night", "--out", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Scenario quiet-night (seed ")
    assert "No cause ranked." in done.stdout
    with Store.open(tmp_path / "q" / "gpu-rca.duckdb", read_only=True) as store:
        [row] = list_digests(store.connection)
    assert row.trigger == "demo" and row.top_cause is None


def test_unknown_scenario_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "demo", "--scenario", "no-such-thing", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("Error: no scenario named 'no-such-thing'")
    assert done.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_ranking_holds_across_seeds(tmp_path, seed):
    from gpu_rca.commands.demo import run_demo

    result = run_demo("large-uploads-10am", tmp_path, seed=seed)
    assert result.seed == seed
    top = result.analysis["causes"][0]
    assert top["cause"] == "gpu_oom_large_inputs", result.analysis["causes"]
    assert _drivers(top)[A.DDCOLOR_INPUT_SIZE] == 1280
