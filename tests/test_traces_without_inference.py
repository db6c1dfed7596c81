"""Traces in which no span carries gpu.telemetry.source are counted and reported by ingest and serve;
the child spans of inference traces are stored."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import httpx
import pytest

from gpu_rca.cli import main
from gpu_rca.correlate.server.process import ServeProcess
from tests.support.otlp import START_NS, traces_line, traces_request
from tests.support.serving import all_stored

HINT = "no inference span: instrument with gpu_rca.collector or set the attribute gpu.telemetry.source"


def counts(db: Path) -> tuple[int, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*), count(*) FILTER (WHERE is_inference) FROM spans").fetchone()


def test_ingest_reports_traces_without_inference_and_keeps_every_span(tmp_path, capsys) -> None:
    traces = tmp_path / "traces.otlp.jsonl"
    later = START_NS + 3600 * 1_000_000_000
    lines = [traces_line(traces=4, inference=False), traces_line(traces=2, start_ns=later)]
    traces.write_text("\n".join(lines) + "\n")
    db = tmp_path / "store.duckdb"
    with pytest.raises(SystemExit) as caught:
        main(["ingest", "--db", str(db), str(traces)])
    assert caught.value.code == 0
    err = capsys.readouterr().err
    assert f"warning: 4 traces have {HINT}\n" in err
    # every span is stored: the 6 roots, the 4 plain children and the 2 inference spans
    assert counts(db) == (12, 2)


def test_ingest_of_inference_traces_only_warns_nothing(tmp_path, capsys) -> None:
    traces = tmp_path / "traces.otlp.jsonl"
    traces.write_text(traces_line(traces=3) + "\n")
    with pytest.raises(SystemExit) as caught:
        main(["ingest", "--db", str(tmp_path / "store.duckdb"), str(traces)])
    assert caught.value.code == 0
    assert "no inference span" not in capsys.readouterr().err


def test_serve_counts_traces_without_inference_in_metrics_and_logs_once(tmp_path) -> None:
    db = tmp_path / "store.duckdb"
    headers = {"Content-Type": "application/x-protobuf"}
    with ServeProcess(db) as process, httpx.Client(base_url=process.url, timeout=30) as client:
        for start in (START_NS, START_NS + 10**12):
            body = traces_request(traces=5, inference=False, start_ns=start).SerializeToString()
            assert client.post("/v1/traces", content=body, headers=headers).status_code == 200
            all_stored(client)  # each request stored alone: the first warning counts the first one's traces
        body = traces_request(traces=2, start_ns=START_NS + 2 * 10**12).SerializeToString()
        assert client.post("/v1/traces", content=body, headers=headers).status_code == 200
        all_stored(client)
        metrics = client.get("/metrics").text
        assert "gpu_rca_serve_traces_without_inference_span_total 10.0" in metrics.splitlines()
        deadline = time.monotonic() + 10
        while not any(HINT in line for line in process.stderr_lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    warnings = [line for line in process.stderr_lines if HINT in line]
    assert len(warnings) == 1  # at most one line per interval
    assert "5 traces have" in warnings[0]
    assert counts(db) == (24, 2)
