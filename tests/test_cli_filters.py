"""A filter that matches nothing says so and lists the known values; an empty store says it is empty."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from gpu_rca.cli import main
from gpu_rca.correlate.store import Store
from tests.support.otlp import traces_line

GPU_A = "GPU-5e2b1c3a-0000-4000-8000-00000000000a"
GPU_B = "GPU-5e2b1c3a-0000-4000-8000-00000000000b"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("filters")
    lines = [
        traces_line(service="ddcolor", host="node-a", gpu=GPU_A, traces=3, failed=True),
        traces_line(service="upscale", host="node-b", gpu=GPU_B, traces=3),
    ]
    (folder / "traces.otlp.jsonl").write_text("\n".join(lines) + "\n")
    db = folder / "store.duckdb"
    with pytest.raises(SystemExit) as caught:
        main(["ingest", "--db", str(db), str(folder / "traces.otlp.jsonl")])
    assert caught.value.code == 0
    return db


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--host", "node-zzz", "no inference spans on host 'node-zzz'; known hosts: node-a, node-b"),
        ("--service", "nope", "no inference spans of service 'nope'; known services: ddcolor, upscale"),
        ("--gpu", "GPU-0", f"no inference spans on GPU 'GPU-0'; known GPUs: {GPU_A}, {GPU_B}"),
    ],
)
def test_analyze_filter_that_matches_nothing_lists_known_values(capsys, store, flag, value, message) -> None:
    code, out, err = cli(capsys, "analyze", "--db", str(store), flag, value)
    assert (code, out, err) == (2, "", f"Error: {message}\n")


def test_filters_that_match_only_apart_say_so(capsys, store) -> None:
    code, out, err = cli(capsys, "analyze", "--db", str(store), "--host", "node-a", "--service", "upscale", "--json")
    assert (code, out) == (2, "")
    assert err == (
        "Error: no inference spans of service 'upscale' and on host 'node-a' together; each matches spans alone\n"
    )


def test_digest_gpu_that_matches_nothing_stores_no_digest(capsys, store) -> None:
    code, out, err = cli(capsys, "digest", "--db", str(store), "--gpu", "GPU-0")
    assert (code, out) == (2, "")
    assert err == f"Error: no inference spans on GPU 'GPU-0'; known GPUs: {GPU_A}, {GPU_B}\n"
    con = duckdb.connect(str(store), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert "digests" not in tables or con.execute("SELECT count(*) FROM digests").fetchone() == (0,)
    finally:
        con.close()


def test_a_matching_filter_still_analyses(capsys, store) -> None:
    code, out, err = cli(capsys, "analyze", "--db", str(store), "--host", "node-a", "--json")
    assert code == 0, err
    assert '"failed": 3' in out


def test_an_empty_store_is_a_different_message(capsys, tmp_path) -> None:
    db = tmp_path / "empty.duckdb"
    with Store.open(db):
        pass
    for args in (["analyze", "--db", str(db)], ["analyze", "--db", str(db), "--host", "node-zzz"]):
        code, out, err = cli(capsys, *args)
        assert (code, out) == (1, "")
        assert err == "Error: the store holds no inference spans yet: ingest files or point serve at it\n"
