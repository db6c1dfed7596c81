"""Data safety: files that are not a usable store are refused and left byte-identical, a v1 store is migrated
forward with its rows, `serve --retention` deletes old rows in bounded steps, and /metrics counts what the
server stored, rejected and dropped."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from gpu_rca.correlate.server import ServerConfig, create_app
from gpu_rca.correlate.server.retention import RETENTION_TIMES
from gpu_rca.correlate.store import Store
from gpu_rca.schemas import store as s
from gpu_rca.schemas.errors import StoreError
from tests.support.otlp import every_stamp_trace_request
from tests.support.serving import PB, running, writer_held
from tests.support.waiting import wait_for

NS = 1_000_000_000
DAY_NS = 86_400 * NS

# --- files that are not a usable store -------------------------------------------------------------


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(64 * 1024))


def _random_bytes_with_duckdb_magic(path: Path) -> None:
    data = bytearray(random.Random(8).randbytes(64 * 1024))
    data[8:12] = b"DUCK"  # passes the magic check; DuckDB itself must then refuse it
    path.write_bytes(bytes(data))


def _other_duckdb_database(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE sales (region VARCHAR, amount DOUBLE)")
        con.execute("INSERT INTO sales VALUES ('north', 12.5)")


def _truncated_store(path: Path) -> None:
    with Store(path) as store:
        store.ingest_trace_request(every_stamp_trace_request(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _newer_store(path: Path) -> None:
    with Store(path):
        pass
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE schema_meta SET value = '99' WHERE key = 'schema_version'")


NOT_A_STORE = {
    "random bytes": (_random_bytes, "not a DuckDB database"),
    "random bytes with DuckDB's magic": (_random_bytes_with_duckdb_magic, "corrupted or unreadable"),
    "another DuckDB database": (_other_duckdb_database, "not a gpu-rca store"),
    "a truncated gpu-rca store": (_truncated_store, "corrupted or unreadable"),
    "a store from a newer gpu-rca": (_newer_store, "newer than this gpu-rca"),
}


@pytest.mark.parametrize("kind", NOT_A_STORE)
def test_a_file_that_is_not_a_usable_store_is_refused_and_never_touched(tmp_path: Path, kind: str) -> None:
    make, message = NOT_A_STORE[kind]
    db = tmp_path / "store.duckdb"
    make(db)
    before = db.read_bytes()
    for read_only in (False, True):
        with pytest.raises(StoreError, match=message):
            Store.open(db, read_only=read_only)
    spans = tmp_path / "spans.otlp.pb"
    spans.write_bytes(len(payload := every_stamp_trace_request(2).SerializeToString()).to_bytes(4, "big") + payload)
    for args in (["ingest", "--db", str(db), str(spans)], ["serve", "--db", str(db), "--port", "0"]):
        run = subprocess.run([sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 1, (args, run.stderr)
        assert run.stderr.strip().splitlines()[-1].startswith("Error: ") and message in run.stderr, run.stderr
    assert db.read_bytes() == before  # byte-identical: never written, checkpointed or "repaired"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spans.otlp.pb", "store.duckdb"]  # no WAL left


# --- migrations ------------------------------------------------------------------------------------

#: The store as schema version 1 shipped it, copied here on purpose: a v1 file made by this DDL must keep
#: opening, and end with the same tables and columns as a fresh store, whatever later versions change.
V1_SPAN_COLUMNS = """
    trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, parent_span_id VARCHAR, name VARCHAR NOT NULL,
    kind VARCHAR, service VARCHAR, service_version VARCHAR, host VARCHAR, k8s_node VARCHAR, scope VARCHAR,
    start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL, status VARCHAR NOT NULL, status_message VARCHAR,
    is_inference BOOLEAN NOT NULL, gpu_index BIGINT, gpu_uuid VARCHAR, gpu_name VARCHAR, gpu_pci_bus_id VARCHAR,
    gpu_mig_instance_id BIGINT, gpu_telemetry_source VARCHAR, gpu_telemetry_samples BIGINT,
    gpu_telemetry_stale BOOLEAN, gpu_temperature_max BIGINT, gpu_temperature_slowdown BIGINT,
    gpu_power_max DOUBLE, gpu_power_mean DOUBLE, gpu_power_limit DOUBLE, gpu_memory_used_start BIGINT,
    gpu_memory_used_max BIGINT, gpu_memory_total BIGINT, gpu_memory_process_max BIGINT,
    gpu_utilization_mean DOUBLE, gpu_utilization_max DOUBLE, gpu_clock_sm_min BIGINT, gpu_clock_sm_max BIGINT,
    gpu_throttle_reasons VARCHAR[], gpu_ecc_corrected_delta BIGINT, gpu_ecc_uncorrected_delta BIGINT,
    gpu_xid BIGINT[], gpu_inflight_max BIGINT, inference_queue_ms DOUBLE, error_type VARCHAR,
    ddcolor_input_size BIGINT, ddcolor_model VARCHAR, ddcolor_task_type VARCHAR, image_width BIGINT,
    image_height BIGINT, attributes JSON, resource JSON,
    duration_ms DOUBLE GENERATED ALWAYS AS ((end_ns - start_ns) / 1e6) VIRTUAL,
    PRIMARY KEY (trace_id, span_id)"""
V1_DDL = (
    f"CREATE TABLE spans ({V1_SPAN_COLUMNS})",
    """CREATE TABLE span_events (trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, seq INTEGER NOT NULL,
        ts_ns BIGINT NOT NULL, name VARCHAR NOT NULL, attributes JSON, PRIMARY KEY (trace_id, span_id, seq))""",
    """CREATE TABLE logs (log_id VARCHAR PRIMARY KEY, ts_ns BIGINT NOT NULL, severity VARCHAR,
        severity_number INTEGER, body VARCHAR, trace_id VARCHAR, span_id VARCHAR, service VARCHAR, host VARCHAR,
        source VARCHAR, attributes JSON, resource JSON)""",
    """CREATE TABLE metric_samples (ts_ns BIGINT NOT NULL, host VARCHAR, gpu_uuid VARCHAR NOT NULL,
        metric VARCHAR NOT NULL, value DOUBLE NOT NULL, source VARCHAR, PRIMARY KEY (metric, gpu_uuid, ts_ns))""",
    """CREATE TABLE kernel_events (event_id VARCHAR PRIMARY KEY, ts_ns BIGINT NOT NULL, host VARCHAR,
        pci_bus_id VARCHAR, gpu_uuid VARCHAR, xid INTEGER, pid BIGINT, process VARCHAR, message VARCHAR)""",
    """CREATE TABLE gpus (gpu_uuid VARCHAR PRIMARY KEY, host VARCHAR, gpu_index INTEGER, pci_bus_id VARCHAR,
        name VARCHAR, memory_total_bytes BIGINT, slowdown_temp_c INTEGER, host_source VARCHAR)""",
    """CREATE TABLE digests (id VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, trigger VARCHAR,
        window_start_ns BIGINT, window_end_ns BIGINT, json JSON, markdown VARCHAR, html VARCHAR)""",
    "CREATE TABLE schema_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    "INSERT INTO schema_meta VALUES ('app', 'gpu-rca'), ('schema_version', '1')",
    """INSERT INTO spans (trace_id, span_id, name, service, start_ns, end_ns, status, is_inference, gpu_uuid,
        error_type, gpu_xid, attributes) VALUES ('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331',
        'ddcolor.inference', 'ddcolor', 1000000000, 1500000000, 'ERROR', true, 'GPU-1', 'cuda_oom', [79],
        '{"ddcolor.input_size": 1280}')""",
    "INSERT INTO gpus VALUES ('GPU-1', 'node-a', 0, '0000:3b:00.0', 'NVIDIA L4', 24152899584, 92, 'span')",
    """INSERT INTO logs (log_id, ts_ns, severity, body, trace_id) VALUES ('l1', 1200000000, 'ERROR',
        'CUDA out of memory', '0af7651916cd43dd8448eb211c80319c')""",
)


def _schema(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    schema: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        schema.setdefault(table, []).append((column, data_type))
    return schema


def test_a_v1_store_is_migrated_forward_with_its_rows(tmp_path: Path) -> None:
    old = tmp_path / "v1.duckdb"
    with duckdb.connect(str(old)) as con:
        for statement in V1_DDL:
            con.execute(statement)
    with Store(tmp_path / "fresh.duckdb") as fresh:
        fresh_schema = _schema(fresh.connection)
    with Store.open(old) as store:
        assert store.schema_version == s.SCHEMA_VERSION
        assert _schema(store.connection) == fresh_schema  # the migrations lead exactly where CREATE_V1 + them lead
        con = store.connection
        assert con.execute("SELECT span_id, error_type, gpu_xid, duration_ms FROM spans").fetchall() == [
            ("b7ad6b7169203331", "cuda_oom", [79], 500.0)
        ]
        assert con.execute("SELECT body FROM logs").fetchall() == [("CUDA out of memory",)]
        assert store.ingest_trace_request(every_stamp_trace_request(2)).stored == 2  # and it takes new rows
    with Store.open(old, read_only=True) as again:  # migrated once: a reader needs no write
        assert again.schema_version == s.SCHEMA_VERSION


# --- retention -------------------------------------------------------------------------------------

OLD_SPANS = 25_000


def _old_and_new_rows(store: Store, now_ns: int) -> None:
    """OLD_SPANS spans (with a log and a sample each) ten days old, and 3 fresh SDK spans."""
    old_ns = now_ns - 10 * DAY_NS
    con = store.connection
    con.execute(f"""INSERT INTO spans (trace_id, span_id, name, start_ns, end_ns, status, is_inference)
        SELECT lpad(to_hex(range), 32, '0'), lpad(to_hex(range), 16, '0'), 'ddcolor.inference',
               {old_ns} + range, {old_ns} + range + 1000, 'OK', true FROM range(1, {OLD_SPANS + 1})""")
    con.execute(f"""INSERT INTO logs (log_id, ts_ns, body) SELECT 'l' || range, {old_ns} + range, 'old'
        FROM range({OLD_SPANS})""")
    con.execute(f"""INSERT INTO metric_samples (ts_ns, gpu_uuid, metric, value)
        SELECT {old_ns} + range, 'GPU-1', 'DCGM_FI_DEV_GPU_TEMP', 60 FROM range({OLD_SPANS})""")
    request = every_stamp_trace_request(3)
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.start_time_unix_nano, span.end_time_unix_nano = now_ns - NS, now_ns
    store.ingest_trace_request(request)


def test_retention_deletes_old_rows_in_bounded_steps_while_ingest_goes_on(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.duckdb")
    _old_and_new_rows(store, time.time_ns())
    config = ServerConfig(retention_s=7 * 86_400, retention_interval_s=3600, retention_batch_rows=4_000)
    app = create_app(store, config, close_store=False)
    reader = store.cursor()
    with running(app) as client:
        # Ingest while retention runs: requests are committed between its steps.
        posted = [
            client.post("/v1/traces", content=every_stamp_trace_request(2).SerializeToString(), headers=PB)
            for _ in range(3)
        ]
        wait_for(
            lambda: (
                'gpu_rca_serve_retention_deleted_rows_total{table="metric_samples"} 25000.0'
                in client.get("/metrics").text
            ),
            timeout_s=60,
            what="retention finished",
        )
        metrics = client.get("/metrics").text
    commits = int(
        float(
            next(
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("gpu_rca_serve_write_seconds_count")
            )
        )
    )
    assert [r.status_code for r in posted] == [200] * 3
    counts = {table: reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table, _ in RETENTION_TIMES}
    reader.close()
    store.close()
    assert counts == {
        s.SPANS: 3 + 3 * 2,
        s.SPAN_EVENTS: counts[s.SPAN_EVENTS],
        s.LOGS: 0,
        s.METRIC_SAMPLES: 0,
        s.KERNEL_EVENTS: 0,
        s.DIGESTS: 0,
    }  # only the old rows went; fresh spans stay
    for table in (s.SPANS, s.LOGS, s.METRIC_SAMPLES):
        assert f'gpu_rca_serve_retention_deleted_rows_total{{table="{table}"}} 25000.0' in metrics
    # 25,000 rows in steps of at most 4,000: at least 7 transactions per table, never one giant delete.
    assert commits >= 3 * 7


def test_retention_must_be_a_duration(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "serve", "--db", str(tmp_path / "s.duckdb"), "--retention", "a week"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "Error: --retention: 'a week' is not a duration like 30s, 2h or 1h30m" in run.stderr
    assert not (tmp_path / "s.duckdb").exists()


# --- the server's own counters ---------------------------------------------------------------------


def test_metrics_count_ingested_rejected_and_dropped_spans(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.duckdb")
    good = every_stamp_trace_request(3)
    app = create_app(
        store, ServerConfig(max_queue=1, log_max_bytes=len(good.SerializeToString()) + 60), close_store=False
    )
    writer = app.state.gpu_rca.writer
    with running(app) as client:
        bad = every_stamp_trace_request(2)
        bad.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00" * 16  # invalid: rejected alone
        loader = app.state.gpu_rca.loader
        assert client.post("/v1/traces", content=good.SerializeToString(), headers=PB).status_code == 200
        assert loader.catch_up(20)
        assert client.post("/v1/traces", content=bad.SerializeToString(), headers=PB).status_code == 200
        assert loader.catch_up(20)
        with writer_held(writer):  # the loader cannot store: the log fills
            assert client.post("/v1/traces", content=good.SerializeToString(), headers=PB).status_code == 200
            busy = client.post("/v1/traces", content=every_stamp_trace_request(4).SerializeToString(), headers=PB)
        assert loader.catch_up(20)
        metrics = client.get("/metrics").text
    store.close()
    assert busy.status_code == 503
    assert "gpu_rca_serve_spans_ingested_total 4.0" in metrics
    assert "gpu_rca_serve_spans_rejected_total 1.0" in metrics
    # A full log refuses from the request's headers, before its body is read: counted per request.
    assert 'gpu_rca_serve_requests_refused_total{reason="log_full"} 1.0' in metrics
    assert 'gpu_rca_serve_requests_total{code="503",route="/v1/traces"} 1.0' in metrics
