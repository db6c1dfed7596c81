"""Kernel-log lines without a host (dmesg -T, journal lines printed without one): stored with no host, joined
to a GPU by bus id when it resolves to exactly one known GPU, else reported with a --host hint."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from gpu_rca.cli import main
from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.correlate.store import Store
from tests.support.otlp import traces_line

UUID_A = "GPU-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
UUID_B = "GPU-1b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1"
UUID_C = "GPU-2b1c2d3e-4f50-6172-8394-a5b6c7d8e9f2"

# Journal lines as `journalctl -k -o short` prints them without a host name, and `-o short-iso`.
JOURNAL_NO_HOST = """\
Mar 02 10:04:11 kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=2211, name=python3, GPU has fallen off the bus.
2026-03-02T10:05:12+0000 kernel: NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error
"""
# `dmesg -T` lines (no host on the line); two hosts have a GPU on 0000:5e:00.0, none on 0000:af:00.0.
DMESG_T = """\
[Mon Mar  2 10:06:01 2026] NVRM: Xid (PCI:0000:5e:00): 94, pid=3001, name=python3, Contained ECC error.
[Mon Mar  2 10:06:02 2026] NVRM: Xid (PCI:0000:af:00): 13, pid=3002, name=python3, Graphics SM Warp Exception
[Mon Mar  2 10:06:03 2026] NVRM: GPU Board Serial Number: 1320221031337
"""
# A host-less journal: the UUID mapping line and the multi-line notice with no Xid line.
FALLEN_NO_HOST = """\
Mar 02 10:07:00 kernel: NVRM: GPU at PCI:0000:c1:00: GPU-2b1c2d3e-4f50-6172-8394-a5b6c7d8e9f2
Mar 02 10:07:30 kernel: NVRM: The NVIDIA GPU 0000:c1:00.0
Mar 02 10:07:30 kernel: NVRM: (PCI ID: 10de:27b8) installed in this system has
Mar 02 10:07:30 kernel: NVRM: fallen off the bus and is not responding to commands.
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    return int(caught.value.code or 0), capsys.readouterr().err


def events(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT xid, pci_bus_id, gpu_uuid, host FROM kernel_events ORDER BY ts_ns").fetchall()


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A store whose GPU inventory knows 0000:3b:00.0 on one host and 0000:5e:00.0 on two."""
    spans = tmp_path / "spans.otlp.jsonl"
    spans.write_text(
        "\n".join(
            [
                traces_line(host="node-a", gpu=UUID_A, pci="00000000:3B:00.0"),
                traces_line(host="node-a", gpu="GPU-aa" + UUID_B[6:], pci="00000000:5E:00.0"),
                traces_line(host="node-b", gpu=UUID_B, pci="00000000:5E:00.0"),
            ]
        )
        + "\n"
    )
    store = tmp_path / "store.duckdb"
    assert cli(capsys, "ingest", "--db", str(store), str(spans))[0] == 0
    return store


def test_journal_lines_without_a_host_join_the_one_gpu_on_their_bus_id(db, tmp_path, capsys) -> None:
    log = tmp_path / "kernel.log"
    log.write_text(JOURNAL_NO_HOST)
    code, err = cli(capsys, "ingest", "--db", str(db), str(log))
    assert code == 0, err
    assert "warning:" not in err
    assert events(db) == [(79, "0000:3b:00.0", UUID_A, "node-a"), (48, "0000:3b:00.0", UUID_A, "node-a")]


def test_dmesg_t_lines_that_match_no_single_gpu_are_stored_and_reported(db, tmp_path, capsys) -> None:
    log = tmp_path / "dmesg.txt"
    log.write_text(DMESG_T)
    code, err = cli(capsys, "ingest", "--db", str(db), str(log))
    assert code == 0, err
    assert events(db) == [(94, "0000:5e:00.0", None, None), (13, "0000:af:00.0", None, None)]
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert lines == [
        f"warning: {log}: 1 XID event(s) on PCI 0000:5e:00.0 name no host and that bus id matches 2 known GPUs "
        "(one per host): stored without a GPU; pass --host NAME to place them",
        f"warning: {log}: 1 XID event(s) on PCI 0000:af:00.0 name no host and that bus id matches no known GPU: "
        "stored without a GPU; pass --host NAME to place them",
    ]
    # the informational NVRM line is not dropped silently: the file's report gives its reason
    with Store.open(db) as store:
        (report,) = ingest_paths(store, [log]).files
    assert report.skipped == {"NVRM lines that report no XID (driver information)": 1}
    assert len(report.warnings) == 2


def test_dmesg_t_with_host_places_the_events(db, tmp_path, capsys) -> None:
    log = tmp_path / "dmesg.txt"
    log.write_text(DMESG_T)
    code, err = cli(capsys, "ingest", "--db", str(db), "--host", "node-b", str(log))
    assert code == 0, err
    assert events(db)[0] == (94, "0000:5e:00.0", UUID_B, "node-b")
    assert "matches 2 known GPUs" not in err


def test_the_fallen_off_the_bus_notice_and_uuid_mapping_work_without_a_host(tmp_path, capsys) -> None:
    log = tmp_path / "kernel.log"
    log.write_text(FALLEN_NO_HOST)
    store = tmp_path / "store.duckdb"
    code, err = cli(capsys, "ingest", "--db", str(store), str(log))
    assert code == 0, err
    assert events(store) == [(79, "0000:c1:00.0", UUID_C, None)]
    assert "warning:" not in err and "report no XID" not in err
