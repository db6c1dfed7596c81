"""What every route of one server shares: its configuration, store, ingest log and loader, admission, row
builder, writer and counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpu_rca.correlate.server.admission import Admission
from gpu_rca.correlate.server.body import DEFAULT_MAX_BODY_BYTES
from gpu_rca.correlate.server.counters import ServeCounters
from gpu_rca.correlate.server.loader import Loader
from gpu_rca.correlate.server.row_builder import RowBuilder
from gpu_rca.correlate.server.wal import DEFAULT_MAX_BYTES, IngestLog
from gpu_rca.correlate.server.writer import Writer
from gpu_rca.correlate.store import Store


@dataclass(frozen=True)
class ServerConfig:
    """How a server behaves; the token is never shown in a repr or a log."""

    token: str | None = field(default=None, repr=False)
    prometheus_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queue: int = 64
    # 503 when the writes queued ahead would take longer than this: well under OTLP exporters' 10 s timeout,
    # so a sender backs off instead of timing out and resending a request that is still queued.
    max_queue_wait_s: float | None = 5.0
    retry_after_s: int = 1
    pull_interval_s: float = 30.0  # with prometheus_url: how often to pull windows around new failures
    pull_timeout_s: float = 10.0
    retention_s: float | None = None  # delete rows older than this; None keeps everything
    retention_interval_s: float = 60.0  # how often retention runs
    retention_batch_rows: int = 10_000  # most rows one retention step deletes (one short write transaction)
    log_dir: str | None = None  # the ingest log's folder; None: `<store file>.ingest-log` beside the store
    log_max_bytes: int = DEFAULT_MAX_BYTES  # past this many bytes not yet stored, traces and logs get a 503
    log_segment_bytes: int | None = None  # None: a sixteenth of log_max_bytes, 64 KiB to 64 MiB
    # Reads (/api/*, digests) first wait this long for the loader to store what was acknowledged before them.
    read_wait_s: float = 2.0
    # Traces and logs are refused before their bodies are read while the loader is this far behind (None: never).
    max_lag_s: float | None = 10.0
    # A request's head, and each next piece of its body, must come within this many seconds.
    client_timeout_s: float | None = 10.0


@dataclass(frozen=True)
class ServerState:
    """Shared by the routes through `request.app.state.gpu_rca`."""

    config: ServerConfig
    store: Store
    writer: Writer
    counters: ServeCounters
    rows: RowBuilder
    log: IngestLog
    loader: Loader
    admission: Admission
    #: What is going wrong now (by source, e.g. "prometheus"), said in every digest made meanwhile.
    problems: dict[str, str] = field(default_factory=dict)


__all__ = ["ServerConfig", "ServerState"]
