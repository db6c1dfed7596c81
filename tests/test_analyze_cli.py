"""`gpu-rca analyze` and `gpu-rca explain` as a user runs them: real processes, real stores, real `serve`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gpu_rca import correlate
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from gpu_rca.schemas.timefmt import parse_time_ns
from tests.support.ranking import check_contract, incident_stores


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    return incident_stores(tmp_path_factory)


def gpu_rca(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_analyze_json_is_one_document_equal_to_the_python_api(incidents) -> None:
    db, _truth = incidents["lost-and-bug"]
    run = gpu_rca("analyze", "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    check_contract(document)
    assert document == correlate.analyze(db)
    assert f"window: {document['window']['start']} .. {document['window']['end']}" in run.stderr


def test_analyze_prints_a_ranked_table_and_the_window(incidents) -> None:
    db, truth = incidents["thermal"]
    run = gpu_rca("analyze", "--db", str(db), "--gpu", truth["drivers"]["gpu.uuid"])
    assert run.returncode == 0, run.stderr
    assert "thermal_throttling" in run.stdout and "Clocks cut for heat" in run.stdout
    assert "gpu-rca explain " in run.stdout
    assert run.stderr.startswith("window: ")


def test_analyze_takes_compound_durations(incidents) -> None:
    db, _ = incidents["quiet"]
    compound = gpu_rca("analyze", "--db", str(db), "--lookback", "1h30m", "--slow", "1s500ms", "--json")
    simple = gpu_rca("analyze", "--db", str(db), "--lookback", "90m", "--slow", "1500ms", "--json")
    assert compound.returncode == 0, compound.stderr
    assert json.loads(compound.stdout) == json.loads(simple.stdout)
    assert json.loads(compound.stdout) != json.loads(gpu_rca("analyze", "--db", str(db), "--json").stdout)
    # The lab's store lies in the past: the last 1h30m holds no spans, and the message says which window that was.
    asked_at = time.time()
    recent = gpu_rca("analyze", "--db", str(db), "--since", "1h30m")
    assert recent.returncode == 1, recent.stderr
    since = re.search(r"no inference spans between (\S+) and now", recent.stderr)
    assert since is not None, recent.stderr
    assert abs(parse_time_ns(since[1]) / 1e9 - (asked_at - 5400)) < 60
    bad = gpu_rca("analyze", "--db", str(db), "--since", "1x")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "Error: --since: '1x' is not RFC 3339, epoch seconds or a duration like 2h or 1h30m"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--db", "{missing}"], 1, "does not exist"),
        (["--db", "{db}", "--since", "yesterday-ish"], 2, "--since: 'yesterday-ish' is not RFC 3339"),
        (["--db", "{db}", "--since", "2025-01-06T10:00:00Z", "--until", "2025-01-06T09:00:00Z"], 2, "before --until"),
        (["--db", "{db}", "--slow", "fast"], 2, "--slow: 'fast' is not a duration, auto or off (use e.g. 5s or 1m30s)"),
        (["--db", "{db}", "--server", "http://127.0.0.1:9"], 2, "not both"),
        (
            ["--db", "{db}", "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02T00:00:00Z"],
            1,
            "no inference spans",
        ),
        (["--server", "http://127.0.0.1:9"], 1, "cannot reach gpu-rca serve"),
    ],
)
def test_analyze_errors_are_one_line_with_the_contract_exit_code(incidents, tmp_path, args, code, message) -> None:
    db, _ = incidents["quiet"]
    filled = [a.format(db=db, missing=tmp_path / "missing.duckdb") for a in args]
    run = gpu_rca("analyze", *filled, "--json")
    assert run.returncode == code, run.stderr
    assert run.stdout == ""
    lines = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_locked_store_says_so_and_points_at_server(incidents, tmp_path) -> None:
    db, _ = incidents["quiet"]
    copy = tmp_path / "held.duckdb"
    shutil.copy(db, copy)
    with Store(copy):
        run = gpu_rca("analyze", "--db", str(copy), "--json")
    assert run.returncode == 1
    assert "locked by another process" in run.stderr and "--server" in run.stderr


def test_unreachable_prometheus_is_a_warning_not_an_error(incidents, tmp_path) -> None:
    db, _ = incidents["thermal"]
    copy = tmp_path / "prom.duckdb"
    shutil.copy(db, copy)
    run = gpu_rca("analyze", "--db", str(copy), "--prometheus", "http://127.0.0.1:9", "--json")
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert any("Prometheus unreachable" in w for w in document["warnings"])
    assert document["causes"][0]["cause"] == "thermal_throttling"


def test_explain_tells_one_failed_request_and_its_cause(incidents) -> None:
    db, truth = incidents["thermal"]
    trace = correlate.analyze(db)["causes"][0]["example_traces"][0]
    run = gpu_rca("explain", trace, "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    story = json.loads(run.stdout)
    assert story["trace_id"] == trace
    assert story["span"]["failed"] and story["span"]["gpu_uuid"] == truth["drivers"]["gpu.uuid"]
    assert story["span"]["stamps"]["gpu.throttle.reasons"]
    assert story["metrics"] and all(p["metric"].startswith("DCGM_FI_") for p in story["metrics"])
    assert story["cause"]["cause"] == "thermal_throttling"
    text = gpu_rca("explain", trace, "--db", str(db))
    assert text.returncode == 0 and "cause: thermal_throttling" in text.stdout


@pytest.mark.parametrize(
    ("trace", "code", "message"),
    [
        ("0" * 32, 1, "unknown trace id"),
        ("not-a-trace", 2, "not a trace id"),
    ],
)
def test_explain_errors(incidents, trace, code, message) -> None:
    db, _ = incidents["quiet"]
    run = gpu_rca("explain", trace, "--db", str(db))
    assert run.returncode == code and message in run.stderr and run.stderr.count("Error:") == 1


def test_server_answers_the_same_json_as_the_cli(incidents, tmp_path) -> None:
    db, _ = incidents["lost-and-bug"]
    served = tmp_path / "served.duckdb"
    shutil.copy(db, served)
    local = gpu_rca("analyze", "--db", str(db), "--json")
    trace = json.loads(local.stdout)["causes"][0]["example_traces"][0]
    local_story = gpu_rca("explain", trace, "--db", str(db), "--json")
    with ServeProcess(served) as server:
        remote = gpu_rca("analyze", "--server", server.url, "--json")
        remote_story = gpu_rca("explain", trace, "--server", server.url, "--json")
        missing = gpu_rca("explain", "f" * 32, "--server", server.url)
        bad = gpu_rca(
            "analyze", "--server", server.url, "--since", "2025-01-06T10:00:00Z", "--until", "2025-01-06T10:00:01Z"
        )
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert json.loads(remote_story.stdout) == json.loads(local_story.stdout)
    assert missing.returncode == 1 and "unknown trace id" in missing.stderr
    assert bad.returncode == 1 and "no inference spans" in bad.stderr
