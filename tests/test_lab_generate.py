"""`gpu-rca lab generate`: same seed, same scenarios; every draw valid, with truth; all causes reachable."""

from __future__ import annotations

from collections import Counter

import pytest

from gpu_rca.cli import main
from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.generate import (
    CLASS_CYCLE,
    RANGES,
    SCOPED_CAUSES,
    TEST_FIRST,
    generate_scenario,
    generate_scenarios,
    scenario_class,
)
from gpu_rca.lab.scenario import EXPECTED_ERROR_TYPES, load_scenario
from gpu_rca.schemas.causes import CAUSE_IDS


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code


def test_same_seed_same_files_and_every_file_loads_with_truth(tmp_path):
    assert _cli(["lab", "generate", "--seed", "9", "--count", "12", "--out", str(tmp_path / "a")]) == 0
    assert _cli(["lab", "generate", "--seed", "9", "--count", "12", "--out", str(tmp_path / "b")]) == 0
    files = sorted((tmp_path / "a").iterdir())
    assert len(files) == 12
    for path in files:
        assert (tmp_path / "b" / path.name).read_bytes() == path.read_bytes()
        scenario = load_scenario(path)
        assert scenario.truth is not None
        assert scenario.truth["cause"] is None or scenario.truth["cause"] in CAUSE_IDS
    assert _cli(["lab", "generate", "--seed", "10", "--count", "1", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "gen-10-0000-error.yaml").read_text() != files[0].read_text()


def test_draws_reach_every_cause_distractors_and_second_faults():
    scenarios = generate_scenarios(1, 200)
    causes = Counter(s["truth"]["cause"] for s in scenarios)
    assert set(causes) == set(CAUSE_IDS) | {None}
    assert any(s["truth"].get("also") for s in scenarios)
    assert any(f["kind"] == "thermal" and f["severity"] <= 0.3 for s in scenarios for f in s["faults"])
    assert len({tuple(e["model"] for e in s["fleet"]) for s in scenarios}) > 20
    # A workload driver needs contrast: the mix must hold another value besides the one that fails.
    for s in scenarios:
        if "ddcolor.model" in s["truth"]["drivers"]:
            assert len(s["workload"]["model"]) > 1, s["name"]


def _struck(scenario: dict) -> set[str]:
    """The GPUs the primary fault strikes: the faults sharing the first fault's kind, window and severity."""
    first = scenario["faults"][0]
    return {
        f["gpu"]
        for f in scenario["faults"]
        if (f["kind"], f["start"], f.get("end")) == (first["kind"], first["start"], first.get("end"))
        and abs(f.get("severity", 0) - first.get("severity", 0)) <= 0.1  # not a benign anomaly of the same kind
    }


def test_heat_power_slowdown_and_co_tenants_strike_one_gpu_a_host_or_the_fleet_with_matching_truth():
    scopes: Counter[str] = Counter()
    for s in generate_scenarios(1, 400):
        if s["truth"]["cause"] not in SCOPED_CAUSES:
            continue
        struck, drivers = _struck(s), s["truth"]["drivers"]
        by_host = {e["host"]: {f"{e['host']}/{i}" for i in range(e["gpus"])} for e in s["fleet"]}
        if "gpu.uuid" in drivers:
            assert struck == {drivers["gpu.uuid"]}, s["name"]
            scopes["gpu"] += 1
        elif "host.name" in drivers:
            assert struck == by_host[drivers["host.name"]] and len(by_host) > 1, s["name"]
            scopes["host"] += 1
        else:
            assert drivers == {} and struck == set().union(*by_host.values()), s["name"]
            scopes["fleet"] += 1
    wide = (scopes["host"] + scopes["fleet"]) / sum(scopes.values())
    assert scopes["host"] and scopes["fleet"] and 0.3 < wide < 0.6, scopes


def test_a_fault_on_one_gpu_is_drawn_as_if_faults_never_spread(monkeypatch):
    usual = generate_scenarios(5, 60)
    monkeypatch.setitem(RANGES, "fault_scope", {"gpu": 1.0})
    narrow = generate_scenarios(5, 60)
    single = [u for u in usual if "gpu.uuid" in u["truth"]["drivers"] or u["truth"]["cause"] not in SCOPED_CAUSES]
    assert len(single) < len(usual)
    for scenario in single:
        assert scenario == narrow[int(scenario["name"].split("-")[2])]


def test_a_generated_scenario_produces_its_truth_failures(tmp_path):
    (path,) = [p for p in sorted(_write(tmp_path)) if "0000-error" in p.name]
    run = run_scenario(load_scenario(path))
    failures = run.failures()
    expected = EXPECTED_ERROR_TYPES[run.truth["cause"]]
    assert max(failures, key=failures.get) in expected


def _write(tmp_path):
    from gpu_rca.lab.generate import write_generated

    return write_generated(3, 4, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(12))
def test_generated_scenarios_fail_as_their_truth_says(index):
    from collections import Counter

    from gpu_rca.lab.scenario import parse_scenario
    from gpu_rca.schemas import attributes as A

    scenario = generate_scenario(7, index)
    run = run_scenario(parse_scenario(scenario, scenario["name"]))
    failures, cause = run.failures(), run.truth["cause"]
    if cause is None or scenario_class(index) in ("latency", "moderate"):
        assert not failures  # quiet, or clients patient enough that nothing errors
        return
    assert max(failures, key=failures.get) in EXPECTED_ERROR_TYPES[cause]
    failed = [s for s in run.spans if s.attributes.get(A.ERROR_TYPE) in EXPECTED_ERROR_TYPES[cause]]
    uuid = run.truth["drivers"].get(A.GPU_UUID)
    if uuid is not None:
        on_gpu = Counter(s.attributes[A.GPU_UUID] for s in failed)
        assert on_gpu.most_common(1)[0][0] == uuid
    host = run.truth["drivers"].get(A.HOST_NAME)
    if host is not None:
        on_host = Counter(s.resource.attributes[A.HOST_NAME] for s in failed)
        assert on_host.most_common(1)[0][0] == host


def test_classes_deadlines_fleets_and_benign_anomalies_are_drawn_widely():
    scenarios = generate_scenarios(1, 200)
    by_class = Counter(s["name"].rsplit("-", 1)[1] for s in scenarios)
    assert by_class == {k: 200 * CLASS_CYCLE.count(k) // len(CLASS_CYCLE) for k in by_class}
    assert by_class["quiet"] >= 40 and by_class["latency"] and by_class["moderate"]
    for s in scenarios:
        kind, timeout = s["name"].rsplit("-", 1)[1], int(s["workload"]["timeout"].rstrip("s"))
        assert (s["truth"]["cause"] is None) == (kind == "quiet"), s["name"]
        if kind in ("latency", "moderate"):
            assert timeout >= RANGES["patient_timeout_s"][0], s["name"]  # clients wait: nothing errors
        if kind == "moderate":  # 1.5-2x: clocks or CPU time at 50-67 %
            assert all(0.33 <= f["severity"] <= 0.5 for f in s["faults"][:1]), s["name"]
    quiet = [s for s in scenarios if s["truth"]["cause"] is None]
    ramps = [s for s in quiet if sum(f["kind"] == "traffic_shift" and "input_size" not in f for f in s["faults"]) >= 3]
    larger = [s for s in quiet if any(f["kind"] == "traffic_shift" and "input_size" in f for f in s["faults"])]
    assert len(ramps) >= 10 and len(larger) >= 5
    # An idle power cap (the limit lowered 12-24 %) beside another incident; one-host and five-host fleets.
    assert any(f["kind"] == "power_cap" and f["severity"] <= 0.4 for s in scenarios for f in s["faults"])
    assert {len(s["fleet"]) for s in scenarios} >= {1, 5}
    assert any(len({e["model"] for e in s["fleet"]}) > 1 for s in scenarios)
    assert any(s["truth"]["cause"] == "host_bottleneck" and not s["name"].endswith("-error") for s in scenarios)


def test_the_test_range_is_other_scenarios_than_the_development_range():
    dev = generate_scenarios(1, 20)
    test = generate_scenarios(1, 20, first=TEST_FIRST)
    assert test[0]["name"] == f"gen-1-{TEST_FIRST}-error"
    assert not {str(s["faults"]) + s["start"] for s in dev} & {str(s["faults"]) + s["start"] for s in test}
    assert [s["name"].rsplit("-", 1)[1] for s in test] == [scenario_class(i) for i in range(20)]


def _leak_draws(seed: int, count: int) -> list[dict]:
    return [s for s in generate_scenarios(seed, count) if s["truth"]["cause"] == "gpu_memory_leak"]


def test_a_generated_leak_runs_its_course_inside_the_window():
    """The truth names a leak only where the leak can exhaust its GPU: requests sent x bytes kept >= memory."""
    from gpu_rca.lab.faults import LEAK_BYTES_PER_REQUEST
    from gpu_rca.lab.profiles import PROFILES

    draws = _leak_draws(5, 600)
    assert len(draws) >= 20
    short = 0
    for s in draws:
        (leak,) = [f for f in s["faults"] if f["kind"] == "memory_leak"]
        host = leak["gpu"].rpartition("/")[0]
        memory = PROFILES[next(e["model"] for e in s["fleet"] if e["host"] == host)].memory_total_bytes
        # The leak sits on a GPU with the least memory of the fleet.
        assert memory == min(PROFILES[e["model"]].memory_total_bytes for e in s["fleet"])
        n_gpus = sum(e["gpus"] for e in s["fleet"])
        span_s = (int(s["duration"][:-1]) - int(leak["start"][:-1])) * 60
        sent = float(s["workload"]["rate"][:-2]) / n_gpus * span_s
        short += sent * leak["severity"] * LEAK_BYTES_PER_REQUEST < memory
    assert short / len(draws) <= 0.08  # the documented few at the 0.8-of-capacity cap


def test_a_generated_leak_ooms_in_the_lab():
    from gpu_rca.lab.scenario import parse_scenario

    scenario = next(s for s in generate_scenarios(20260302, 20) if s["truth"]["cause"] == "gpu_memory_leak")
    run = run_scenario(parse_scenario(scenario, scenario["name"]))
    assert run.failures().get("cuda_oom", 0) >= 20


def test_a_quiet_window_never_loads_the_fleet_past_its_capacity():
    """Ramp steps, a larger-input mix and a traffic bump overlap without overloading: quiet means quiet."""
    from gpu_rca.lab.generate import _mean_work_s
    from gpu_rca.lab.profiles import PROFILES

    quiet = [s for s in generate_scenarios(11, 400) if s["truth"]["cause"] is None]
    assert len(quiet) >= 80
    for s in quiet:
        n_gpus = sum(e["gpus"] for e in s["fleet"])
        slowest = min(PROFILES[e["model"]].relative_speed for e in s["fleet"])
        models = s["workload"]["model"]
        for minute in range(int(s["duration"][:-1])):
            rate, mix = float(s["workload"]["rate"][:-2]), s["workload"]["input_size"]
            for f in s["faults"]:  # later traffic shifts win, field by field (lab/faults.py)
                if f["kind"] == "traffic_shift" and int(f["start"][:-1]) <= minute < int(f["end"][:-1]):
                    rate, mix = float(f["rate"][:-2]), f.get("input_size", mix)
            assert rate * _mean_work_s(mix, models) / (slowest * n_gpus) <= 0.81, (s["name"], minute)
