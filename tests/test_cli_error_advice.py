"""Errors name what is wrong in the user's terms: lock advice that fits the verb, readable 400 and 415 bodies."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from tests.support.otlp import traces_line

#: Holds the store open for writing, as `gpu-rca serve` does, until its stdin closes.
HOLDER = "import sys, duckdb; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"
LOCKED = "Error: database {db} is locked by another process (is `gpu-rca serve` running?); "


def gpu_rca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def locked_db(tmp_path: Path):
    db = tmp_path / "store.duckdb"
    with Store.open(db):
        pass
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield db
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_locked_store_gets_advice_that_fits_the_verb(locked_db: Path, tmp_path: Path) -> None:
    source = tmp_path / "traces.otlp.jsonl"
    source.write_text(traces_line() + "\n")
    expected = {
        ("ingest", "--db", str(locked_db), str(source)): "stop that process first, or ingest into another --db "
        "(a running serve takes telemetry over OTLP/HTTP)",
        ("analyze", "--db", str(locked_db)): "use --server URL to query it through that process",
        ("explain", "0af7651916cd43dd8448eb211c80319c", "--db", str(locked_db)): (
            "use --server URL to query it through that process"
        ),
    }
    for args, advice in expected.items():
        run = gpu_rca(*args)
        assert run.returncode == 1, run.stderr
        assert run.stderr.splitlines()[-1] == LOCKED.format(db=locked_db) + advice
        assert "--server" not in run.stderr or args[0] != "ingest"


def test_no_message_doubles_a_word(locked_db: Path) -> None:
    run = gpu_rca("ingest", "--db", str(locked_db), str(locked_db.parent))
    words = run.stderr.split()
    assert not [(a, b) for a, b in itertools.pairwise(words) if a.isalpha() and a.lower() == b.lower()]


INTERNAL = ("ExportTraceServiceRequest", "ExportLogsServiceRequest", "TracesData", "DecodeError", "ParseError")


@pytest.mark.parametrize(
    ("route", "body", "content_type", "message"),
    [
        (
            "/v1/traces",
            b"\xff\xff\xff",
            "application/x-protobuf",
            "body is not OTLP/protobuf traces: its bytes do not decode as an OTLP export request",
        ),
        (
            "/v1/logs",
            b"\xff\xff\xff",
            "application/x-protobuf",
            "body is not OTLP/protobuf logs: its bytes do not decode as an OTLP export request",
        ),
        (
            "/v1/traces",
            b'{"resourceSpans": 3}',
            "application/json",
            "body is not OTLP/JSON traces: Failed to parse resourceSpans field: repeated field resourceSpans "
            "must be in [] which is 3",
        ),
        (
            "/v1/traces",
            b"[1]",
            "application/json",
            "body is not OTLP/JSON traces: expected a JSON object for the request, got list",
        ),
    ],
)
def test_a_400_names_no_protobuf_internals(tmp_path, route, body, content_type, message) -> None:
    with ServeProcess(tmp_path / "store.duckdb") as process, httpx.Client(base_url=process.url, timeout=30) as client:
        response = client.post(route, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    if content_type == "application/json":
        text = response.json()["message"]
    else:
        from google.rpc import status_pb2

        text = status_pb2.Status.FromString(response.content).message
    assert text == message
    assert not any(name in text for name in INTERNAL)


def test_a_415_is_readable_with_curl(tmp_path) -> None:
    with ServeProcess(tmp_path / "store.duckdb") as process:
        started = time.monotonic()
        run = subprocess.run(
            [
                "curl",
                "-s",
                "-X",
                "POST",
                "-H",
                "Content-Type: text/plain",
                "--data",
                "hello",
                f"{process.url}/v1/traces",
            ],
            capture_output=True,
            timeout=30,
        )
        assert time.monotonic() - started < 30
    assert json.loads(run.stdout) == {
        "code": 3,
        "message": "Content-Type must be application/x-protobuf or application/json, not 'text/plain'",
    }
