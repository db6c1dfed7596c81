"""Scenario files: strict validation, and the shipped set's coverage; each shipped scenario really fails."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections import Counter

import pytest

from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.scenario import (
    EXPECTED_ERROR_TYPES,
    load_scenario,
    parse_duration_ns,
    parse_rate_per_s,
    shipped_scenarios,
)
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas.causes import CAUSE_IDS
from gpu_rca.schemas.errors import InputError

EXPECTED_ERRORS = EXPECTED_ERROR_TYPES

MINIMAL = """
name: {name}
duration: 2m
fleet:
  - {{host: node-a, gpus: 1, model: {model}}}
{extra}
"""


def _write(tmp_path, name="s", model="L4", extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(MINIMAL.format(name=name, model=model, extra=extra))
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour: red", "top level: unknown key 'colour'"),
        ("workload: {rate: 2/s, burst: 3}", "workload: unknown key 'burst'"),
        ("faults:\n  - {kind: thermal, gpu: node-a/0, severity: 0.5, fan: 2}", "faults[0]: unknown key 'fan'"),
        ("faults:\n  - {kind: melt, gpu: node-a/0}", "faults[0].kind: unknown fault kind 'melt'"),
        ("faults:\n  - {kind: thermal, gpu: node-b/0}", "faults[0].gpu: no GPU 'node-b/0'"),
        ("faults:\n  - {kind: thermal, gpu: node-a/0, severity: 2}", "faults[0].severity: must be a number in 0..1"),
        ("faults:\n  - {kind: thermal}", "a thermal fault needs gpu"),
        ("workload: {rate: fast}", "workload.rate: rate must look like 2/s"),
        ("workload: {timeout: 30 seconds}", "workload.timeout"),
        ("workload: {model: {ddcolor_huge: 1}}", "unknown value 'ddcolor_huge'"),
        ("truth: {cause: bad_luck}", "truth.cause: unknown cause 'bad_luck'"),
    ],
)
def test_bad_scenarios_are_errors_naming_file_and_key(tmp_path, extra, message):
    path = _write(tmp_path, extra=extra)
    with pytest.raises(InputError) as error:
        load_scenario(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_name_must_equal_the_file_stem_and_ecc_needs_an_ecc_gpu(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(MINIMAL.format(name="s", model="L4", extra=""))
    with pytest.raises(InputError, match="must equal the file's stem 'other'"):
        load_scenario(path)
    path = _write(tmp_path, model="RTX-4090", extra="faults:\n  - {kind: ecc_uncorrectable, gpu: node-a/0}")
    with pytest.raises(InputError, match="RTX-4090, which has no ECC"):
        load_scenario(path)


def test_defaults_durations_and_rates():
    assert parse_duration_ns("250ms") == 250_000_000
    assert parse_duration_ns("2h") == 7200 * 10**9
    assert parse_rate_per_s("30/min") == 0.5
    assert parse_rate_per_s("7.2/h") == pytest.approx(0.002)


def test_cli_reports_a_bad_scenario_in_one_line(tmp_path):
    path = _write(tmp_path, extra="colour: red")
    done = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "lab", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: scenario ") and "unknown key 'colour'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_shipped_scenarios_cover_every_cause_twice_with_distractors_quiet_and_double_faults():
    names = shipped_scenarios()
    assert len(names) >= 30
    scenarios = [load_scenario(name) for name in names]
    causes: Counter[str] = Counter()
    models, kinds = set(), Counter()
    for scenario in scenarios:
        truth = scenario.truth
        assert truth is not None, f"{scenario.name} has no truth"
        causes.update([truth["cause"]] + [a["cause"] for a in truth["also"]])
        models.update(e["model"] for e in scenario.fleet)
        kinds.update(f.kind for f in scenario.faults)
    assert all(causes[c] >= 2 for c in CAUSE_IDS), causes
    assert causes[None] >= 1
    assert any(s.truth["also"] for s in scenarios)
    assert models == {"L4", "T4", "A100-40GB", "A100-80GB", "H100-80GB", "RTX-4090"}
    mild_heat = [f for s in scenarios for f in s.faults if f.kind == "thermal" and f.severity <= 0.3]
    assert mild_heat, "a harmless hot GPU distractor"
    article = load_scenario("large-uploads-10am")
    assert article.truth == {"cause": "gpu_oom_large_inputs", "drivers": {"ddcolor.input_size": 1280}, "also": []}


def _check_failures(name: str) -> None:
    run = run_scenario(load_scenario(name))
    failures = run.failures()
    truth = run.truth
    if truth["cause"] is None:
        assert not failures, f"{name}: a quiet scenario failed: {failures}"
        return
    for cause in [truth] + truth["also"]:
        expected = EXPECTED_ERRORS[cause["cause"]]
        if not set(failures) & expected:
            # A latency incident: clients wait, nothing errors, but some GPU's requests became far slower.
            assert _slowdown(run) >= 2.0, f"{name}: no {cause['cause']} failures in {failures}, and no slowdown"
            continue
        uuid = cause["drivers"].get(A.GPU_UUID)
        if uuid is not None:
            on_gpu = Counter(
                s.attributes.get(A.GPU_UUID) for s in run.inference_spans if s.attributes.get(A.ERROR_TYPE) in expected
            )
            assert on_gpu.most_common(1)[0][0] == uuid, f"{name}: failures are not concentrated on {uuid}"
        host = cause["drivers"].get(A.HOST_NAME)
        if host is not None:
            on_host = Counter(
                s.resource.attributes.get(A.HOST_NAME)
                for s in run.inference_spans
                if s.attributes.get(A.ERROR_TYPE) in expected
            )
            assert on_host.most_common(1)[0][0] == host, f"{name}: failures are not concentrated on {host}"
    if failures:
        main_types = EXPECTED_ERRORS[truth["cause"]]
        assert max(failures, key=failures.get) in main_types, (
            f"{name}: truth cause is not the most failures: {failures}"
        )


def _slowdown(run) -> float:
    """The largest factor by which a GPU's median latency in one minute exceeds its median before any fault."""
    offsets = [f.start_ns for f in run.scenario.faults]  # fault times are offsets from the scenario's start
    if not offsets:
        return 1.0
    first_fault_ns = run.scenario.start_ns + min(offsets)
    by_gpu: dict[str, list[tuple[int, int]]] = {}
    for span in run.inference_spans:
        by_gpu.setdefault(span.attributes.get(A.GPU_UUID), []).append((span.end_time, span.end_time - span.start_time))
    worst = 1.0
    for rows in by_gpu.values():
        before = [d for end, d in rows if end < first_fault_ns]
        if len(before) < 20:
            continue
        normal = statistics.median(before)
        minutes: dict[int, list[int]] = {}
        for end, d in rows:
            if end >= first_fault_ns:
                minutes.setdefault(end // 60_000_000_000, []).append(d)
        worst = max([worst] + [statistics.median(ds) / normal for ds in minutes.values() if len(ds) >= 10])
    return worst


@pytest.mark.parametrize("name", ["quiet-night", "oom-rtx4090-workstation", "kernel-fault-xid43-t4"])
def test_representative_shipped_scenarios_produce_their_truth_failures(name):
    _check_failures(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", shipped_scenarios())
def test_every_shipped_scenario_produces_its_truth_failures(name):
    _check_failures(name)
