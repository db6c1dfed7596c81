"""The DuckDB store: real OTel SDK payloads in, typed rows out, idempotent, one transaction per batch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from gpu_rca.correlate import GpuRecord, KernelEvent, MetricSample, Store
from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import store as schema
from gpu_rca.schemas.errors import StoreError
from tests.support.otlp import RESOURCE, UUID, lost_gpu_trace_request


def test_sdk_spans_land_in_typed_columns():
    request = lost_gpu_trace_request()
    with Store() as store:
        result = store.ingest_trace_request(request)
        assert (result.accepted, result.rejected, result.stored) == (2, 0, 2)
        row = store.connection.execute(
            """SELECT trace_id, span_id, parent_span_id, service, service_version, host, status, is_inference,
                      gpu_uuid, gpu_index, gpu_pci_bus_id, gpu_temperature_max, gpu_power_mean, gpu_memory_total,
                      gpu_throttle_reasons, gpu_xid, inference_queue_ms, error_type, ddcolor_input_size,
                      ddcolor_model, attributes->>'$."http.route"', attributes->>'$."gpu.uuid"',
                      resource->>'$."service.name"'
               FROM spans WHERE is_inference"""
        ).fetchone()
        span = request.resource_spans[0].scope_spans[0].spans
        inference = next(sp for sp in span if sp.name == "ddcolor.inference")
        assert row == (
            inference.trace_id.hex(),
            inference.span_id.hex(),
            inference.parent_span_id.hex(),
            "ddcolor",
            "1.4.0",
            "node-a",
            "ERROR",
            True,
            UUID,
            0,
            "0000:3b:00.0",
            83,
            61.5,
            24_152_899_584,  # PCI bus id normalised (docs/contracts.md §2)
            ["sw_thermal", "hw_slowdown"],
            [79],
            3.25,
            "gpu_lost",
            1280,
            "ddcolor_paper_tiny",
            "/colorize",
            None,
            "ddcolor",
        )
        assert len(row[0]) == 32 and row[0] == row[0].lower()
        server = store.connection.execute("SELECT is_inference, status, gpu_uuid FROM spans WHERE NOT is_inference")
        assert server.fetchall() == [(False, "UNSET", None)]
        events = store.connection.execute("SELECT seq, name, attributes->>'xid' FROM span_events").fetchall()
        assert events == [(0, "gpu.xid", "79")]


def test_every_stamp_has_its_typed_column():
    with Store() as store:
        types = dict(
            store.connection.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'spans'"
            ).fetchall()
        )
    for stamp in a.STAMPS:
        assert types[stamp.column] == stamp.sql_type, stamp.attribute


def test_same_spans_twice_are_stored_once():
    request = lost_gpu_trace_request(3)
    with Store() as store:
        first = store.ingest_trace_request(request)
        second = store.ingest_trace_request(request)
        assert (first.stored, second.stored, second.accepted) == (4, 0, 4)
        counts = store.connection.execute("SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM span_events)")
        assert counts.fetchone() == (4, 3)


def test_invalid_spans_are_rejected_alone():
    request = lost_gpu_trace_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    inference = [sp for sp in spans if sp.name == "ddcolor.inference"]
    inference[0].span_id = b"\x01\x02\x03"
    inference[1].end_time_unix_nano = inference[1].start_time_unix_nano - 1
    with Store() as store:
        result = store.ingest_trace_request(request)
        assert (result.accepted, result.rejected, result.stored) == (2, 2, 2)
        assert "span_id is '010203', expected 8 non-zero bytes of hex" in result.errors[0]
        assert "end_time_unix_nano is before" in result.errors[1]
        stored = store.connection.execute("SELECT span_id FROM spans WHERE is_inference").fetchall()
        assert stored == [(inference[2].span_id.hex(),)]


def test_sdk_logs_are_stored_once_with_trace_ids():
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create(RESOURCE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("ddcolor")
    logger.emit(
        timestamp=1_700_000_000_123_456_789,
        severity_number=SeverityNumber.ERROR,
        body="CUDA error: an illegal memory access was encountered",
        attributes={"code.function": "run"},
    )
    logger.emit(timestamp=1_700_000_000_223_456_789, severity_number=SeverityNumber.INFO, body={"k": [1, 2]})
    provider.shutdown()
    request = encode_logs(exporter.get_finished_logs())
    with Store() as store:
        assert store.ingest_logs_request(request).stored == 2
        assert store.ingest_logs_request(request).stored == 0
        rows = store.connection.execute(
            "SELECT ts_ns, severity, body, service, host, attributes->>'$.\"code.function\"' FROM logs ORDER BY ts_ns"
        ).fetchall()
    assert rows == [
        (
            1_700_000_000_123_456_789,
            "ERROR",
            "CUDA error: an illegal memory access was encountered",
            "ddcolor",
            "node-a",
            "run",
        ),
        (1_700_000_000_223_456_789, "INFO", '{"k":[1,2]}', "ddcolor", "node-a", None),
    ]


def test_samples_without_uuid_are_placed_through_the_inventory():
    with Store() as store:
        store.upsert_gpus([GpuRecord(UUID, host="node-a", gpu_index=0, pci_bus_id="0000:3b:00.0")])
        result = store.ingest_metric_samples(
            [
                MetricSample(1_000, "DCGM_FI_DEV_GPU_TEMP", 70.0, host="node-a", pci_bus_id="0000:3b:00.0"),
                MetricSample(2_000, "DCGM_FI_DEV_GPU_TEMP", 71.0, host="node-a", gpu_index=0),
                MetricSample(3_000, "DCGM_FI_DEV_GPU_TEMP", 72.0, host="node-b", gpu_index=0),
                MetricSample(1_000, "DCGM_FI_DEV_GPU_TEMP", 70.0, gpu_uuid=UUID, host="node-a"),
                MetricSample(4_000, "DCGM_FI_DEV_GPU_TEMP", 73.0, gpu_uuid=UUID),  # 1.x: no host label
            ]
        )
        assert (result.accepted, result.rejected, result.stored) == (4, 1, 3)
        rows = store.connection.execute(
            "SELECT ts_ns, gpu_uuid, host, value FROM metric_samples ORDER BY ts_ns"
        ).fetchall()
    assert rows == [(1_000, UUID, "node-a", 70.0), (2_000, UUID, "node-a", 71.0), (4_000, UUID, "node-a", 73.0)]


def test_kernel_events_are_resolved_when_the_inventory_learns_the_gpu():
    event = KernelEvent(5_000, "node-a", "0000:3b:00.0", None, 79, None, None, "GPU has fallen off the bus.")
    with Store() as store:
        assert store.ingest_kernel_events([event, event]).stored == 1
        assert store.connection.execute("SELECT gpu_uuid FROM kernel_events").fetchone() == (None,)
        store.ingest_trace_request(lost_gpu_trace_request())  # its span stamps name the GPU at 3b:00.0 on node-a
        assert store.connection.execute("SELECT gpu_uuid FROM kernel_events").fetchone() == (UUID,)


def test_span_host_beats_a_metric_label_host():
    with Store() as store:
        store.upsert_gpus([GpuRecord(UUID, host="dcgm-exporter-wwwjh", name="NVIDIA L4", host_source="metric")])
        store.ingest_trace_request(lost_gpu_trace_request())
        store.upsert_gpus([GpuRecord(UUID, host="dcgm-exporter-zzz", host_source="metric")])
        row = store.connection.execute(
            "SELECT host, host_source, gpu_index, pci_bus_id, name, memory_total_bytes, slowdown_temp_c FROM gpus"
        ).fetchone()
    assert row == ("node-a", "span", 0, "0000:3b:00.0", "NVIDIA L4", 24_152_899_584, 90)


def test_a_failed_transaction_stores_nothing():
    with Store() as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.ingest_trace_request(lost_gpu_trace_request())
                raise RuntimeError("the file turned out truncated")
        assert store.connection.execute("SELECT count(*) FROM spans").fetchone() == (0,)


def test_file_store_persists_and_records_its_version(tmp_path):
    path = tmp_path / "rca.duckdb"
    with Store.open(path) as store:
        store.ingest_trace_request(lost_gpu_trace_request())
    with Store.open(path, read_only=True) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        assert store.connection.execute("SELECT count(*) FROM spans").fetchone() == (2,)


def test_an_empty_file_becomes_a_new_store_only_when_asked(tmp_path):
    path = tmp_path / "made-by-mktemp.duckdb"
    path.touch()
    with pytest.raises(StoreError, match=r"empty file \(0 bytes\).*--init"):
        Store.open(path)
    assert path.stat().st_size == 0
    with Store.open(path, init=True) as store:
        assert store.schema_version == schema.SCHEMA_VERSION


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    from gpu_rca.correlate import default_db_path

    monkeypatch.delenv("GPU_RCA_DB", raising=False)
    assert default_db_path() == "gpu-rca.duckdb"
    monkeypatch.setenv("GPU_RCA_DB", str(tmp_path / "x.duckdb"))
    assert default_db_path() == str(tmp_path / "x.duckdb")


def test_a_store_held_by_another_process_gives_one_line(tmp_path):
    path = tmp_path / "held.duckdb"
    Store.open(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, duckdb
            con = duckdb.connect({str(path)!r})
            print("held", flush=True)
            sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError) as caught:
            Store.open(path)
        message = str(caught.value)
        # The store says what is wrong; the CLI adds the advice that fits the verb (tests/test_cli_error_advice.py).
        assert "locked by another process" in message and "\n" not in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


def test_a_foreign_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"SQLite format 3\x00" + bytes(2048))
    with pytest.raises(StoreError, match="not a DuckDB database"):
        Store.open(path)
    assert path.read_bytes() == b"SQLite format 3\x00" + bytes(2048)


def test_another_duckdb_database_is_not_a_store(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE sales (x INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not a gpu-rca store"):
        Store.open(path)
    con = duckdb.connect(str(path))
    assert [r[0] for r in con.execute("SHOW TABLES").fetchall()] == ["sales"]
    con.close()


def test_a_corrupted_store_gives_a_clear_error(tmp_path):
    path = tmp_path / "broken.duckdb"
    Store.open(path).close()
    data = bytearray(path.read_bytes())
    data[4096:] = bytes(len(data) - 4096)  # keep DuckDB's magic, wipe its database headers and blocks
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"cannot open|not a gpu-rca store"):
        Store.open(path)


def test_a_newer_store_is_refused_and_an_older_one_is_migrated(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    Store.open(path).close()
    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(schema.MIGRATIONS, current + 1, ("ALTER TABLE digests ADD COLUMN causes VARCHAR[]",))
    with Store.open(path) as store:
        assert store.schema_version == current + 1
        columns = {r[0] for r in store.connection.execute("DESCRIBE digests").fetchall()}
        assert "causes" in columns
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current)
    with pytest.raises(StoreError, match="newer than this gpu-rca"):
        Store.open(path)


def test_a_version_1_store_gains_the_gpu_join_column_and_the_gpu_pods_table(tmp_path):
    path = tmp_path / "v1.duckdb"
    import duckdb

    con = duckdb.connect(str(path))
    for statement in schema.CREATE_V1:
        con.execute(statement)
    con.execute(f"INSERT INTO {schema.SCHEMA_META} VALUES ('app', 'gpu-rca'), ('schema_version', '1')")
    con.close()
    with Store.open(path) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        spans = {r[0] for r in store.connection.execute("DESCRIBE spans").fetchall()}
        tables = {r[0] for r in store.connection.execute("SHOW TABLES").fetchall()}
    assert "gpu_join" in spans and schema.GPU_PODS in tables
