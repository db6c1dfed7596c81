from __future__ import annotations

import csv
from datetime import UTC, datetime

import pytest

from gpu_rca.correlate.kernel_log.parse import (
    SKIP_BOOT_RELATIVE,
    SKIP_NO_TIMESTAMP,
    looks_like_kernel_log,
    parse_kernel_log,
)
from gpu_rca.schemas.errors import UsageError
from gpu_rca.schemas.xid import CATEGORIES, XIDS, XIDS_BY_CODE, xid_info
from tests.support import data_file, shared_sample

UUID_A = "GPU-0a1b2c3d-0000-1111-2222-333344445555"
UUID_B = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"


def ns(text: str) -> int:
    """Unix ns of an ISO time with offset."""
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000_000


def test_dmesg_t_lines_map_pci_to_uuid_and_read_pid_and_name() -> None:
    lines = [
        f"[Mon Mar  2 09:59:58 2026] NVRM: GPU at PCI:0000:3b:00: {UUID_A}",
        "[Mon Mar  2 09:59:58 2026] NVRM: GPU Board Serial Number: 1650124014249",
        "[Mon Mar  2 10:00:01 2026] NVRM: Xid (PCI:0000:3b:00): 48, pid=4242, name=python3, DBE (0x1) at 0x1f",
        "[Mon Mar  2 10:00:02 2026] usb 1-1: new high-speed USB device",
    ]
    result = parse_kernel_log(lines, host="node-a")
    assert [e.as_row() for e in result.events] == [
        {
            "ts_ns": ns("2026-03-02T10:00:01+00:00"),
            "host": "node-a",
            "pci_bus_id": "0000:3b:00.0",
            "gpu_uuid": UUID_A,
            "xid": 48,
            "pid": 4242,
            "process": "python3",
            "message": "DBE (0x1) at 0x1f",
        }
    ]
    assert [(g.host, g.pci_bus_id, g.gpu_uuid) for g in result.gpus] == [("node-a", "0000:3b:00.0", UUID_A)]
    assert result.skipped == {} and result.warnings == () and result.lines == 4


def test_times_without_offset_are_read_in_the_given_zone() -> None:
    line = "[Mon Mar  2 10:00:01 2026] NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception"
    berlin = parse_kernel_log([line], tz="Europe/Berlin").events[0]
    assert berlin.ts_ns == ns("2026-03-02T10:00:01+01:00")
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Olympus'"):
        parse_kernel_log([line], tz="Mars/Olympus")


def test_journal_short_takes_the_year_from_the_reference_across_new_year() -> None:
    lines = [
        "Dec 31 23:59:58 node-b kernel: NVRM: Xid (PCI:0000:41:00): 31, pid=77, name=python, MMU Fault",
        "Jan  1 00:00:03 node-b kernel: NVRM: Xid (PCI:0000:41:00): 43, pid=77, name=python, Ch 00000010",
    ]
    result = parse_kernel_log(lines, reference_time=datetime(2026, 1, 2, 8, 0, tzinfo=UTC))
    assert [(e.ts_ns, e.host, e.xid) for e in result.events] == [
        (ns("2025-12-31T23:59:58+00:00"), "node-b", 31),
        (ns("2026-01-01T00:00:03+00:00"), "node-b", 43),
    ]


def test_journal_short_iso_carries_its_offset_and_fraction() -> None:
    lines = [
        "2026-03-02T11:00:01+0100 node-c kernel: NVRM: Xid (PCI:0000:65:00): 94, pid=12, name=ddcolor, Contained",
        "2026-03-02T10:00:02.250000+00:00 node-c kernel: NVRM: Xid (PCI:0000:65:00): 95, pid=12, name=ddcolor, x",
        "2026-03-02T10:00:03Z node-c systemd[1]: Started session 4.",
    ]
    events = parse_kernel_log(lines, tz="America/New_York").events
    assert [(e.ts_ns, e.xid) for e in events] == [
        (ns("2026-03-02T10:00:01+00:00"), 94),
        (ns("2026-03-02T10:00:02+00:00") + 250_000_000, 95),
    ]


