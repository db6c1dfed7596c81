"""Text from traffic on a terminal is shown, never interpreted.

One hostile corpus (escape sequences, an OSC-8 hyperlink, BEL, C1 controls, bidi overrides, Rich markup) goes
into span names, attribute values, service and host names, log bodies, exception messages, a kernel log's
process name and a file name; it is written as OTLP JSON, log and kernel-log files, ingested with
`gpu-rca ingest`, and every verb that prints it runs on a real pseudo-terminal (so Rich styles its output as
for a person). The raw bytes read from the terminal hold none of the corpus's sequences, and its Rich markup
prints literally.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
START_NS = 1_767_225_600 * 10**9
GPU = "GPU-0a0a0a0a-1111-2222-3333-444455556666"
PCI = "0000:3b:00.0"

CLEAR = "\x1b[2J"
OSC8 = "\x1b]8;;http://evil.example\x1b\\x\x1b]8;;\x1b\\"
BELL = "\x07"
RLO = "\u202e"
ISOLATE = "\u2066"
C1 = "\x9b31m\x7f"
MARKUP = "[bold red]x[/bold red][link=http://evil.example]y[/link]"
ESCAPES = f"{CLEAR}\x1b[31mred\x1b[0m{BELL}{RLO}evil{ISOLATE}{C1}"

#: What must never reach the terminal: the corpus's own sequences (Rich's styling escapes are its own).
FORBIDDEN = (
    CLEAR.encode(),
    b"\x1b[31mred",
    b"\x1b]8;;http://evil",
    b"\x1b]8;",  # no hyperlink at all: the project prints none, so any would come from the traffic
    BELL.encode(),
    RLO.encode(),
    ISOLATE.encode(),
    "\x9b".encode(),
    b"\x7f",
)


def trace_id(index: int) -> str:
    return f"{index + 1:032x}"


def _value(value: object) -> dict[str, object]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    return {"stringValue": str(value)}


def _attributes(values: dict[str, object]) -> list[dict[str, object]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items()]


def write_corpus(folder: Path) -> None:
    """OTLP JSON traces and logs, a kernel log and an oddly named note, all carrying the corpus."""
    resource = {"attributes": _attributes({"service.name": f"svc{ESCAPES}", "host.name": f"node{OSC8}"})}
    spans = []
    for index in range(60):
        failed = index % 3 == 0
        start = START_NS + index * 10**9
        attributes: dict[str, object] = {
            "gpu.telemetry.source": "simulated",
            "gpu.uuid": GPU,
            "gpu.pci_bus_id": PCI,
            "gpu.index": 0,
            "ddcolor.input_size": 512,
            "ddcolor.model": MARKUP + ESCAPES if failed else "ddcolor_paper_tiny",
        }
        span: dict[str, object] = {
            "traceId": trace_id(index),
            "spanId": f"{index + 1:016x}",
            "name": f"{MARKUP}inference",
            "kind": 2,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 200_000_000),
            "attributes": _attributes({**attributes, **({"error.type": f"Boom{ESCAPES}"} if failed else {})}),
            "status": {"code": 2, "message": f"failed{OSC8}{ESCAPES}"} if failed else {"code": 1},
        }
        if failed:
            span["events"] = [
                {
                    "timeUnixNano": str(start + 100_000_000),
                    "name": "exception",
                    "attributes": _attributes(
                        {"exception.type": f"Boom{ESCAPES}", "exception.message": f"CUDA {OSC8}{MARKUP}"}
                    ),
                }
            ]
        spans.append(span)
    traces = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}
    (folder / "traces.otlp.jsonl").write_text(json.dumps(traces) + "\n")
    records = [
        {
            "timeUnixNano": str(START_NS + index * 10**9 + 150_000_000),
            "severityNumber": 17,
            "severityText": "ERROR",
            "body": {"stringValue": f"CUDA error {ESCAPES}{OSC8}{MARKUP}"},
            "traceId": trace_id(index),
            "spanId": f"{index + 1:016x}",
        }
        for index in range(0, 60, 3)
    ]
    logs = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"scope": {"name": "t"}, "logRecords": records}]}]}
    (folder / "logs.otlp.jsonl").write_text(json.dumps(logs) + "\n")
    (folder / "kernel.log").write_text(
        f"2026-01-01T00:00:01+0000 node kernel: NVRM: GPU at PCI:0000:3b:00: {GPU}\n"
        f"2026-01-01T00:00:03+0000 node kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=4242, "
        f"name=py{ESCAPES}{OSC8}, GPU has fallen off the bus {MARKUP}\n"
    )
    (folder / f"notes{CLEAR}{BELL}{RLO}.txt").write_text(f"not telemetry {ESCAPES}\n")


class Pty:
    """A child process whose stdout and stderr are a pseudo-terminal (TERM=xterm-256color, 250 columns)."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 250, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES", "TERM")}
        env.update(TERM="xterm-256color", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True, start_new_session=True
        )
        os.close(slave)
        self.output = b""

    def read(self, until: bytes | None = None, timeout_s: float = 120.0) -> bytes:
        """Read until `until` appears (None: until the child closes the terminal)."""
        deadline = time.monotonic() + timeout_s
        while until is None or until not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; terminal so far: {self.output[-3000:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer of the terminal has gone
                data = b""
            if not data:
                if until is None:
                    break
                raise AssertionError(f"terminal closed before {until!r}: {self.output[-3000:]!r}")
            self.output += data
        return self.output

    def finish(self, timeout_s: float = 120.0) -> tuple[int, bytes]:
        self.read(None, timeout_s)
        code = self.proc.wait(timeout=timeout_s)
        os.close(self.master)
        return code, self.output


def on_terminal(*args: str) -> tuple[int, bytes]:
    return Pty([sys.executable, "-m", "gpu_rca", *args]).finish()


def assert_shown_not_sent(raw: bytes, *, markup: bool = True) -> None:
    for sequence in FORBIDDEN:
        assert sequence not in raw, f"{sequence!r} reached the terminal: {raw[:4000]!r}"
    assert b"\\x1b" in raw, raw[:4000]  # the corpus's escapes are shown in visible form
    if markup:
        assert b"[link=http://evil.example]" in raw, raw[:4000]


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "in").mkdir()
    write_corpus(folder / "in")
    db = folder / "hostile.duckdb"
    code, raw = on_terminal("ingest", "--db", str(db), str(folder / "in"))
    assert code == 0, raw.decode("utf-8", "replace")
    return db, raw


def test_ingest_report_shows_file_names_and_reasons(hostile_store: tuple[Path, bytes]) -> None:
    _, raw = hostile_store
    assert_shown_not_sent(raw, markup=False)
    assert b"notes\\x1b[2J\\x07\\u202e.txt" in raw  # the file name, visibly
    assert b"60 spans" in raw, raw.decode("utf-8", "replace")  # the real report, with its counts


def test_analyze_table_and_summary(hostile_store: tuple[Path, bytes]) -> None:
    db, _ = hostile_store
    code, raw = on_terminal(
        "analyze", "--db", str(db), "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01T00:05:00Z"
    )
    assert code == 0, raw.decode("utf-8", "replace")
    assert_shown_not_sent(raw)
    assert b"\x1b[" in raw  # Rich did style it: it believed it wrote to a terminal
    assert b"ddcolor.model=" in raw


def test_analyze_json_is_data_unchanged(hostile_store: tuple[Path, bytes]) -> None:
    db, _ = hostile_store
    run = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "analyze", "--db", str(db), "--since", "2026-01-01T00:00:00Z",
         "--until", "2026-01-01T00:05:00Z", "--json"],
        capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )  # fmt: skip
    document = json.loads(run.stdout)
    values = {d["value"] for c in document["causes"] for d in c["drivers"]}
    assert MARKUP + ESCAPES in values  # the exact text, as data


