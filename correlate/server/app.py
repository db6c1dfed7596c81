"""Build the `gpu-rca serve` ASGI app from its route modules.

Each route module exposes `ROUTES` (a list of Starlette routes) and finds the shared `ServerState` at
`request.app.state.gpu_rca`; a new feature is a new module imported here and listed in `ROUTE_MODULES`.
Background work that lives as long as the server is a function in `BACKGROUND`: `function(app)` starts it
and returns the callable that stops it, called on shutdown before the writer drains.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import ModuleType

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from gpu_rca.correlate.server import analysis, digests, gpus, ops, otlp_http, retention
from gpu_rca.correlate.server.access import AccessMiddleware
from gpu_rca.correlate.server.counters import ServeCounters
from gpu_rca.correlate.server.prometheus_pull import pull_loop
from gpu_rca.correlate.server.row_builder import RowBuilder
from gpu_rca.correlate.server.state import ServerConfig, ServerState
from gpu_rca.correlate.server.writer import Writer
from gpu_rca.correlate.store import Store

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


def create_app(store: Store, config: ServerConfig | None = None, *, close_store: bool = True) -> Starlette:
    """The server for `store`: the writer starts with the app and, on shutdown, drains before the store closes."""
    config = config or ServerConfig()
    counters = ServeCounters(queue_depth=lambda: writer.depth)
    writer = Writer(store, max_queue=config.max_queue, on_commit=counters.write_seconds.observe)
    rows = RowBuilder(max_pending=config.max_queue)
    state = ServerState(config=config, store=store, writer=writer, counters=counters, rows=rows)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
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
            writer.close()  # runs every queued write: an acknowledged request is committed
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
