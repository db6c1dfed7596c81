"""Build the `gpu-rca serve` ASGI app from its route modules.

Each route module exposes `ROUTES` (a list of Starlette routes) and finds the shared `ServerState` at
`request.app.state.gpu_rca`; a new feature is a new module imported here and listed in `ROUTE_MODULES`.
Background work that lives as long as the server is a function in `BACKGROUND`: `function(app)` starts it
and returns the callable that stops it, called on shutdown before the writer drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from types import ModuleType

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from gpu_rca.correlate.server import analysis, digests, gpus, ops, otlp_http, retention
from gpu_rca.correlate.server.access import AccessMiddleware
from gpu_rca.correlate.server.admission import Admission
from gpu_rca.correlate.server.connections import quiet_accept_errors
from gpu_rca.correlate.server.counters import ServeCounters
from gpu_rca.correlate.server.loader import Loader
from gpu_rca.correlate.server.prometheus_pull import pull_loop
from gpu_rca.correlate.server.row_builder import RowBuilder
from gpu_rca.correlate.server.state import ServerConfig, ServerState
from gpu_rca.correlate.server.wal import IngestLog
from gpu_rca.correlate.server.writer import Writer
from gpu_rca.correlate.store import Store
from gpu_rca.schemas import metrics as m

#: Modules whose `ROUTES` make up the server, in matching order.
ROUTE_MODULES: tuple[ModuleType, ...] = (ops, otlp_http, digests, analysis, gpus)

#: `function(app) -> stop()` hooks started with the app, stopped (in reverse) before the writer closes.
BACKGROUND: tuple[Callable[[Starlette], Callable[[], None]], ...] = (
    digests.start_burst_watcher,
    retention.start_retention,
)


def routes() -> list[BaseRoute]:
    """Every route of every module in ROUTE_MODULES."""
    return [route for module in ROUTE_MODULES for route in module.ROUTES]


def _log_dir(store: Store, config: ServerConfig) -> tuple[str, bool]:
    """The ingest log's folder, and whether it is a temporary one (an in-memory store keeps nothing either)."""
    if config.log_dir is not None:
        return config.log_dir, False
    if store.path == ":memory:":
        return tempfile.mkdtemp(prefix="gpu-rca-ingest-log-"), True
    return f"{store.path}.ingest-log", False


def create_app(store: Store, config: ServerConfig | None = None, *, close_store: bool = True) -> Starlette:
    """The server for `store`: the writer starts with the app and, on shutdown, drains before the store closes."""
    config = config or ServerConfig()
    counters = ServeCounters(queue_depth=lambda: writer.depth)
    writer = Writer(store, max_queue=config.max_queue, on_commit=counters.write_seconds.observe)
    rows = RowBuilder(max_pending=config.max_queue)
    log_dir, temporary = _log_dir(store, config)
    ingest_log = IngestLog(log_dir, max_bytes=config.log_max_bytes, segment_bytes=config.log_segment_bytes)
    loader = Loader(ingest_log, writer, counters)
    counters.watch_log(
        {
            m.SERVE_LOG_BYTES: lambda: ingest_log.size_bytes,
            m.SERVE_LOG_MAX_BYTES: lambda: ingest_log.max_bytes,
            m.SERVE_LOG_LAG_RECORDS: lambda: loader.lag_records,
            m.SERVE_LOG_LAG_SECONDS: lambda: loader.lag_s,
            m.SERVE_LOG_REPLAYED: lambda: ingest_log.replayed_records,
            m.SERVE_LOG_CORRUPT: lambda: ingest_log.corrupt_records,
        }
    )
    admission = Admission(
        ingest_log,
        loader,
        max_in_flight=config.max_queue,
        max_lag_s=config.max_lag_s,
        retry_after_s=config.retry_after_s,
    )
    counters.watch_in_flight(lambda: admission.in_flight)
    state = ServerState(
        config=config,
        store=store,
        writer=writer,
        counters=counters,
        rows=rows,
        log=ingest_log,
        loader=loader,
        admission=admission,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        quiet_accept_errors(asyncio.get_running_loop())
        writer.start()
        loader.start()  # stores what the last run acknowledged and did not store (replay) first
        stop_pull = asyncio.Event()
        puller = None
        if config.prometheus_url is not None:
            puller = asyncio.create_task(pull_loop(state, stop_pull))
        stoppers = [start(app) for start in BACKGROUND]
        try:
            yield
        finally:
            stop_pull.set()
            for stop in reversed(stoppers):
                await asyncio.to_thread(stop)  # a check in progress may still write through the writer
            if puller is not None:
                await puller
            await asyncio.to_thread(rows.close)  # requests being read still reach the writer, or get a 503
            await asyncio.to_thread(ingest_log.close)  # what is queued is written; later appends get a 503
            await asyncio.to_thread(loader.close)  # stores every logged request
            writer.close()  # runs every queued write: an acknowledged request is committed
            if temporary:
                shutil.rmtree(log_dir, ignore_errors=True)
            if close_store:
                store.close()

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(AccessMiddleware, token=config.token, counters=counters)],
        lifespan=lifespan,
    )
    app.state.gpu_rca = state
    return app


__all__ = ["BACKGROUND", "ROUTE_MODULES", "create_app", "routes"]
