"""Operational routes: GET /healthz (never needs the token) and GET /metrics (the server's own counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpu_rca.correlate.server.state import ServerState


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 while the server takes writes, 503 once it is shutting down."""
    state: ServerState = request.app.state.gpu_rca
    if not state.writer.running:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """GET /metrics: requests, bytes, spans and logs ingested and rejected, queue depth, write times."""
    state: ServerState = request.app.state.gpu_rca
    return Response(generate_latest(state.counters.registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

__all__ = ["ROUTES", "healthz", "metrics"]
