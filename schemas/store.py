"""The store's tables (docs/contracts.md §7) as DuckDB DDL, and the forward migrations between schema versions.

Users query these tables with SQL, so names are fixed once here; columns may grow through a migration.
Span stamps come from `schemas.attributes.STAMPS`, so a new stamp is one line there plus a migration here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_rca.schemas import attributes as a

#: Value of `schema_meta.app`: tells a gpu-rca store from any other DuckDB file.
APP = "gpu-rca"
#: The schema version this code writes. Bump it together with a new entry in `MIGRATIONS`.
SCHEMA_VERSION = 2

SPANS = "spans"
SPAN_EVENTS = "span_events"
LOGS = "logs"
METRIC_SAMPLES = "metric_samples"
KERNEL_EVENTS = "kernel_events"
GPUS = "gpus"
#: Which pod held which GPU when, from dcgm-exporter's `pod`/`namespace`/`container` labels (schema 2).
GPU_PODS = "gpu_pods"
DIGESTS = "digests"
SCHEMA_META = "schema_meta"

#: Every table, in creation order.
TABLES: tuple[str, ...] = (
    SPANS,
    SPAN_EVENTS,
    LOGS,
    METRIC_SAMPLES,
    KERNEL_EVENTS,
    GPUS,
    DIGESTS,
    SCHEMA_META,
    GPU_PODS,
)
#: Tables a migration added, with the schema version that added them (a store older than that lacks them).
TABLES_ADDED: dict[str, int] = {GPU_PODS: 2}


def tables_at(version: int) -> tuple[str, ...]:
    """The tables a store at schema `version` has."""
    return tuple(t for t in TABLES if TABLES_ADDED.get(t, 1) <= version)


@dataclass(frozen=True)
class WorkloadColumn:
    """A caller-set span attribute copied into a typed column (it also stays in `attributes` JSON)."""

    attribute: str
    sql_type: str

    @property
    def column(self) -> str:
        """The store column: the attribute name with `_` for `.`."""
        return self.attribute.replace(".", "_")


#: The workload attributes ranking groups by most; typed so `GROUP BY ddcolor_input_size` needs no JSON.
WORKLOAD_COLUMNS: tuple[WorkloadColumn, ...] = (
    WorkloadColumn(a.DDCOLOR_INPUT_SIZE, "BIGINT"),
    WorkloadColumn(a.DDCOLOR_MODEL, "VARCHAR"),
    WorkloadColumn(a.DDCOLOR_TASK_TYPE, "VARCHAR"),
    WorkloadColumn(a.IMAGE_WIDTH, "BIGINT"),
    WorkloadColumn(a.IMAGE_HEIGHT, "BIGINT"),
)

#: Span columns filled from the span itself and its resource, before the stamps, in table order.
SPAN_BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "VARCHAR NOT NULL"),
    ("span_id", "VARCHAR NOT NULL"),
    ("parent_span_id", "VARCHAR"),
    ("name", "VARCHAR NOT NULL"),
    ("kind", "VARCHAR"),
    ("service", "VARCHAR"),
    ("service_version", "VARCHAR"),
    ("host", "VARCHAR"),
    ("k8s_node", "VARCHAR"),
    ("scope", "VARCHAR"),
    ("start_ns", "BIGINT NOT NULL"),
    ("end_ns", "BIGINT NOT NULL"),
    ("status", "VARCHAR NOT NULL"),
    ("status_message", "VARCHAR"),
    ("is_inference", "BOOLEAN NOT NULL"),
)
#: Span columns after the stamps and workload columns.
SPAN_TAIL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("attributes", "JSON"),
    ("resource", "JSON"),
)


def span_columns() -> tuple[tuple[str, str], ...]:
    """Every stored (non-generated) span column with its DuckDB type, in table order."""
    stamps = tuple((s.column, s.sql_type) for s in a.STAMPS)
    workload = tuple((w.column, w.sql_type) for w in WORKLOAD_COLUMNS)
    return SPAN_BASE_COLUMNS + stamps + workload + SPAN_TAIL_COLUMNS


def _columns_sql(columns: tuple[tuple[str, str], ...]) -> str:
    return ",\n    ".join(f"{name} {sql_type}" for name, sql_type in columns)


def _ddl_v1() -> tuple[str, ...]:
    return (
        f"""CREATE TABLE {SPANS} (
    {_columns_sql(span_columns())},
    duration_ms DOUBLE GENERATED ALWAYS AS ((end_ns - start_ns) / 1e6) VIRTUAL,
    PRIMARY KEY (trace_id, span_id)
)""",
        # seq is the event's position in its span: OTLP events have no id, and a span is immutable once ended.
        f"""CREATE TABLE {SPAN_EVENTS} (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    ts_ns BIGINT NOT NULL,
    name VARCHAR NOT NULL,
    attributes JSON,
    PRIMARY KEY (trace_id, span_id, seq)
)""",
        # log_id: logs have no natural key; see correlate.store.database.log_id for what it hashes.
        f"""CREATE TABLE {LOGS} (
    log_id VARCHAR PRIMARY KEY,
    ts_ns BIGINT NOT NULL,
    severity VARCHAR,
    severity_number INTEGER,
    body VARCHAR,
    trace_id VARCHAR,
    span_id VARCHAR,
    service VARCHAR,
    host VARCHAR,
    source VARCHAR,
    attributes JSON,
    resource JSON
)""",
        f"""CREATE TABLE {METRIC_SAMPLES} (
    ts_ns BIGINT NOT NULL,
    host VARCHAR,
    gpu_uuid VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE NOT NULL,
    source VARCHAR,
    PRIMARY KEY (metric, gpu_uuid, ts_ns)
)""",
        f"""CREATE TABLE {KERNEL_EVENTS} (
    event_id VARCHAR PRIMARY KEY,
    ts_ns BIGINT NOT NULL,
    host VARCHAR,
    pci_bus_id VARCHAR,
    gpu_uuid VARCHAR,
    xid INTEGER,
    pid BIGINT,
    process VARCHAR,
    message VARCHAR
)""",
        # host_source ranks who named the host: a span's host.name beats a metric label, which on
        # Kubernetes is often the exporter pod's name.
        f"""CREATE TABLE {GPUS} (
    gpu_uuid VARCHAR PRIMARY KEY,
    host VARCHAR,
    gpu_index INTEGER,
    pci_bus_id VARCHAR,
    name VARCHAR,
    memory_total_bytes BIGINT,
    slowdown_temp_c INTEGER,
    host_source VARCHAR
)""",
        f"""CREATE TABLE {DIGESTS} (
    id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,
    trigger VARCHAR,
    window_start_ns BIGINT,
    window_end_ns BIGINT,
    json JSON,
    markdown VARCHAR,
    html VARCHAR
)""",
        f"""CREATE TABLE {SCHEMA_META} (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
)""",
    )


#: Statements that bring an empty database to SCHEMA_VERSION 1.
CREATE_V1: tuple[str, ...] = _ddl_v1()

#: MIGRATIONS[n] takes a store from version n - 1 to n (n >= 2). Append, never edit a released entry:
#: e.g. `2: ("ALTER TABLE digests ADD COLUMN causes VARCHAR[]",)` and set SCHEMA_VERSION = 2.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Spans gpu-rca's collector did not stamp (docs/store.md): how each inference span was joined to its GPU,
    # and the pods dcgm-exporter's labels say held each GPU, with the first and last sample that said so.
    2: (
        f"ALTER TABLE {SPANS} ADD COLUMN gpu_join VARCHAR",
        f"UPDATE {SPANS} SET gpu_join = 'uuid' WHERE is_inference AND gpu_uuid IS NOT NULL",
        f"""CREATE TABLE {GPU_PODS} (
    gpu_uuid VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    pod VARCHAR NOT NULL,
    container VARCHAR NOT NULL,
    host VARCHAR,
    first_ns BIGINT NOT NULL,
    last_ns BIGINT NOT NULL,
    PRIMARY KEY (gpu_uuid, namespace, pod, container)
)""",
    ),
}


def migrations_from(version: int) -> list[tuple[int, tuple[str, ...]]]:
    """The (target version, statements) steps that bring a store at `version` to SCHEMA_VERSION."""
    return [(v, MIGRATIONS[v]) for v in range(version + 1, SCHEMA_VERSION + 1)]


__all__ = [
    "APP",
    "CREATE_V1",
    "DIGESTS",
    "GPUS",
    "GPU_PODS",
    "KERNEL_EVENTS",
    "LOGS",
    "METRIC_SAMPLES",
    "MIGRATIONS",
    "SCHEMA_META",
    "SCHEMA_VERSION",
    "SPANS",
    "SPAN_BASE_COLUMNS",
    "SPAN_EVENTS",
    "SPAN_TAIL_COLUMNS",
    "TABLES",
    "TABLES_ADDED",
    "WORKLOAD_COLUMNS",
    "WorkloadColumn",
    "migrations_from",
    "span_columns",
    "tables_at",
]
