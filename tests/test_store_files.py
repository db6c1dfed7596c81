"""Store files taken as they are, through the CLI: a store without its tables is refused at start, a read-only
file or folder is read (analyze, explain, digest) and refused for writing (ingest, serve) as read-only, and an
empty file becomes a store only with `--init`. Each refusal is one `Error:` line with the contract's exit code,
and the file is byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
START_NS = 1_767_225_600 * 10**9
SINCE, UNTIL = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
FAILED_TRACE = f"{1:032x}"


def gpu_rca(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_error(run: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == code, run.stderr
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]], run.stderr
    assert "Traceback" not in run.stderr
    for word in words:
        assert word in lines[-1], run.stderr


def write_traces(path: Path) -> Path:
    """30 inference spans as OTLP JSON; every third failed."""
    spans = []
    for index in range(30):
        start = START_NS + index * 10**9
        failed = index % 3 == 0
        attributes = {"gpu.telemetry.source": "simulated", "gpu.uuid": "GPU-0a0a0a0a-1111-2222-3333-444455556666"}
        attributes["ddcolor.model"] = "large" if failed else "tiny"
        spans.append(
            {
                "traceId": f"{index + 1:032x}",
                "spanId": f"{index + 1:016x}",
                "name": "ddcolor.inference",
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(start + 100_000_000),
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
                "status": {"code": 2 if failed else 1},
            }
        )
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "ddcolor"}}]}
    document = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}
    path.write_text(json.dumps(document) + "\n")
    return path


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_traces(tmp_path_factory.mktemp("traces") / "traces.otlp.jsonl")


@pytest.fixture(scope="module")
def made_store(tmp_path_factory: pytest.TempPathFactory, traces: Path) -> Path:
    db = tmp_path_factory.mktemp("store") / "made.duckdb"
    run = gpu_rca("ingest", "--db", str(db), str(traces))
    assert run.returncode == 0, run.stderr
    return db


def read_verbs(db: Path) -> dict[str, list[str]]:
    return {
        "analyze": ["analyze", "--db", str(db), "--since", SINCE, "--until", UNTIL],
        "explain": ["explain", FAILED_TRACE, "--db", str(db)],
        "digest": ["digest", "--db", str(db), "--since", SINCE, "--until", UNTIL],
    }


def write_verbs(db: Path, traces: Path) -> dict[str, list[str]]:
    return {"ingest": ["ingest", "--db", str(db), str(traces)], "serve": ["serve", "--db", str(db), "--port", "0"]}


def test_a_store_without_its_tables_is_refused_by_every_verb(tmp_path: Path, made_store: Path, traces: Path) -> None:
    db = tmp_path / "hollow.duckdb"
    db.write_bytes(made_store.read_bytes())
    with duckdb.connect(str(db)) as con:  # still says app = gpu-rca in schema_meta
        con.execute("DROP TABLE spans")
        con.execute("DROP TABLE logs")
    before = digest_of(db)
    for verb, args in {**write_verbs(db, traces), **read_verbs(db)}.items():
        run = gpu_rca(*args)
        assert_one_error(run, 1, "lacks its tables", "spans", "logs")
        assert digest_of(db) == before, verb
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hollow.duckdb"]  # no WAL left behind


@pytest.fixture
def read_only_file(tmp_path: Path, made_store: Path) -> Iterator[Path]:
    db = tmp_path / "ro.duckdb"
    db.write_bytes(made_store.read_bytes())
    db.chmod(0o444)
    yield db
    db.chmod(0o644)


@pytest.fixture
def read_only_folder(tmp_path: Path, made_store: Path) -> Iterator[Path]:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "store.duckdb"
    db.write_bytes(made_store.read_bytes())
    folder.chmod(0o555)
    yield db
    folder.chmod(0o755)


@pytest.mark.parametrize("which", ["read_only_file", "read_only_folder"])
def test_a_read_only_store_is_read_and_refused_for_writing(
    request: pytest.FixtureRequest, which: str, traces: Path
) -> None:
    db: Path = request.getfixturevalue(which)
    before = digest_of(db)
    for verb, args in write_verbs(db, traces).items():
        run = gpu_rca(*args)
        assert_one_error(run, 1, "is read-only")
        assert digest_of(db) == before, verb
    runs = {verb: gpu_rca(*args) for verb, args in read_verbs(db).items()}
    for verb, run in runs.items():
        assert run.returncode == 0, (verb, run.stderr)
        assert "Error" not in run.stderr, (verb, run.stderr)
    assert "10 of 30 inference requests failed" in runs["analyze"].stdout
    assert FAILED_TRACE in runs["explain"].stdout
    assert runs["digest"].stdout.startswith("# GPU failure digest")
    assert "is read-only" in runs["digest"].stderr and "not stored" in runs["digest"].stderr
    assert digest_of(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]


def test_an_empty_file_becomes_a_store_only_with_init(tmp_path: Path, traces: Path) -> None:
    db = tmp_path / "empty.duckdb"
    db.touch()
    for verb, args in {**write_verbs(db, traces), **read_verbs(db)}.items():
        run = gpu_rca(*args)
        assert_one_error(run, 1, "empty file (0 bytes)", "--init")
        assert db.stat().st_size == 0, verb
    usage = gpu_rca("analyze", "--db", str(db), "--init")  # --init makes stores: only ingest and serve have it
    assert usage.returncode == 2, usage.stderr
    assert db.stat().st_size == 0
    run = gpu_rca("ingest", "--init", "--db", str(db), str(traces))
    assert run.returncode == 0, run.stderr
    assert "10 of 30 inference requests failed" in gpu_rca(*read_verbs(db)["analyze"]).stdout
