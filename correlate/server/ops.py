"""Operational routes: GET /healthz (never needs the token) and GET /metrics (the server's own counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpu_rca.correlate.server.state import ServerState


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 while the server takes and stores writes; 503 once it is shutting down, while the
    ingest log cannot write or is full, or while the store refuses the loader's batches. The body says why,
    and how the ingest log stands."""
    state: ServerState = request.app.state.gpu_rca
    log, loader = state.log, state.loader
    size = log.size_bytes
    ingest_log = {
        "bytes": size,
        "max_bytes": log.max_bytes,
        "lag_records": loader.lag_records,
        "lag_seconds": round(loader.lag_s, 3),
        "replayed_records": log.replayed_records,
        "corrupt_records": log.corrupt_records,
    }
    problem = None
    if not state.writer.running:
        problem = "shutting down"
    elif log.failure is not None:
        problem = log.failure
    elif loader.failure is not None:
        problem = f"the store refuses writes: {loader.failure}"
    elif size >= log.max_bytes * 0.95:
        problem = "the ingest log is full"
    if problem is not None:
        return JSONResponse({"status": problem, "ingest_log": ingest_log}, status_code=503)
    return JSONResponse({"status": "ok", "ingest_log": ingest_log})


async def metrics(request: Request) -> Response:
    """GET /metrics: requests, bytes, spans and logs ingested and rejected, queue depth, write times."""
    state: ServerState = request.app.state.gpu_rca
    return Response(generate_latest(state.counters.registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

__all__ = ["ROUTES", "healthz", "metrics"]