def test_syslog_copy_keeps_the_printk_seconds_which_are_ignored() -> None:
    line = (
        "May 18 19:02:39 gpu-07 kernel: [93297.027938] NVRM: Xid (PCI:0000:b1:00): 79, pid=901, name=python3, "
        "GPU has fallen off the bus."
    )
    result = parse_kernel_log([line], reference_time=datetime(2026, 6, 1, tzinfo=UTC))
    (event,) = result.events
    assert (event.ts_ns, event.host, event.pci_bus_id, event.xid) == (
        ns("2026-05-18T19:02:39+00:00"),
        "gpu-07",
        "0000:b1:00.0",
        79,
    )
    assert event.message == "GPU has fallen off the bus."


@pytest.mark.parametrize(
    ("body", "pci", "xid", "pid", "process", "gi", "message"),
    [
        # Older drivers: no pid/name.
        (
            "NVRM: Xid (PCI:0000:41:00): 13, Graphics Exception: ESR 0x1",
            "0000:41:00.0",
            13,
            None,
            None,
            None,
            "Graphics Exception: ESR 0x1",
        ),
        # Very old drivers: no `PCI:` prefix.
        (
            "NVRM: Xid (0000:01:00): 62, Internal micro-controller halt",
            "0000:01:00.0",
            62,
            None,
            None,
            None,
            "Internal micro-controller halt",
        ),
        # MIG instance.
        (
            "NVRM: Xid (PCI:0000:01:00 GPU-I:05): 94, pid=7194, Contained: CE User Channel (0x9). RST: No",
            "0000:01:00.0",
            94,
            7194,
            None,
            5,
            "Contained: CE User Channel (0x9). RST: No",
        ),
        # The driver could not tell which process.
        (
            "NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, Graphics SM Warp Exception",
            "0000:cb:00.0",
            13,
            None,
            None,
            None,
            "Graphics SM Warp Exception",
        ),
        # Grace systems: 4-digit domains other than 0000.
        (
            "NVRM: Xid (PCI:0018:01:00): 145, RLW_SRC_TRACK Nonfatal XC1 i0 Link 12",
            "0018:01:00.0",
            145,
            None,
            None,
            None,
            "RLW_SRC_TRACK Nonfatal XC1 i0 Link 12",
        ),
    ],
)
def test_driver_spellings(body, pci, xid, pid, process, gi, message) -> None:
    (event,) = parse_kernel_log([f"[Mon Mar  2 10:00:00 2026] {body}"], host="h").events
    assert (event.pci_bus_id, event.xid, event.pid, event.process, event.gpu_instance_id, event.message) == (
        pci,
        xid,
        pid,
        process,
        gi,
        message,
    )


def test_fallen_off_the_bus_without_an_xid_line_is_xid_79() -> None:
    lines = [
        f"[Tue Jan 23 10:30:00 2024] NVRM: GPU at PCI:0000:a8:00: {UUID_B}",
        "[Tue Jan 23 10:30:09 2024] NVRM: The NVIDIA GPU 0000:a8:00.0",
        "                           NVRM: (PCI ID: 10de:2330) installed in this system has",
        "                           NVRM: fallen off the bus and is not responding to commands.",
    ]
    (event,) = parse_kernel_log(lines, host="node-d").events
    assert (event.ts_ns, event.pci_bus_id, event.gpu_uuid, event.xid, event.synthetic) == (
        ns("2024-01-23T10:30:09+00:00"),
        "0000:a8:00.0",
        UUID_B,
        79,
        True,
    )


def test_fallen_off_text_beside_a_printed_xid_79_is_one_event() -> None:
    lines = [
        "[Tue Jan 23 10:30:09 2024] NVRM: The NVIDIA GPU 0000:a8:00.0 (PCI ID: 10de:2330) installed in this "
        "system has fallen off the bus and is not responding to commands.",
        "[Tue Jan 23 10:30:09 2024] NVRM: Xid (PCI:0000:a8:00): 79, pid=1, name=python3, GPU has fallen off the bus.",
    ]
    events = parse_kernel_log(lines, host="node-d").events
    assert [(e.xid, e.synthetic) for e in events] == [(79, False)]


