"""A verb whose extra is not installed says which one to install, before doing anything.

The CLI runs in a real subprocess whose import system refuses the extra's modules (as a venv without them
would), not a mocked CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Runs the real CLI with the named top-level modules made unimportable.
BLOCKED_RUN = """
import sys
BLOCKED = set(sys.argv[1].split(","))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = ["gpu-rca", *sys.argv[2:]]
from gpu_rca.cli import main
main()
"""


def run_without(blocked: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, blocked, *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("analyze", ["--db", "store.duckdb"]),
        ("explain", ["0" * 32, "--db", "store.duckdb"]),
        ("digest", ["--db", "store.duckdb"]),
        ("serve", ["--db", "store.duckdb", "--port", "1"]),
        ("ingest", ["--db", "store.duckdb", "input.jsonl"]),
    ],
)
def test_a_correlate_verb_without_duckdb_names_the_correlate_extra(tmp_path: Path, verb: str, args: list[str]) -> None:
    (tmp_path / "input.jsonl").write_text("{}\n")
    run = run_without("duckdb", verb, *args, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == (
        f"Error: gpu-rca {verb} needs the correlate extra (duckdb not installed): pip install 'gpu-rca[correlate]'\n"
    )
    assert not (tmp_path / "store.duckdb").exists()


def test_demo_without_yaml_names_both_extras(tmp_path: Path) -> None:
    run = run_without("yaml", "demo", "--out", "out", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == (
        "Error: gpu-rca demo needs the lab and correlate extras (yaml not installed): "
        "pip install 'gpu-rca[lab,correlate]'\n"
    )
    assert not (tmp_path / "out").exists()


def test_lab_without_yaml_names_the_lab_extra(tmp_path: Path) -> None:
    run = run_without("yaml", "lab", "run", "thermal", "--out", "out", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "Error: gpu-rca lab needs the lab extra (yaml not installed): pip install 'gpu-rca[lab]'\n"
    assert not (tmp_path / "out").exists()


def test_exporter_and_help_work_without_the_extras(tmp_path: Path) -> None:
    run = run_without("duckdb,yaml", "exporter", "--help", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    help_run = run_without("duckdb,yaml", "--help", cwd=tmp_path)
    assert help_run.returncode == 0, help_run.stderr
    lines = {line.split()[0]: line for line in help_run.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert lines["analyze"].endswith("[correlate]")
    assert lines["demo"].endswith("[lab,correlate]")
    assert lines["lab"].endswith("[lab]")
    assert "[" not in lines["exporter"]
    assert "pip install 'gpu-rca[all]'" in help_run.stdout
