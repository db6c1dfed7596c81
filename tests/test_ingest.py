"""`gpu-rca ingest` end to end: real SDK payloads in files, formats detected by content, one transaction per file."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import zstandard
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca.cli import main
from gpu_rca.correlate import Store
from gpu_rca.correlate.ingest import ingest_paths
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas.otlp_json import message_to_json
from tests.support.files import KERNEL_LOG, SPAN_ID, TRACE_ID, loguru_lines, proto_framed, query_range
from tests.support.otlp import RESOURCE, UUID, logs_request, lost_gpu_trace_request


def run(*args: str) -> int:
    """Run the CLI in this process; its exit code."""
    with pytest.raises(SystemExit) as caught:
        main(["ingest", *args])
    return caught.value.code


def query(db, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def incident(tmp_path):
    """A folder as an operator collects it after an incident; names say nothing reliable about content."""
    folder = tmp_path / "incident"
    (folder / "nested").mkdir(parents=True)
    (folder / "spans.txt").write_text(
        message_to_json(lost_gpu_trace_request(2)) + "\n" + message_to_json(lost_gpu_trace_request(1)) + "\n"
    )
    (folder / "nested" / "dump").write_bytes(gzip.compress(proto_framed(lost_gpu_trace_request(3))))
    (folder / "logs.otlp.jsonl").write_text(message_to_json(logs_request()) + "\n")
    (folder / "app.log").write_bytes(zstandard.ZstdCompressor().compress(loguru_lines().encode()))
    (folder / "metrics.prom.jsonl").write_text(query_range())
    (folder / "kernel.json").write_text(KERNEL_LOG)  # a misleading extension: content decides
    (folder / "truth.json").write_text(json.dumps({"cause": "gpu_fallen_off_bus", "drivers": {}}))
    (folder / "README.md").write_text("# Incident 42\nCollected by the on-call.\n")
    (folder / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return folder


def test_an_incident_folder_is_ingested_by_content(incident, tmp_path, capsys):
    db = tmp_path / "rca.duckdb"
    assert run("--db", str(db), str(incident)) == 0
    err = capsys.readouterr().err
    assert "6 ingested" in err and "3 skipped" in err and "0 failed" in err
    assert query(db, "SELECT count(*), count(*) FILTER (is_inference) FROM spans") == [(9, 6)]
    assert query(db, "SELECT source, severity, trace_id, span_id, service FROM logs ORDER BY source, severity") == [
        ("loguru", "ERROR", TRACE_ID, SPAN_ID, "ddcolor"),
        ("loguru", "INFO", None, None, None),
        ("otlp", "ERROR", None, None, "ddcolor"),
    ]
    assert query(db, "SELECT metric, ts_ns, value FROM metric_samples ORDER BY metric, ts_ns") == [
        ("DCGM_FI_DEV_GPU_TEMP", 1_700_000_000_000_000_000, 71.0),
        ("DCGM_FI_DEV_GPU_TEMP", 1_700_000_045_000_000_000, 88.0),
        ("DCGM_FI_DEV_POWER_VIOLATION", 1_700_000_000_500_000_000, 7000.0),  # 1.x reported µs, canonical ns
    ]
    assert query(db, "SELECT host, pci_bus_id, gpu_uuid, xid, pid, process FROM kernel_events") == [
        ("node-a", "0000:3b:00.0", "GPU-0a1b2c3d-0000-4000-8000-00000000abcd", 79, 1234, "python3")
    ]
    assert "2 NaN/Inf samples" in err


def test_every_file_reports_its_format_or_why_it_was_skipped(incident):
    with Store() as store:
        summary = ingest_paths(store, [incident])
    reports = {Path(r.path).relative_to(incident).as_posix(): r for r in summary.files}
    assert {name: (r.status, r.format, r.compression) for name, r in reports.items()} == {
        "app.log": ("ingested", "loguru-json", "zstd"),
        "kernel.json": ("ingested", "kernel-log", None),
        "logs.otlp.jsonl": ("ingested", "otlp-json", None),
        "metrics.prom.jsonl": ("ingested", "prometheus-query-range", None),
        "nested/dump": ("ingested", "otlp-proto", "gzip"),
        "spans.txt": ("ingested", "otlp-json", None),
        "README.md": ("skipped", None, None),
        "plot.png": ("skipped", None, None),
        "truth.json": ("skipped", None, None),
    }
    assert reports["truth.json"].reason == "JSON that is not telemetry (keys: cause, drivers)"
    assert reports["README.md"].reason == "text that is neither Prometheus exposition nor a kernel log"
    assert reports["plot.png"].reason == "binary file that is not length-prefixed OTLP protobuf"
    assert reports["metrics.prom.jsonl"].skipped == {"NaN/Inf samples": 2, "samples of metrics gpu-rca does not use": 1}
    assert (reports["nested/dump"].kind, reports["nested/dump"].stored) == ("spans", 4)
    assert summary.exit_code == 0


def test_sdk_spans_from_json_and_protobuf_files_are_typed(tmp_path):
    request = lost_gpu_trace_request(1)
    (tmp_path / "a.jsonl").write_text(message_to_json(request) + "\n")
    (tmp_path / "b.bin").write_bytes(proto_framed(lost_gpu_trace_request(1)))
    db = tmp_path / "rca.duckdb"
    assert run("--db", str(db), str(tmp_path / "a.jsonl"), str(tmp_path / "b.bin")) == 0
    rows = query(
        db,
        """SELECT trace_id, span_id, service, service_version, host, gpu_uuid, gpu_index,
                               gpu_throttle_reasons, gpu_xid, gpu_power_mean, error_type, ddcolor_input_size
                        FROM spans WHERE is_inference ORDER BY start_ns""",
    )
    assert len(rows) == 2
    sent = next(sp for sp in request.resource_spans[0].scope_spans[0].spans if sp.name == "ddcolor.inference")
    assert rows[0] == (
        sent.trace_id.hex(),
        sent.span_id.hex(),
        "ddcolor",
        "1.4.0",
        "node-a",
        UUID,
        0,
        ["sw_thermal", "hw_slowdown"],
        [79],
        61.5,
        "gpu_lost",
        1280,
    )
    assert rows[1][2:] == rows[0][2:] and rows[1][0] != rows[0][0]


ALL_STAMPS = {
    a.GPU_INDEX: 3,
    a.GPU_UUID: UUID,
    a.GPU_NAME: "NVIDIA A100-SXM4-40GB",
    a.GPU_PCI_BUS_ID: "00000000:3B:00.0",
    a.GPU_MIG_INSTANCE_ID: 5,
    a.TELEMETRY_SOURCE: "nvml",
    a.TELEMETRY_SAMPLES: 17,
    a.TELEMETRY_STALE: True,
    a.TEMPERATURE_MAX: 86,
    a.TEMPERATURE_SLOWDOWN: 87,
    a.POWER_MAX: 399.5,
    a.POWER_MEAN: 310.25,
    a.POWER_LIMIT: 400.0,
    a.MEMORY_USED_START: 1_000,
    a.MEMORY_USED_MAX: 42_000_000_000,
    a.MEMORY_TOTAL: 42_949_672_960,
    a.MEMORY_PROCESS_MAX: 39_000_000_000,
    a.UTILIZATION_MEAN: 97.5,
    a.UTILIZATION_MAX: 100.0,
    a.CLOCK_SM_MIN: 705,
    a.CLOCK_SM_MAX: 1410,
    a.THROTTLE_REASONS: ["sw_thermal", "hw_thermal"],
    a.ECC_CORRECTED_DELTA: 2,
    a.ECC_UNCORRECTED_DELTA: 1,
    a.XID: [48, 63],
    a.INFLIGHT_MAX: 6,
    a.QUEUE_MS: 12.5,
    a.ERROR_TYPE: "cuda_illegal_address",
}


def test_every_stamp_of_a_real_exporter_payload_lands_typed(tmp_path):
    assert set(ALL_STAMPS) == {st.attribute for st in a.STAMPS}
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({**RESOURCE, a.K8S_NODE_NAME: "gke-node-7"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("ddcolor").start_as_current_span("ddcolor.inference", attributes=ALL_STAMPS):
        pass
    provider.shutdown()
    request = encode_spans(exporter.get_finished_spans())  # what OTLPSpanExporter.export serializes
    (tmp_path / "one.jsonl").write_text(message_to_json(request) + "\n")
    (tmp_path / "two.pb").write_bytes(proto_framed(request))
    db = tmp_path / "rca.duckdb"
    assert run("--db", str(db), str(tmp_path / "one.jsonl")) == 0
    columns = ", ".join(st.column for st in a.STAMPS)
    # Every stamp as sent, but the PCI bus id normalised (docs/contracts.md §2: `dddd:bb:dd.f` everywhere).
    sent = {**ALL_STAMPS, a.GPU_PCI_BUS_ID: "0000:3b:00.0"}
    expected = tuple(sent[st.attribute] for st in a.STAMPS)
    first = query(db, f"SELECT {columns}, service, service_version, host, k8s_node, attributes FROM spans")
    assert first == [(*expected, "ddcolor", "1.4.0", "node-a", "gke-node-7", "{}")]
    # The same span from the protobuf file is already stored; from a fresh store it reads the same.
    db2 = tmp_path / "rca2.duckdb"
    assert run("--db", str(db2), str(tmp_path / "two.pb")) == 0
    assert query(db2, f"SELECT {columns}, service, service_version, host, k8s_node, attributes FROM spans") == first


def test_the_same_files_twice_store_nothing_new(incident, tmp_path, capsys):
    db = tmp_path / "rca.duckdb"
    assert run("--db", str(db), str(incident)) == 0
    tables = ("spans", "span_events", "logs", "metric_samples", "kernel_events", "gpus")
    counts = [query(db, f"SELECT count(*) FROM {t}")[0][0] for t in tables]
    capsys.readouterr()
    assert run("--db", str(db), str(incident)) == 0
    assert [query(db, f"SELECT count(*) FROM {t}")[0][0] for t in tables] == counts
    assert "6 ingested (0 spans, 0 logs, 0 samples, 0 kernel events), 3 skipped, 0 failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.jsonl",
            lambda: message_to_json(lost_gpu_trace_request(1)) + '\n{"resourceSpans": [\n',
            "line 2: invalid JSON",
        ),
        ("cut.bin", lambda: proto_framed(lost_gpu_trace_request(2))[:-9], "message 1: truncated"),
        (
            "cut.gz",
            lambda: gzip.compress((message_to_json(lost_gpu_trace_request(1)) + "\n").encode() * 3)[:-30],
            "gzip",
        ),
        (
            "err.json",
            lambda: '{"status":"error","errorType":"bad_data","error":"parse error"}\n',
            "Prometheus answered",
        ),
        (
            "shape.jsonl",
            lambda: message_to_json(lost_gpu_trace_request(1)) + '\n{"resourceSpans": "none"}\n',
            "line 2: not a valid ExportTraceServiceRequest",
        ),
    ],
)
def test_a_broken_file_stores_nothing_and_fails_the_run(tmp_path, capsys, name, content, message):
    good = tmp_path / "good.jsonl"
    good.write_text(message_to_json(lost_gpu_trace_request(1)) + "\n")
    bad = tmp_path / name
    data = content()
    bad.write_bytes(data if isinstance(data, bytes) else data.encode())
    db = tmp_path / "rca.duckdb"
    assert run("--db", str(db), str(good), str(bad)) == 1
    err = capsys.readouterr().err
    assert err.endswith("Error: 1 file could not be read; nothing of it was stored (the other files were)\n")
    reason = next(line for line in err.splitlines() if line.startswith(str(bad)))
    assert message in reason
    assert query(db, "SELECT count(*) FROM spans") == [(2,)]  # the good file's two spans only


def test_invalid_spans_in_a_file_are_rejected_alone_and_reported(tmp_path):
    line = message_to_json(lost_gpu_trace_request(1))
    first_span_id = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"]
    path = tmp_path / "ids.jsonl"
    path.write_text(line.replace(first_span_id, "ab" + first_span_id) + "\n")
    with Store() as store:
        report = ingest_paths(store, [path]).files[0]
        assert (report.status, report.accepted, report.stored, report.rejected) == ("ingested", 1, 1, 1)
        assert report.notes == (
            f"span ab{first_span_id[:14]} ('ddcolor.inference'): span_id is 'ab{first_span_id}', "
            "expected 8 non-zero bytes of hex",
        )


def test_a_decompression_bomb_is_refused(tmp_path, capsys):
    bomb = tmp_path / "spans.jsonl.zst"
    bomb.write_bytes(zstandard.ZstdCompressor().compress(b'{"resourceSpans":["' + b"x" * 5_000_000 + b'"]}\n'))
    assert run("--db", str(tmp_path / "rca.duckdb"), "--max-bytes", "1000000", str(bomb)) == 1
    assert "decompresses to more than 1000000 bytes" in capsys.readouterr().err


def test_raw_dmesg_needs_boot_time_and_host(tmp_path, capsys):
    log = tmp_path / "dmesg.txt"
    log.write_text("[  100.500000] NVRM: Xid (PCI:0000:3b:00): 48, pid=77, name=python3, DBE (double bit error)\n")
    db = tmp_path / "rca.duckdb"
    assert run("--db", str(db), str(log)) == 0
    assert "seconds since boot" in capsys.readouterr().err
    assert query(db, "SELECT count(*) FROM kernel_events") == [(0,)]
    assert run("--db", str(db), "--host", "node-a", "--boot-time", "2026-03-02T09:00:00Z", str(log)) == 0
    assert query(db, "SELECT ts_ns, host, xid FROM kernel_events") == [(1_772_442_100_500_000_000, "node-a", 48)]


def test_boot_time_without_host_is_a_usage_error(tmp_path, capsys):
    log = tmp_path / "dmesg.txt"
    log.write_text("[  1.0] NVRM: hello\n")
    assert run("--db", str(tmp_path / "x.duckdb"), "--boot-time", "1700000000", str(log)) == 2
    assert (
        capsys.readouterr().err.strip() == "Error: --boot-time needs --host (raw dmesg lines do not name their machine)"
    )


def test_db_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_RCA_DB", str(tmp_path / "env.duckdb"))
    spans = tmp_path / "spans.jsonl"
    spans.write_text(message_to_json(lost_gpu_trace_request(1)) + "\n")
    assert run(str(spans)) == 0
    assert query(tmp_path / "env.duckdb", "SELECT count(*) FROM spans") == [(2,)]


def test_a_locked_db_gives_one_line_and_exit_1(tmp_path):
    db = tmp_path / "held.duckdb"
    spans = tmp_path / "spans.jsonl"
    spans.write_text(message_to_json(lost_gpu_trace_request(1)) + "\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, duckdb; c = duckdb.connect({str(db)!r}); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run(
            [sys.executable, "-m", "gpu_rca", "ingest", "--db", str(db), str(spans)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: database ")
    assert "locked by another process" in done.stderr and "ingest into another --db" in done.stderr
    assert "--server" not in done.stderr  # ingest has no --server: the advice fits the verb
