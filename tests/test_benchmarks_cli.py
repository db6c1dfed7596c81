"""The ingest benchmarks run from their command line at tiny sizes and print the JSON of docs/contracts.md §8.

Only the shape and the bookkeeping are checked (every kind measured, every span stored, ratios finite and
positive): how fast anything is belongs to the benchmarks themselves, never to a test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*argv: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *argv, "--repeats", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _positive_finite(values: dict) -> None:
    for name, value in values.items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, value)


def test_duckdb_insert_measures_every_variant_against_the_in_memory_baseline() -> None:
    report = _bench("duckdb-insert", "--spans", "700")
    assert report["name"] == "duckdb-insert"
    results = report["results"]
    assert results["spans"] == 700 and results["columns"] >= 50
    variants = ("memory_key_4096", "file_key_4096", "file_key_512", "file_key_512_threads1", "file_nokey_512")
    assert set(report["ratios"]) == {f"{name}_vs_memory_nokey_4096" for name in variants}
    _positive_finite(report["ratios"])
    _positive_finite({k: v for k, v in results.items() if k.endswith(("_us_per_row", "_rows_per_s"))})


def test_ingest_reports_the_store_floor_beside_parsing_and_the_server() -> None:
    report = _bench("ingest", "--requests", "3", "--spans-per-request", "40", "--group", "2")
    results = report["results"]
    assert results["spans"] == 120 and results["group"] == 2
    for kind in ("parse_only", "parse_only_no_cache", "store_direct", "store_only", "store_only_grouped", "server"):
        _positive_finite({kind: results[f"{kind}_spans_per_s"], f"{kind} cpu": results[f"{kind}_cpu_spans_per_s"]})
    assert set(report["ratios"]) == {"server_vs_parse_only", "server_vs_store_direct", "server_vs_store_only_cpu"}
    _positive_finite(report["ratios"])


def test_sampler_reports_the_cpu_share_with_the_lab_and_the_modelled_nvml() -> None:
    report = _bench("sampler", "--gpus", "2", "--hz", "50", "--seconds", "0.3", "--ticks", "5")
    assert report["name"] == "sampler"
    results = report["results"]
    assert results["gpus"] == 2 and results["nvml_call_us"] > 0
    _positive_finite(
        {key: results[key] for key in ("lab_cpu_share_pct", "modelled_cpu_share_pct", "modelled_nvml_calls_per_s")}
    )
    assert results["lab_samples_per_s"] > 0 and results["sample_once_us_per_sample"] > 0
    _positive_finite(report["ratios"])


def test_time_to_digest_times_a_burst_from_the_live_fleet_to_the_page_and_the_webhook() -> None:
    report = _bench("time-to-digest", "--bursts", "1", "--warmup", "3", "--timeout", "60")
    assert report["name"] == "time-to-digest"
    results = report["results"]
    assert results["bursts"] == 1 and results["completed"] == 1, results["per_burst"]
    (burst,) = results["per_burst"]
    assert burst["first_to_page_s"] > 0 and burst["first_to_webhook_s"] > 0
    assert burst["first_to_qualifying_s"] >= 0
    assert isinstance(results["within_10_s"], bool)


def test_analyze_runs_gpu_rca_beside_its_hand_written_and_pandas_peers() -> None:
    report = _bench("analyze", "--spans", "20000", "--samples", "100000")
    assert report["name"] == "analyze"
    results = report["results"]
    assert set(results) == {"gpu_rca", "gpu_rca_slow_off", "numpy", "pandas"}
    for kind in results.values():
        _positive_finite({k: kind[k] for k in ("median_wall_s", "median_process_wall_s", "max_peak_rss_mib")})
    numpy_answer, pandas_answer = results["numpy"]["answer"], results["pandas"]["answer"]
    assert numpy_answer["spans"] == pandas_answer["spans"]  # the same spans in the same window
    assert numpy_answer["top_gpu"] == pandas_answer["top_gpu"] == "GPU-bench-0005"  # the hot GPU
    assert numpy_answer["top_window"]["temperature_max"] >= 90  # its failed spans ran hot
    _positive_finite(report["ratios"])
