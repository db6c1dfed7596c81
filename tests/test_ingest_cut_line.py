"""A JSON-lines file whose last line alone is cut off stores its complete lines with a warning; --strict
makes it an error; any other malformed line still stores nothing of the file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from gpu_rca.cli import main
from tests.support.otlp import START_NS, traces_line

CUT = "line 3 is cut off (no final newline, as a writer that stopped mid-line leaves it)"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    return int(caught.value.code or 0), capsys.readouterr().err


def spans(db: Path) -> int:
    if not db.exists():
        return 0
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM spans").fetchone()[0]


def write(path: Path, *, cut: bool, newline_after_cut: bool = False) -> Path:
    lines = [traces_line(start_ns=START_NS + i * 10**12) for i in range(3)]
    if cut:
        lines[2] = lines[2][: len(lines[2]) // 2]
    path.write_text("\n".join(lines) + ("\n" if newline_after_cut else ""))
    return path


def test_a_cut_last_line_stores_the_complete_lines_and_warns(tmp_path, capsys) -> None:
    source = write(tmp_path / "traces.otlp.jsonl", cut=True)
    db = tmp_path / "store.duckdb"
    code, err = cli(capsys, "ingest", "--db", str(db), str(source))
    assert code == 0, err
    assert f"warning: {source}: {CUT}: not stored, the lines before it are\n" in err
    assert "Error" not in err
    assert spans(db) == 4  # two complete lines of one trace (a root and an inference span) each


def test_strict_makes_a_cut_last_line_an_error_that_stores_nothing(tmp_path, capsys) -> None:
    source = write(tmp_path / "traces.otlp.jsonl", cut=True)
    db = tmp_path / "store.duckdb"
    code, err = cli(capsys, "ingest", "--db", str(db), "--strict", str(source))
    assert code == 1
    assert f"{source}: {CUT}; --strict refuses the file\n" in err
    assert err.endswith("Error: 1 file could not be read; nothing of it was stored (the other files were)\n")
    assert spans(db) == 0


def test_a_malformed_line_that_ends_with_a_newline_still_fails_the_file(tmp_path, capsys) -> None:
    source = write(tmp_path / "traces.otlp.jsonl", cut=True, newline_after_cut=True)
    db = tmp_path / "store.duckdb"
    code, err = cli(capsys, "ingest", "--db", str(db), str(source))
    assert code == 1
    assert "line 3: invalid JSON" in err and "cut off" not in err
    assert spans(db) == 0


def test_a_complete_file_without_a_final_newline_is_not_a_warning(tmp_path, capsys) -> None:
    source = write(tmp_path / "traces.otlp.jsonl", cut=False)
    db = tmp_path / "store.duckdb"
    code, err = cli(capsys, "ingest", "--db", str(db), "--strict", str(source))
    assert code == 0, err
    assert "warning" not in err
    assert spans(db) == 6