def test_explain_prints_markup_literally(hostile_store: tuple[Path, bytes]) -> None:
    db, _ = hostile_store
    code, raw = on_terminal("explain", trace_id(0), "--db", str(db))
    assert code == 0, raw.decode("utf-8", "replace")
    assert_shown_not_sent(raw)
    assert f"{MARKUP}inference".encode() in raw  # the span name, as written, not as a bold red live link
    assert b"CUDA error \\x1b[2J" in raw  # the log body


def test_digest_markdown_to_stdout(hostile_store: tuple[Path, bytes], tmp_path: Path) -> None:
    db, _ = hostile_store
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(db.read_bytes())  # digest stores what it makes
    code, raw = on_terminal(
        "digest", "--db", str(copy), "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01T00:05:00Z"
    )
    assert code == 0, raw.decode("utf-8", "replace")
    assert_shown_not_sent(raw)
    assert b"# GPU failure digest" in raw


def test_serve_log_lines(hostile_store: tuple[Path, bytes], tmp_path: Path) -> None:
    db, _ = hostile_store
    copy = tmp_path / "serve.duckdb"
    copy.write_bytes(db.read_bytes())
    serve = Pty([sys.executable, "-m", "gpu_rca", "serve", "--db", str(copy), "--port", "0"])
    try:
        line = serve.read(b"listening on http://127.0.0.1:")
        port = int(re.search(rb"listening on http://127\.0\.0\.1:(\d+)", serve.read(b")"))[1])
        labels = {"alertname": f"GpuHot{ESCAPES}", "gpu": "0", "Hostname": f"node{OSC8}{MARKUP}"}
        alert = {"status": "firing", "labels": labels, "startsAt": "2026-01-01T00:00:00Z"}
        payload = {"version": "4", "status": "firing", "alerts": [alert], "commonLabels": {}}
        answer = httpx.post(f"http://127.0.0.1:{port}/alertmanager", json=payload, timeout=60)
        assert answer.status_code in (201, 503), answer.text
        serve.read(b"names GPUs not in the store")
    finally:
        serve.proc.send_signal(signal.SIGTERM)
    code, raw = serve.finish()
    assert code == 0, raw.decode("utf-8", "replace")
    assert line
    assert_shown_not_sent(raw)
