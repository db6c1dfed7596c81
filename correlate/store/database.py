"""The correlator's DuckDB store (docs/contracts.md §7): open, migrate, and ingest in bulk, idempotently.

Every ingest call is one transaction (a batch that fails stores nothing) unless it runs inside
`Store.transaction()`, which makes several calls one. Rows go in as Arrow tables, and only those whose
contract key is not stored yet, so a retried OTLP export or a file read twice stores nothing new.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from gpu_rca.correlate.otlp import decode as otlp
from gpu_rca.correlate.otlp.rows import LogBatch, SpanBatch
from gpu_rca.correlate.store.errors import is_key_conflict, store_error
from gpu_rca.correlate.store.gpu_join import place_spans
from gpu_rca.correlate.store.open import connect
from gpu_rca.correlate.store.query import scalar
from gpu_rca.correlate.store.records import (
    HOST_SOURCES,
    GpuRecord,
    IngestResult,
    KernelEvent,
    LogRecord,
    MetricSample,
    PodRecord,
    kernel_event_id,
)
from gpu_rca.correlate.store.units import Units
from gpu_rca.schemas import store as s
from gpu_rca.schemas.errors import StoreError

#: Environment variable naming the default database (docs/contracts.md §3).
DB_ENV = "GPU_RCA_DB"
DEFAULT_DB = "gpu-rca.duckdb"

_LOG_SCHEMA = otlp.arrow_schema(
    (
        ("log_id", "VARCHAR"),
        ("ts_ns", "BIGINT"),
        ("severity", "VARCHAR"),
        ("severity_number", "INTEGER"),
        ("body", "VARCHAR"),
        ("trace_id", "VARCHAR"),
        ("span_id", "VARCHAR"),
        ("service", "VARCHAR"),
        ("host", "VARCHAR"),
        ("source", "VARCHAR"),
        ("attributes", "JSON"),
        ("resource", "JSON"),
    )
)
_SAMPLE_SCHEMA = otlp.arrow_schema(
    (
        ("ts_ns", "BIGINT"),
        ("metric", "VARCHAR"),
        ("value", "DOUBLE"),
        ("gpu_uuid", "VARCHAR"),
        ("host", "VARCHAR"),
        ("pci_bus_id", "VARCHAR"),
        ("gpu_index", "INTEGER"),
        ("source", "VARCHAR"),
    )
)
_KERNEL_SCHEMA = otlp.arrow_schema(
    (
        ("event_id", "VARCHAR"),
        ("ts_ns", "BIGINT"),
        ("host", "VARCHAR"),
        ("pci_bus_id", "VARCHAR"),
        ("gpu_uuid", "VARCHAR"),
        ("xid", "INTEGER"),
        ("pid", "BIGINT"),
        ("process", "VARCHAR"),
        ("message", "VARCHAR"),
    )
)
_GPU_FIELDS = (
    "gpu_uuid",
    "host",
    "gpu_index",
    "pci_bus_id",
    "name",
    "memory_total_bytes",
    "slowdown_temp_c",
    "host_source",
)
_POD_FIELDS = ("gpu_uuid", "namespace", "pod", "container", "host", "first_ns", "last_ns")
_POD_SCHEMA = otlp.arrow_schema(
    tuple(zip(_POD_FIELDS, ("VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BIGINT", "BIGINT")))
)
_GPU_SCHEMA = otlp.arrow_schema(
    tuple(zip(_GPU_FIELDS, ("VARCHAR", "VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "BIGINT", "INTEGER", "VARCHAR")))
)
_HOST_RANK = "CASE {} " + " ".join(f"WHEN '{n}' THEN {i}" for i, n in enumerate(HOST_SOURCES)) + " ELSE -1 END"


def default_db_path() -> str:
    """`$GPU_RCA_DB`, else `./gpu-rca.duckdb` (docs/contracts.md §3)."""
    return os.environ.get(DB_ENV) or DEFAULT_DB


class Store:
    """One gpu-rca DuckDB database. Thread-safe: writes are serialised; `cursor()` reads from any thread
    without waiting for them."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        read_only: bool = False,
        init: bool = False,
        units: Units | None = None,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        #: Which spans besides those carrying `gpu.telemetry.source` are inference spans (`--unit`).
        self.units = units or Units()
        self._lock = threading.RLock()
        self._depth = 0
        # GPU records as last merged into `gpus`, by UUID: merging the same record again changes nothing,
        # and every request of a busy server names the same few GPUs.
        self._gpus_merged: dict[str, GpuRecord] = {}
        self._con = connect(self.path, read_only, init=init)
        # Readers get their cursors from this connection, never from the writer's: DuckDB gives each
        # connection its own MVCC snapshot, so a read does not wait for a write transaction to end.
        self._reader_lock = threading.Lock()
        self._reader: duckdb.DuckDBPyConnection | None = None
        try:
            # The writer's own connection only: the progress bar's bookkeeping costs about 0.1 ms per
            # statement, a tenth of a small insert, and nobody watches it here.
            self._con.execute("SET enable_progress_bar = false")
            self._prepare()
            self._reader = self._con.cursor()
        except duckdb.Error as exc:  # a truncated file opens, then fails on its first read
            self._con.close()
            raise store_error(exc, self.path, opening=True) from exc
        except BaseException:
            self._con.close()
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        init: bool = False,
        units: Units | None = None,
    ) -> Store:
        """Open (creating or migrating) the store at `path`, default `default_db_path()`.

        `init`: an empty (0-byte) file there becomes a new store; without it such a file is refused.
        `units`: the `--unit` rules that make spans gpu-rca did not stamp inference spans as they are stored.
        """
        return cls(default_db_path() if path is None else path, read_only=read_only, init=init, units=units)

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (checkpointing it); safe to call twice."""
        with self._lock, self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._con is not None:
                self._con.close()
                self._con = None  # type: ignore[assignment]

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection, for SQL reads in the thread that owns the store."""
        if self._con is None:
            raise StoreError(f"store {self.path} is closed")
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the same database, for reading from another thread; close it when done.

        It reads the last committed state (a snapshot), and neither waits for nor sees a write in progress.
        """
        with self._reader_lock:
            if self._reader is None:
                raise StoreError(f"store {self.path} is closed")
            return self._reader.cursor()

    @property
    def schema_version(self) -> int:
        """The schema version recorded in `schema_meta`."""
        row = self.connection.execute(f"SELECT value FROM {s.SCHEMA_META} WHERE key = 'schema_version'").fetchone()
        if row is None:  # open() checks the version, so only a table changed behind the store's back lacks it
            raise StoreError(f"{self.path}: no schema_version in {s.SCHEMA_META}; not a gpu-rca store")
        return int(row[0])

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Make every ingest call inside one transaction: all are stored, or (on an exception) none."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            con = self.connection
            con.begin()
            self._depth = 1
            try:
                yield self
            except duckdb.Error as exc:
                con.rollback()
                self._gpus_merged.clear()
                raise store_error(exc, self.path) from exc
            except BaseException:
                con.rollback()
                self._gpus_merged.clear()
                raise
            else:
                con.commit()
            finally:
                self._depth = 0

    # --- ingest --------------------------------------------------------------------------------
    def ingest_trace_request(self, request: Any) -> IngestResult:
        """Store an ExportTraceServiceRequest's spans, events and GPUs; invalid spans are rejected alone."""
        return self.ingest_span_batch(otlp.spans_from_request(request))

    def ingest_span_batch(self, batch: SpanBatch) -> IngestResult:
        """Store rows built by `correlate.otlp.rows.SpanRows` (what `ingest_trace_request` does after decoding)."""
        return self.ingest_span_batches([batch])[0]

    def ingest_span_batches(self, batches: list[SpanBatch]) -> list[IngestResult]:
        """Store several batches atomically, a result for each (the server's group commit).

        Spans are new almost always (a key is stored twice only when an export is retried), so they first go
        in with one plain `INSERT` per table: its cost does not grow with the table, unlike any statement
        that looks the batch up in it. If a key is already stored, that statement fails, its transaction is
        rolled back, and the batches are stored again looking each up (`_insert_new`). Inside a caller's
        transaction, where a failed statement would abort the caller's work too, only the lookup is used.
        """
        batches = [dataclasses.replace(b, spans=self.units.select(b.spans, b.events)) for b in batches]
        with self._lock:
            if self._depth:
                results = [self._insert_new(batch) for batch in batches]
            else:
                try:
                    results = self._insert_all(batches)
                except _KeyAlreadyStored:
                    with self.transaction():
                        results = [self._insert_new(batch) for batch in batches]
            self._join_new_spans(batches)
            return [self._count_traces_without_inference(b, r) for b, r in zip(batches, results)]

    def _join_new_spans(self, batches: list[SpanBatch]) -> None:
        """Join the batches' inference spans that name no GPU to one (gpu_join.py); nothing to do for spans a
        collector stamped, which name theirs."""
        starts = [
            b.spans.filter(pc.and_(b.spans["is_inference"], pc.is_null(b.spans["gpu_uuid"])))["start_ns"]
            for b in batches
        ]
        starts = [column for column in starts if len(column)]
        if not starts:
            return
        low = min(pc.min(column).as_py() for column in starts)
        high = max(pc.max(column).as_py() for column in starts)
        with self.transaction():
            place_spans(self.connection, low, high)

    def _count_traces_without_inference(self, batch: SpanBatch, result: IngestResult) -> IngestResult:
        """`result` with the traces whose root span is in `batch` and that hold no inference span.

        A trace is judged when its root span arrives: the root ends last, so the SDK exports its
        inference spans before or with it. Traces whose root is remote (a caller's span) are not judged.
        """
        spans = batch.spans
        if spans.num_rows == 0:
            return result
        roots = spans.filter(pc.is_null(spans["parent_span_id"]))
        if roots.num_rows == 0:
            return result
        inference = spans.filter(spans["is_inference"])["trace_id"]
        candidates = roots.filter(pc.invert(pc.is_in(roots["trace_id"], value_set=inference)))
        if candidates.num_rows == 0:
            return result
        ids = pc.unique(candidates["trace_id"]).to_pylist()
        # A trace's spans lie within its root's time: the bounds let DuckDB skip row groups by their min/max.
        found = scalar(
            self.connection,
            f"SELECT count(DISTINCT trace_id) FROM {s.SPANS} WHERE is_inference AND start_ns BETWEEN ? AND ?"
            " AND trace_id IN (SELECT unnest(?))",
            [pc.min(candidates["start_ns"]).as_py(), pc.max(candidates["end_ns"]).as_py(), ids],
        )
        return dataclasses.replace(result, traces_without_inference=len(ids) - found)

    def ingest_logs_request(self, request: Any) -> IngestResult:
        """Store an ExportLogsServiceRequest's log records; invalid records are rejected alone."""
        return self.ingest_log_batch(otlp.logs_from_request(request))

    def ingest_log_batch(self, batch: LogBatch) -> IngestResult:
        """Store records built by `correlate.otlp.rows.LogRows`, counting its rejections."""
        return self.ingest_log_records(batch.logs) + IngestResult(0, batch.rejected, 0, tuple(batch.errors))

    def ingest_log_records(self, records: Iterable[LogRecord]) -> IngestResult:
        """Store log records (OTLP or loguru); the same line twice is stored once (see `LogRecord.log_id`)."""
        rows = [
            (
                r.log_id,
                r.ts_ns,
                r.severity,
                r.severity_number,
                r.body,
                r.trace_id,
                r.span_id,
                r.service,
                r.host,
                r.source,
                otlp.to_json(r.attributes),
                otlp.to_json(r.resource),
            )
            for r in records
        ]
        table = _table(_LOG_SCHEMA, rows)
        with self.transaction():
            stored = self._insert(s.LOGS, table)
        return IngestResult(table.num_rows, 0, stored)

    def ingest_metric_samples(
        self, samples: Iterable[MetricSample], gpus: Iterable[GpuRecord] = (), pods: Iterable[PodRecord] = ()
    ) -> IngestResult:
        """Store samples (after merging `gpus` into the inventory and `pods` into `gpu_pods`); a sample whose GPU
        is unknown is rejected. Inference spans not yet joined to a GPU are joined again with what arrived."""
        rows = [(m.ts_ns, m.metric, m.value, m.gpu_uuid, m.host, m.pci_bus_id, m.gpu_index, m.source) for m in samples]
        table = _table(_SAMPLE_SCHEMA, rows)
        pod_records = list(pods)
        with self.transaction():
            learned = self._upsert_gpus(list(gpus)) + self._upsert_pods(pod_records)
            if learned:
                place_spans(self.connection)
            con = self._register(table)
            try:
                # Place UUID-less samples through the inventory: PCI bus id + host first, then index + host;
                # a sample without a host label (dcgm-exporter 1.x) takes its GPU's host.
                con.execute(
                    f"""CREATE OR REPLACE TEMP TABLE _placed AS
                    SELECT b.ts_ns, coalesce(b.host, gu.host, gp.host, gi.host) AS host,
                           coalesce(b.gpu_uuid, gp.gpu_uuid, gi.gpu_uuid) AS gpu_uuid,
                           b.metric, b.value, b.source
                    FROM _batch b
                    LEFT JOIN {s.GPUS} gu ON gu.gpu_uuid = b.gpu_uuid AND b.host IS NULL
                    LEFT JOIN {s.GPUS} gp ON b.gpu_uuid IS NULL AND gp.pci_bus_id = b.pci_bus_id AND gp.host = b.host
                    LEFT JOIN {s.GPUS} gi ON b.gpu_uuid IS NULL AND gp.gpu_uuid IS NULL
                         AND gi.gpu_index = b.gpu_index AND gi.host = b.host"""
                )
                unplaced = scalar(con, "SELECT count(*) FROM _placed WHERE gpu_uuid IS NULL")
                stored = scalar(
                    con,
                    f"""INSERT OR IGNORE INTO {s.METRIC_SAMPLES} (ts_ns, host, gpu_uuid, metric, value, source)
                    SELECT ts_ns, host, gpu_uuid, metric, value, source FROM _placed WHERE gpu_uuid IS NOT NULL""",
                )
                con.execute("DROP TABLE _placed")
            finally:
                con.unregister("_batch")
        errors = (
            (f"{unplaced} samples name no GPU UUID and match no known GPU by PCI bus id or index",) if unplaced else ()
        )
        return IngestResult(table.num_rows - unplaced, unplaced, stored, errors)

    def ingest_kernel_events(self, events: Iterable[KernelEvent]) -> IngestResult:
        """Store kernel XID events; those without a UUID are placed by PCI bus id now or when the inventory learns it."""
        rows = [
            (kernel_event_id(e), e.ts_ns, e.host, e.pci_bus_id, e.gpu_uuid, e.xid, e.pid, e.process, e.message)
            for e in events
        ]
        table = _table(_KERNEL_SCHEMA, rows)
        with self.transaction():
            stored = self._insert(s.KERNEL_EVENTS, table)
            self._place_kernel_events()
        return IngestResult(table.num_rows, 0, stored)

    def upsert_gpus(self, gpus: Iterable[GpuRecord]) -> IngestResult:
        """Merge GPU records into the inventory (known values are kept unless a record brings a new one)."""
        records = list(gpus)
        with self.transaction():
            stored = self._upsert_gpus(records)
        return IngestResult(len(records), 0, stored)

    # --- internals ------------------------------------------------------------------------------
    def _insert_all(self, batches: list[SpanBatch]) -> list[IngestResult]:
        """Insert every span and event of `batches` with one statement per table, or _KeyAlreadyStored (a key
        stored already or shared by two batches) with nothing stored."""
        spans = batches[0].spans if len(batches) == 1 else pa.concat_tables([b.spans for b in batches])
        events = [b.events for b in batches if b.events.num_rows]
        gpus = [gpu for b in batches for gpu in b.gpus]
        if not events and not self._gpus_to_merge(gpus):
            # The usual request: one statement, which commits alone (an explicit transaction around it
            # measured 1 µs per span more).
            try:
                self._insert_plain(s.SPANS, spans)
            except duckdb.Error as exc:
                if is_key_conflict(exc):
                    raise _KeyAlreadyStored(str(exc)) from exc
                raise store_error(exc, self.path) from exc
        else:
            with self.transaction():
                try:
                    self._insert_plain(s.SPANS, spans)
                    if events:
                        self._insert_plain(s.SPAN_EVENTS, pa.concat_tables(events))
                except duckdb.Error as exc:
                    if is_key_conflict(exc):
                        raise _KeyAlreadyStored(str(exc)) from exc
                    raise
                self._upsert_gpus(gpus)
        return [_span_result(b, b.spans.num_rows) for b in batches]

    def _insert_plain(self, name: str, new_rows: pa.Table) -> None:
        """`INSERT` every row; duckdb.ConstraintException (and an aborted transaction) on a stored key.

        DuckDB finds `new_rows` by its Python name, this argument's (a replacement scan): measured 0.6 ms per
        statement less than registering and unregistering a view. No view is ever registered under that
        name, so none can shadow it. `BY NAME` rather than a column list: DuckDB's parser takes 0.3 ms per
        statement for the 50 names, twice.
        """
        self.connection.execute(f"INSERT INTO {name} BY NAME SELECT * FROM new_rows")

    def _insert_new(self, batch: SpanBatch) -> IngestResult:
        """Insert the spans of `batch` whose key is not stored yet, and their events."""
        stored = self._insert(s.SPANS, batch.spans, unique_key=("trace_id", "span_id"))
        self._insert(s.SPAN_EVENTS, batch.events)
        self._upsert_gpus(batch.gpus)
        return _span_result(batch, stored)

    def _register(self, table: pa.Table) -> duckdb.DuckDBPyConnection:
        con = self.connection
        con.register("_batch", table)
        return con

    def _insert(self, name: str, table: pa.Table, unique_key: tuple[str, ...] = ()) -> int:
        """Insert the rows whose key is not stored yet; how many were new.

        With `unique_key` (the table's key, which the caller guarantees no two rows of `table` share) an
        anti-join finds the new rows: measured twice as fast as `INSERT OR IGNORE`, which checks each row
        against the index one conflict at a time.
        """
        if table.num_rows == 0:
            return 0
        columns = ", ".join(table.schema.names)
        if unique_key:
            match = " AND ".join(f"t.{c} = b.{c}" for c in unique_key)
            sql = (
                f"INSERT INTO {name} ({columns}) SELECT {columns} FROM _batch b "
                f"WHERE NOT EXISTS (SELECT 1 FROM {name} t WHERE {match})"
            )
        else:
            sql = f"INSERT OR IGNORE INTO {name} ({columns}) SELECT {columns} FROM _batch"
        con = self._register(table)
        try:
            return scalar(con, sql)
        finally:
            with suppress(duckdb.TransactionException):  # after a failed statement: the rollback drops it
                con.unregister("_batch")

    def _gpus_to_merge(self, records: list[GpuRecord]) -> dict[str, GpuRecord]:
        """`records` merged per UUID, leaving out those that would change nothing in the inventory."""
        merged: dict[str, GpuRecord] = {}
        for record in records:  # ON CONFLICT cannot update one row twice in a statement: merge first
            merged[record.gpu_uuid] = _merge_gpu(merged.get(record.gpu_uuid), record)
        # Merging the very record merged last for a GPU changes nothing (and places no kernel event anew).
        return {uuid: r for uuid, r in merged.items() if self._gpus_merged.get(uuid) != r}

    def _upsert_gpus(self, records: list[GpuRecord]) -> int:
        if not records:
            return 0
        merged = self._gpus_to_merge(records)
        if not merged:
            return 0
        self._gpus_merged.update(merged)
        table = _table(_GPU_SCHEMA, [tuple(getattr(r, f) for f in _GPU_FIELDS) for r in merged.values()])
        keep = ", ".join(f"{f} = coalesce(excluded.{f}, {s.GPUS}.{f})" for f in _GPU_FIELDS[2:-1])
        new_wins = f"{_HOST_RANK.format('excluded.host_source')} >= {_HOST_RANK.format(s.GPUS + '.host_source')}"
        con = self._register(table)
        try:
            count = scalar(
                con,
                f"""INSERT INTO {s.GPUS} ({", ".join(_GPU_FIELDS)}) SELECT {", ".join(_GPU_FIELDS)} FROM _batch
                ON CONFLICT (gpu_uuid) DO UPDATE SET {keep},
                  host = CASE WHEN excluded.host IS NOT NULL AND {new_wins} THEN excluded.host ELSE {s.GPUS}.host END,
                  host_source = CASE WHEN excluded.host IS NOT NULL AND {new_wins}
                                     THEN excluded.host_source ELSE {s.GPUS}.host_source END""",
            )
        finally:
            con.unregister("_batch")
        self._place_kernel_events()
        return count

    def _upsert_pods(self, records: list[PodRecord]) -> int:
        """Merge pod records into `gpu_pods`, widening each (GPU, pod) to the earliest and latest sample."""
        if not records:
            return 0
        merged: dict[tuple[str, str, str, str], PodRecord] = {}
        for r in records:
            key = (r.gpu_uuid, r.namespace, r.pod, r.container)
            old = merged.get(key)
            merged[key] = (
                r
                if old is None
                else dataclasses.replace(
                    r,
                    first_ns=min(old.first_ns, r.first_ns),
                    last_ns=max(old.last_ns, r.last_ns),
                    host=r.host or old.host,
                )
            )
        table = _table(_POD_SCHEMA, [tuple(getattr(r, f) for f in _POD_FIELDS) for r in merged.values()])
        con = self._register(table)
        try:
            return scalar(
                con,
                f"""INSERT INTO {s.GPU_PODS} ({", ".join(_POD_FIELDS)}) SELECT {", ".join(_POD_FIELDS)} FROM _batch
                ON CONFLICT (gpu_uuid, namespace, pod, container) DO UPDATE SET
                  first_ns = least(excluded.first_ns, {s.GPU_PODS}.first_ns),
                  last_ns = greatest(excluded.last_ns, {s.GPU_PODS}.last_ns),
                  host = coalesce(excluded.host, {s.GPU_PODS}.host)""",
            )
        finally:
            con.unregister("_batch")

    def _place_kernel_events(self) -> None:
        # A kernel line names a PCI bus id; with no host (raw dmesg of one machine) the id must be unique.
        self.connection.execute(
            f"""UPDATE {s.KERNEL_EVENTS} AS k SET gpu_uuid = g.gpu_uuid, host = coalesce(k.host, g.host)
            FROM {s.GPUS} AS g
            WHERE k.gpu_uuid IS NULL AND k.pci_bus_id = g.pci_bus_id
              AND (k.host = g.host OR (k.host IS NULL
                   AND (SELECT count(*) FROM {s.GPUS} g2 WHERE g2.pci_bus_id = k.pci_bus_id) = 1))"""
        )
        # A host-less line whose UUID the log itself named (`NVRM: GPU at …: GPU-…`) takes its GPU's host.
        self.connection.execute(
            f"""UPDATE {s.KERNEL_EVENTS} AS k SET host = g.host FROM {s.GPUS} AS g
            WHERE k.host IS NULL AND k.gpu_uuid = g.gpu_uuid AND g.host IS NOT NULL"""
        )

    def _prepare(self) -> None:
        con = self._con
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
        }
        if not tables:
            if self.read_only:
                raise StoreError(f"{self.path} is an empty database; ingest something first")
            with self.transaction():
                for statement in s.CREATE_V1:
                    con.execute(statement)
                con.executemany(f"INSERT INTO {s.SCHEMA_META} VALUES (?, ?)", [("app", s.APP), ("schema_version", "1")])
                self._migrate(1)
            return
        if s.SCHEMA_META not in tables:
            raise StoreError(f"{self.path} is a DuckDB database but not a gpu-rca store (no {s.SCHEMA_META} table)")
        meta = dict(con.execute(f"SELECT key, value FROM {s.SCHEMA_META}").fetchall())
        if meta.get("app") != s.APP or not str(meta.get("schema_version", "")).isdigit():
            raise StoreError(f"{self.path} is a DuckDB database but not a gpu-rca store")
        # Every schema version has every table (a migration that adds one must name it here apart): a file
        # that claims to be a store without them is refused now, not with an error on the first query.
        version = int(meta["schema_version"])
        if missing := [t for t in s.tables_at(version) if t not in tables]:
            raise StoreError(
                f"{self.path} claims to be a gpu-rca store but lacks its tables ({', '.join(missing)}); "
                "refusing to use it"
            )
        if version > s.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {version}, newer than this gpu-rca's {s.SCHEMA_VERSION}; upgrade gpu-rca"
            )
        if version < s.SCHEMA_VERSION:
            if self.read_only:
                raise StoreError(f"{self.path} has store schema {version}; open it writable once to migrate it")
            with self.transaction():
                self._migrate(version)

    def _migrate(self, version: int) -> None:
        for target, statements in s.migrations_from(version):
            for statement in statements:
                self._con.execute(statement)
            self._con.execute(f"UPDATE {s.SCHEMA_META} SET value = ? WHERE key = 'schema_version'", [str(target)])


class _KeyAlreadyStored(Exception):
    """A plain insert met a stored key: the transaction is aborted and must be done again with lookups."""


def _span_result(batch: SpanBatch, stored: int) -> IngestResult:
    return IngestResult(batch.spans.num_rows + batch.duplicates, batch.rejected, stored, tuple(batch.errors))


def _merge_gpu(old: GpuRecord | None, new: GpuRecord) -> GpuRecord:
    if old is None:
        return new
    values = {f: getattr(new, f) if getattr(new, f) is not None else getattr(old, f) for f in _GPU_FIELDS}
    if old.host is not None and (new.host is None or _host_rank(new.host_source) < _host_rank(old.host_source)):
        values["host"], values["host_source"] = old.host, old.host_source
    return GpuRecord(**values)


def _host_rank(source: str) -> int:
    return HOST_SOURCES.index(source) if source in HOST_SOURCES else -1


def _table(schema: pa.Schema, rows: list[tuple[Any, ...]]) -> pa.Table:
    columns: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in schema.names]
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)


__all__ = ["DB_ENV", "DEFAULT_DB", "IngestResult", "Store", "default_db_path"]