def test_raw_dmesg_needs_boot_time_and_host() -> None:
    lines = [
        f"[  365.969676] NVRM: GPU at PCI:0000:01:00: {UUID_A}",
        "[  365.969681] NVRM: Xid (PCI:0000:01:00): 31, pid=13705, name=app, MMU Fault",
    ]
    skipped = parse_kernel_log(lines, boot_time=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    assert skipped.events == () and skipped.skipped == {SKIP_BOOT_RELATIVE: 1}
    assert skipped.warnings == (f"1 XID line(s) skipped: {SKIP_BOOT_RELATIVE}",)
    assert [g.gpu_uuid for g in skipped.gpus] == [UUID_A]  # identity needs no time
    placed = parse_kernel_log(lines, host="node-a", boot_time=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    (event,) = placed.events
    assert event.ts_ns == ns("2026-03-02T09:06:05+00:00") + 969_681_000
    assert (event.host, event.gpu_uuid) == ("node-a", UUID_A)


def test_lines_without_a_time_are_counted_not_stored() -> None:
    result = parse_kernel_log(
        [
            "kernel: NVRM: Xid (PCI:0000:dc:00): 45, pid=1, name=python3, Ch 00000001",
            "NVRM: Xid (PCI:0000:08:00): 31, pid=2, name=chrome, Ch 00000023",
        ]
    )
    assert result.events == () and result.skipped == {SKIP_NO_TIMESTAMP: 2} and sum(result.skipped.values()) == 2


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["[Mon Mar  2 10:00:00 2026] e1000e: eth0 NIC Link is Up"], True),
        (["2026-03-02T10:00:00+0000 node-a kernel: Linux version 6.1.0"], True),
        (["Mar  2 10:00:00 node-a kernel: NVRM: loading NVIDIA UNIX x86_64 Kernel Module"], True),
        (["[    0.000000] Linux version 6.1.0"], True),
        (['{"resourceSpans": []}'], False),
        (
            ["# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).", 'DCGM_FI_DEV_GPU_TEMP{gpu="0"} 41 1700000000000'],
            False,
        ),
        (['{"text": "x", "record": {"level": {"name": "INFO"}}}'], False),
        (["Mar  2 10:00:00 node-a sshd[77]: Accepted publickey"], False),
        ([], False),
    ],
)
def test_looks_like_kernel_log(lines: list[str], expected: bool) -> None:
    assert looks_like_kernel_log(lines) is expected


def test_real_kernel_lines_from_the_shared_samples() -> None:
    path = shared_sample("xid-dmesg.log")
    with path.open(encoding="utf-8") as handle:
        text = [line for line in handle if not line.startswith("#")]
    assert looks_like_kernel_log(text[:5])
    result = parse_kernel_log(text, reference_time=datetime(2026, 11, 1, tzinfo=UTC))
    dated = [line for line in text if line.startswith("[") and not line.startswith("[ ")]
    assert len(result.events) == sum("NVRM: Xid" in line for line in dated)
    assert sum(result.skipped.values()) == sum("NVRM: Xid" in line for line in text) - len(result.events)
    assert {e.xid for e in result.events} <= set(XIDS_BY_CODE)
    gsp = [e for e in result.events if e.xid == 119]
    assert gsp and all(e.gpu_uuid == "GPU-509665ad-b600-ac93-3616-d754b23d636d" for e in gsp)


def test_catalog_agrees_with_nvidia_catalog() -> None:
    path = shared_sample("xid-catalog.csv")
    with path.open(encoding="utf-8") as handle:
        rows = {int(r["code"]): r for r in csv.DictReader(line for line in handle if not line.startswith("# "))}
    for xid in XIDS:
        row = rows[xid.code]
        assert xid.mnemonic in [m.strip() for m in row["mnemonic"].split("/")], xid
        if row["description"] != "Unused":
            nvidia_meaning = row["description"].split(" / ")[0].replace("_", " ").lower()
            assert nvidia_meaning.startswith(xid.meaning.lower()[:20]), xid
        if row["immediate_resolution"]:
            assert xid.action == row["immediate_resolution"], xid


