"""`GET /api/analyze` and `GET /api/explain/{trace_id}` (docs/contracts.md §9): the CLI's JSON, from the served store."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpu_rca.correlate.ranking.api import resolve_options
from gpu_rca.correlate.ranking.explain import explain_connection
from gpu_rca.correlate.ranking.run import analyze_connection
from gpu_rca.correlate.server.responses import JSON, error_response
from gpu_rca.schemas.errors import GpuRcaError, InputError, UsageError

_QUERY = ("since", "until", "lookback", "slow", "service", "host", "gpu")


def _on_cursor(request: Request, work: Callable[[Any], Any]) -> Any:
    # A cursor of its own: ranking creates temp tables, and the writer thread owns the main connection.
    # First the loader stores what was acknowledged before this request (waiting at most `read_wait_s`).
    state = request.app.state.gpu_rca
    state.loader.catch_up(state.config.read_wait_s)
    cursor = state.store.cursor()
    try:
        return work(cursor)
    finally:
        cursor.close()


def _answer(document: Any) -> Response:
    return Response(json.dumps(document, allow_nan=False), media_type=JSON)


def _error(exc: GpuRcaError) -> Response:
    if isinstance(exc, UsageError):
        return error_response(400, str(exc), JSON)
    if isinstance(exc, InputError):
        return error_response(404, str(exc), JSON)
    return error_response(500, str(exc), JSON)


async def analyze(request: Request) -> Response:
    """The `analyze --json` document for the query's window and filters."""
    params = {key: request.query_params.get(key) for key in _QUERY}
    warnings: list[str] = []
    if request.query_params.get("prometheus"):
        warnings.append("the server pulls Prometheus itself (serve --prometheus); the prometheus parameter is ignored")
    try:
        options = resolve_options(params["since"], params["until"], params["slow"], params["lookback"], prefix="")
        result = await run_in_threadpool(
            _on_cursor,
            request,
            lambda con: analyze_connection(
                con, service=params["service"], host=params["host"], gpu=params["gpu"], warnings=warnings, **options
            ),
        )
    except GpuRcaError as exc:
        return _error(exc)
    return _answer(result)


async def explain(request: Request) -> Response:
    """The `explain --json` document of one trace."""
    trace_id = request.path_params["trace_id"]
    try:
        result = await run_in_threadpool(_on_cursor, request, lambda con: explain_connection(con, trace_id))
    except GpuRcaError as exc:
        return _error(exc)
    return _answer(result)


ROUTES = [
    Route("/api/analyze", analyze, methods=["GET"]),
    Route("/api/explain/{trace_id}", explain, methods=["GET"]),
]
