"""`GET /gpus` (docs/contracts.md §9): the GPU ledger as a page, or as `gpu-rca gpus --json`'s document when the
request accepts JSON; `?since=` and `?until=` as the CLI's options (default: the last 30 days)."""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gpu_rca.correlate.history.api import ledger_document
from gpu_rca.correlate.history.page import render_gpus_html
from gpu_rca.correlate.server.digests import PAGE_HEADERS, read_store
from gpu_rca.correlate.server.responses import JSON, error_response
from gpu_rca.schemas.errors import EmptyWindowError, GpuRcaError, UsageError


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


async def gpus_page(request: Request) -> Response:
    """GET /gpus: every GPU's record, worst first, with advice."""
    since, until = request.query_params.get("since"), request.query_params.get("until")
    as_json = _wants_json(request)
    try:
        document = await run_in_threadpool(
            read_store, request.app.state.gpu_rca, lambda con: ledger_document(con, since, until, prefix="")
        )
    except UsageError as exc:
        return error_response(400, str(exc), JSON)
    except EmptyWindowError as exc:
        if as_json:
            return error_response(404, str(exc), JSON)
        return HTMLResponse(render_gpus_html(None, empty=str(exc)), headers=PAGE_HEADERS)
    except GpuRcaError as exc:
        return error_response(500, str(exc), JSON)
    if as_json:
        return Response(json.dumps(document, allow_nan=False), media_type=JSON)
    return HTMLResponse(render_gpus_html(document), headers=PAGE_HEADERS)


ROUTES = [Route("/gpus", gpus_page, methods=["GET"])]

__all__ = ["ROUTES"]
