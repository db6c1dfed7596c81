"""Output a pipeline can use: `ingest --json`, a reader that stops early, `lab list`, and a near-miss name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_rca.lab.scenario import shipped_scenarios
from tests.support.otlp import START_NS, traces_line


def gpu_rca(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("incident")
    (folder / "traces.otlp.jsonl").write_text(
        traces_line(traces=3, failed=True) + "\n" + traces_line(traces=2, inference=False, start_ns=START_NS + 10**12)
    )
    cut = traces_line(start_ns=START_NS + 2 * 10**12)
    (folder / "more.otlp.jsonl").write_text(traces_line(start_ns=START_NS + 3 * 10**12) + "\n" + cut[:100])
    (folder / "README.md").write_text("# notes\n")
    return folder


def test_ingest_json_is_one_document_on_stdout(incident: Path, tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    run = gpu_rca("ingest", "--db", str(db), "--json", str(incident))
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    files = {Path(f["path"]).name: f for f in document["files"]}
    assert files["README.md"]["status"] == "skipped" and files["README.md"]["reason"]
    assert files["traces.otlp.jsonl"] | {"path": None} == {
        "path": None,
        "status": "ingested",
        "format": "otlp-json",
        "compression": None,
        "kind": "spans",
        "stored": 10,
        "already_stored": 0,
        "rejected": 0,
        "skipped": {},
        "reason": None,
        "notes": [],
        "warnings": [],
    }
    assert files["more.otlp.jsonl"]["stored"] == 2
    cut = "line 2 is cut off (no final newline, as a writer that stopped mid-line leaves it): not stored, the lines before it are"
    assert files["more.otlp.jsonl"]["warnings"] == [cut]
    assert (document["ingested"], document["skipped"], document["failed"]) == (2, 1, 0)
    assert document["stored"] == {"spans": 12}
    assert document["traces_without_inference_span"] == 2
    assert document["warnings"] == [
        f"{incident / 'more.otlp.jsonl'}: {cut}",
        "2 traces have no inference span: instrument with gpu_rca.collector or set the attribute gpu.telemetry.source",
    ]
    assert "gpu-rca ingest" in run.stderr  # the human table stays on stderr

    again = gpu_rca("ingest", "--db", str(db), "--json", str(incident / "traces.otlp.jsonl"))
    assert json.loads(again.stdout)["files"][0]["already_stored"] == 10


def test_analyze_into_a_closed_pipe_exits_quietly(incident: Path, tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    assert gpu_rca("ingest", "--db", str(db), str(incident)).returncode == 0
    for args in (["analyze", "--db", str(db)], ["analyze", "--db", str(db), "--json"]):
        # The reader is gone before gpu-rca writes: as `gpu-rca analyze | head -1` once head has its line.
        process = subprocess.Popen(
            [sys.executable, "-m", "gpu_rca", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        err = process.stderr.read()
        process.stderr.close()
        assert process.wait(timeout=120) == 0, err
        assert "Traceback" not in err and "BrokenPipe" not in err and "Error" not in err


def test_analyze_piped_into_head_prints_its_first_line(incident: Path, tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    assert gpu_rca("ingest", "--db", str(db), str(incident)).returncode == 0
    run = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{sys.executable}" -m gpu_rca analyze --db "{db}" --json | head -1'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "{\n"
    assert "Traceback" not in run.stderr


def test_lab_list_shows_every_shipped_scenario_with_a_line_about_it() -> None:
    run = gpu_rca("lab", "list")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == shipped_scenarios()
    assert all(len(line.split(None, 1)) == 2 for line in lines)
    assert any(
        line.startswith("gpu-lost-l4 ")
        and line.endswith("An L4 falls off the bus (XID 79): everything routed to it fails, the others keep serving.")
        for line in lines
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lab", "run", "gpu-lost-l5", "--out", "out"], "no scenario named 'gpu-lost-l5'; did you mean 'gpu-lost-l4'?"),
        (
            ["demo", "--scenario", "large-uploads", "--out", "out"],
            "no scenario named 'large-uploads'; did you mean 'large-uploads-10am'?",
        ),
        (["lab", "run", "qqqqqq", "--out", "out"], "no scenario named 'qqqqqq'"),
    ],
)
def test_an_unknown_scenario_suggests_the_nearest_and_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    run = gpu_rca(*args, cwd=tmp_path)
    count = len(shipped_scenarios())
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        f"Error: {message} (`gpu-rca lab list` shows the {count} shipped ones; or give a YAML file path)\n"
    )
    assert not (tmp_path / "out").exists()
