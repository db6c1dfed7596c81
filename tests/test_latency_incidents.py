"""Latency incidents (issue 14): slow requests found without a threshold, through the CLI and `serve`'s API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.ranking.evidence import numbers_missing_from_evidence
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.outputs import write_run
from gpu_rca.lab.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def gpu_rca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=300)


def _store(root: Path, name: str) -> tuple[Path, dict[str, Any]]:
    files = root / name
    write_run(run_scenario(load_scenario(SCENARIOS / f"{name}.yaml"), sample_hz=1.0), files)
    db = root / f"{name}.duckdb"
    with Store(db) as store:
        ingest_paths(store, [files], progress=False)
    return db, json.loads((files / "truth.json").read_text())


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("latency")
    names = ("latency-thermal-fan-l4", "latency-saturation-burst", "latency-host-cpu-starvation", "quiet-night")
    return {name: _store(root, name) for name in names}


def analyze(db: Path, *extra: str) -> dict[str, Any]:
    run = gpu_rca("analyze", "--db", str(db), "--json", *extra)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_latency_only_thermal_incident_is_ranked_without_slow(stores) -> None:
    db, truth = stores["latency-thermal-fan-l4"]
    document = analyze(db)
    assert document["spans"]["slow"] > 0 and document["spans"]["failed"] >= document["spans"]["slow"]
    top = document["causes"][0]
    assert top["cause"] == "thermal_throttling"
    assert top["drivers"][0] == {**top["drivers"][0], "attribute": "gpu.uuid", "value": truth["drivers"]["gpu.uuid"]}
    assert "GPU time" in top["summary"] and "% of max" in top["summary"]
    assert numbers_missing_from_evidence(top) == []
    # The window covers the slowdown as it covers failures: it starts before the first slow request.
    assert document["window"]["start"] < "2025-01-06T09:42:00Z"


def test_saturation_summary_splits_the_latency(stores) -> None:
    db, _ = stores["latency-saturation-burst"]
    top = analyze(db)["causes"][0]
    assert top["cause"] == "compute_saturation"
    assert "latency split: queue time" in top["summary"]
    assert numbers_missing_from_evidence(top) == []


def test_a_host_bottleneck_is_found_from_child_spans(stores) -> None:
    db, truth = stores["latency-host-cpu-starvation"]
    top = analyze(db)["causes"][0]
    assert top["cause"] == "host_bottleneck" and top["hosts"] == [truth["drivers"]["host.name"]]
    assert "other spans of the trace" in top["summary"]
    assert numbers_missing_from_evidence(top) == []


def test_slow_off_and_a_fixed_threshold_behave_as_documented(stores) -> None:
    db, _ = stores["latency-thermal-fan-l4"]
    off = analyze(db, "--slow", "off")
    assert off["spans"]["slow"] == 0 and off["spans"]["failed"] == 0 and off["causes"] == []
    fixed = analyze(db, "--slow", "5s")
    assert fixed["spans"]["slow"] == fixed["spans"]["failed"] > 0
    assert fixed["spans"]["slow"] != analyze(db)["spans"]["slow"]
    bad = gpu_rca("analyze", "--db", str(db), "--slow", "sometimes")
    assert bad.returncode == 2 and bad.stderr.count("Error:") == 1


def test_ordinary_tail_latency_has_no_cause(stores) -> None:
    db, _ = stores["quiet-night"]
    document = analyze(db)
    assert document["spans"]["slow"] == 0 and document["causes"] == []


def test_the_api_takes_the_same_slow_values(stores, tmp_path) -> None:
    db, _ = stores["latency-thermal-fan-l4"]
    served = tmp_path / "served.duckdb"
    shutil.copy(db, served)
    local = {value: analyze(db, "--slow", value) for value in ("auto", "off")}
    with ServeProcess(served) as server:
        remote = {}
        for value in ("auto", "off"):
            with urllib.request.urlopen(f"{server.url}/api/analyze?slow={value}", timeout=120) as response:
                remote[value] = json.loads(response.read())
    assert remote == local
    assert remote["auto"]["causes"][0]["cause"] == "thermal_throttling"


@pytest.mark.parametrize(
    ("name", "part"), [("latency-thermal-fan-l4", "GPU time"), ("latency-saturation-burst", "queue time")]
)
def test_explain_says_how_slow_a_request_was_and_which_part_grew(stores, name, part) -> None:
    db, _ = stores[name]
    trace = analyze(db)["causes"][0]["example_traces"][0]
    run = gpu_rca("explain", trace, "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    story = json.loads(run.stdout)
    assert story["span"]["slow"] is True
    latency = story["latency"]
    assert latency["duration_ms"] == pytest.approx(story["span"]["duration_ms"], abs=0.1)
    assert latency["factor"] == pytest.approx(latency["duration_ms"] / latency["baseline_median_ms"], rel=0.01)
    assert latency["duration_ms"] > latency["baseline_p99_ms"] > latency["baseline_median_ms"] > 0
    assert latency["comparable_requests"] >= 20
    assert latency["baseline_end"] < story["span"]["start"]  # the baseline is from before the slowdown
    assert part in latency["grew"]
    grown = next(p for p in latency["parts"] if p["part"] == part)
    assert grown["ms"] > grown["baseline_ms"] and grown["change"] == "grew"
    text = gpu_rca("explain", trace, "--db", str(db))
    assert text.returncode == 0, text.stderr
    assert "was SLOW" in text.stdout and "comparable requests before it" in text.stdout
    assert f"{part} {grown['baseline_ms']:.0f} ms → {grown['ms']:.0f} ms" in " ".join(text.stdout.split())


def test_explain_an_ordinary_request_against_comparable_requests(stores) -> None:
    db, _ = stores["quiet-night"]
    with Store(db, read_only=True) as store:
        trace = store.connection.execute(
            "SELECT trace_id FROM spans WHERE is_inference ORDER BY end_ns DESC LIMIT 1"
        ).fetchone()[0]
    story = json.loads(gpu_rca("explain", trace, "--db", str(db), "--json").stdout)
    assert story["span"]["slow"] is False and story["span"]["failed"] is False
    latency = story["latency"]
    assert latency["comparable_requests"] >= 20 and latency["factor"] < 2.5


def test_a_latency_incident_survives_tail_sampled_traces(stores, tmp_path: Path) -> None:
    """Thin traffic widens the cells: a tenth of the traces (the Collector's usual tail sampling) still shows
    the slowdown, with and without a `--gpu` filter."""
    from gpu_rca.bench.perturb import perturbed

    db, truth = stores["latency-thermal-fan-l4"]
    files = db.parent / "latency-thermal-fan-l4"
    sampled = tmp_path / "sampled"
    sampled.mkdir()
    texts = {p.name: p.read_text(encoding="utf-8") for p in files.iterdir()}
    for name, text in perturbed(texts, "tail_sampled", "latency-thermal-fan-l4").items():
        (sampled / name).write_text(text, encoding="utf-8")
    thin = tmp_path / "sampled.duckdb"
    with Store(thin) as store:
        ingest_paths(store, [sampled], progress=False)
    fan_gpu = truth["drivers"]["gpu.uuid"]
    for extra in ((), ("--gpu", fan_gpu)):
        document = analyze(thin, *extra)
        assert document["spans"]["total"] < analyze(db, *extra)["spans"]["total"] / 5
        assert document["spans"]["slow"] > 0
        assert document["causes"][0]["cause"] == "thermal_throttling"


def test_a_busy_hours_momentary_queue_is_not_a_latency_incident(tmp_path: Path) -> None:
    """A quiet window whose diurnal peak queues a handful of requests (0.1 % of them) does not move the p99:
    latency detection marks none slow, and nothing is ranked (docs/ranking.md, `MIN_SLOW_SHARE`)."""
    from gpu_rca.lab.generate import generate_scenario
    from gpu_rca.lab.scenario import parse_scenario

    scenario = generate_scenario(20260302, 106)  # development range: a ramp to 0.8 of capacity
    assert scenario["truth"]["cause"] is None
    files = tmp_path / "files"
    write_run(run_scenario(parse_scenario(scenario, scenario["name"]), sample_hz=1.0), files)
    db = tmp_path / "quiet.duckdb"
    with Store(db) as store:
        ingest_paths(store, [files], progress=False)
    document = analyze(db)
    assert document["spans"]["slow"] == 0
    assert document["causes"] == []
