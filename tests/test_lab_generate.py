"""`gpu-rca lab generate`: same seed, same scenarios; every draw valid, with truth; all causes reachable."""

from __future__ import annotations

from collections import Counter

import pytest

from gpu_rca.cli import main
from gpu_rca.lab.engine import run_scenario
from gpu_rca.lab.generate import RANGES, SCOPED_CAUSES, generate_scenario, generate_scenarios
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
    assert (tmp_path / "c" / "gen-10-0000.yaml").read_text() != files[0].read_text()


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
    """The GPUs the primary fault strikes: the faults sharing the first fault's kind, window and severity.

    (Slot to slot, heat varies by ±0.03; a mild distractor of the same kind may share the window by chance.)
    """
    first = scenario["faults"][0]
    return {
        f["gpu"]
        for f in scenario["faults"]
        if (f["kind"], f["start"], f.get("end")) == (first["kind"], first["start"], first.get("end"))
        and abs(f.get("severity", 0.5) - first.get("severity", 0.5)) <= 0.05
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
        assert scenario == narrow[int(scenario["name"].rsplit("-", 1)[1])]


def test_a_generated_scenario_produces_its_truth_failures(tmp_path):
    (path,) = [p for p in sorted(_write(tmp_path)) if "0002" in p.name]
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
    if cause is None:
        assert not failures
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