def test_catalog_covers_the_codes_that_matter() -> None:
    wanted = {13, 31, 43, 45, 48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 109, 119, 120, 154, 8, 46, 140, 143, 158, 167}
    assert wanted <= set(XIDS_BY_CODE)
    assert all(x.category in CATEGORIES for x in XIDS)
    assert xid_info(79).kills_gpu and xid_info(94).kills_context and not xid_info(94).kills_gpu
    assert xid_info(999).category == "unknown" and not xid_info(999).kills_context


_UUID_3B = "GPU-5e8d2c71-a0f4-4b39-9c6e-2d71f08b3a45"
_UUID_5E = "GPU-a91b47e3-6c02-4f8d-b5e1-93c40d7a2f66"
_UUID_C1 = "GPU-2f7a9d03-81b6-4e5c-a4d8-6b0e17c93f52"
_UUID_AF = "GPU-c4e08b15-37d9-4a62-8f1b-e5a90d6c2b77"


@pytest.mark.parametrize(
    ("log", "host", "first", "expected"),
    [
        (
            "xid-dmesg-T.log",  # no host on the line: --host names it
            "gpu-node-09",
            "2026-03-03T09:58:40+00:00",
            [
                ("gpu-node-09", "0000:3b:00.0", _UUID_3B, 13, 48211, "python3"),
                ("gpu-node-09", "0000:3b:00.0", _UUID_3B, 13, 48211, "python3"),
                ("gpu-node-09", "0000:3b:00.0", _UUID_3B, 43, 48211, "python3"),
                ("gpu-node-09", "0000:5e:00.0", _UUID_5E, 31, 48390, "python3"),
            ],
        ),
        (
            "xid-journal-short-iso.log",
            None,
            "2026-03-03T11:20:05+00:00",
            [
                ("gpu-node-12", "0000:c1:00.0", _UUID_C1, 94, 91402, "python3"),
                ("gpu-node-12", "0000:c1:00.0", _UUID_C1, 63, None, None),  # pid='<unknown>'
                ("gpu-node-12", "0000:c1:00.0", _UUID_C1, 94, 91488, "python3"),  # MIG: GPU-I:02
                ("gpu-node-12", "0000:c1:00.0", _UUID_C1, 48, 91577, "python3"),
                ("gpu-node-12", "0000:c1:00.0", _UUID_C1, 95, 91577, "python3"),
            ],
        ),
        (
            "xid-syslog.log",  # no year on the line: the reference time's
            None,
            "2026-03-03T12:40:11+00:00",
            [
                ("gpu-node-03", "0000:af:00.0", _UUID_AF, 79, 2231, "python3"),  # the notice beside it is the same
                ("gpu-node-03", "0000:d8:00.0", None, 79, None, None),  # the notice alone, no Xid line
            ],
        ),
    ],
)
def test_kernel_log_forms_from_the_fixtures(log: str, host: str | None, first: str, expected: list) -> None:
    lines = data_file(log).read_text(encoding="utf-8").splitlines()
    assert looks_like_kernel_log(lines[:5])
    result = parse_kernel_log(lines, host=host, reference_time=datetime(2026, 3, 4, tzinfo=UTC))
    assert [(e.host, e.pci_bus_id, e.gpu_uuid, e.xid, e.pid, e.process) for e in result.events] == expected
    assert sum(result.skipped.values()) == 0
    assert result.events[0].ts_ns == int(datetime.fromisoformat(first).timestamp()) * 1_000_000_000
    assert [e.xid for e in result.events if e.synthetic] == [79] * (log == "xid-syslog.log")


def test_mig_xid_keeps_its_gpu_instance() -> None:
    lines = data_file("xid-journal-short-iso.log").read_text(encoding="utf-8").splitlines()
    result = parse_kernel_log(lines, reference_time=datetime(2026, 3, 4, tzinfo=UTC))
    assert [(e.xid, e.gpu_instance_id) for e in result.events if e.gpu_instance_id is not None] == [(94, 2)]
