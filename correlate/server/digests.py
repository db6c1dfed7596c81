"""Digest routes of `gpu-rca serve` (docs/contracts.md §9): the page list, each digest, and the two ways to make one.

`GET /` and `GET /digests` list the stored digests; `GET /digests/{id}.html|.json|.md` serve one, and
`GET /digests/{id}/plots/{plot}.png` its plots. `POST /alertmanager` (webhook v4) and `POST /digests`
(`gpu-rca digest --server`) make and store a digest; the burst watcher makes one when failures pile up.
Reads run on their own cursor in a worker thread; the digest row is written through the store's writer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gpu_rca.correlate.digest import archive, pipeline
from gpu_rca.correlate.digest.alertmanager import parse_alertmanager
from gpu_rca.correlate.digest.burst import BurstDetector
from gpu_rca.correlate.digest.model import Digest, Trigger
from gpu_rca.correlate.digest.notify import NotifyError
from gpu_rca.correlate.digest.render_html import render_list_html
from gpu_rca.correlate.server.body import BodyError, read_body
from gpu_rca.correlate.server.responses import JSON, error_response
from gpu_rca.correlate.server.state import ServerState
from gpu_rca.correlate.server.writer import QueueFull, WriterClosed
from gpu_rca.schemas.errors import EmptyWindowError, GpuRcaError, InputError, UsageError
from gpu_rca.schemas.metrics import SERVE_DIGESTS
from gpu_rca.schemas.timefmt import parse_time_ns

log = logging.getLogger(__name__)

#: Webhook and digest-request bodies are small; anything bigger is not one.
MAX_REQUEST_BYTES = 1024 * 1024
_MEDIA = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8", "json": JSON}
_PLOT_ID = re.compile(r"^[0-9A-Za-z_.-]{1,80}$")
#: Pages run no script and load nothing but inline styles and images: a second wall behind autoescape.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: Seconds between burst checks while no failed span is stored (the idle fallback); a stored batch holding
#: failures wakes the watcher at once.
BURST_INTERVAL_S = 5.0
#: The least time between two burst checks, however often failures are stored: one `count(*)` a second.
BURST_MIN_SPACING_S = 1.0
_MINUTE_NS = 60 * 10**9


def _state(request: Request) -> ServerState:
    return request.app.state.gpu_rca


def _settings(app: Starlette) -> pipeline.DigestSettings:
    # Parsed once per app (OTel's habit for environment settings), on first use rather than at import.
    settings = getattr(app.state, "gpu_rca_digest_settings", None)
    if settings is None:
        settings = pipeline.DigestSettings.from_env()
        app.state.gpu_rca_digest_settings = settings
    return settings


_COUNTER_LOCK = threading.Lock()


def _count_digest(app: Starlette, trigger: str) -> None:
    """Count a stored digest on the server's own /metrics, by trigger."""
    with _COUNTER_LOCK:  # registered once per app, on first use: a registry refuses a name twice
        counter = getattr(app.state, "gpu_rca_digests_counter", None)
        if counter is None:
            counter = Counter(
                SERVE_DIGESTS,
                "Digests made and stored, by trigger.",
                ("trigger",),
                registry=app.state.gpu_rca.counters.registry,
            )
            app.state.gpu_rca_digests_counter = counter
    counter.labels(trigger=trigger).inc()


def read_store(state: ServerState, work: Callable[[Any], Any]) -> Any:
    """Run `work(connection)` on a fresh cursor (the writer thread owns the main connection), once what was
    acknowledged before is stored (waiting at most `read_wait_s`)."""
    state.loader.catch_up(state.config.read_wait_s)
    cursor = state.store.cursor()
    try:
        return work(cursor)
    finally:
        cursor.close()


# --- pages ------------------------------------------------------------------------------------------
async def list_page(request: Request) -> Response:
    """GET / and GET /digests: the stored digests, newest first."""
    state = _state(request)
    rows = await run_in_threadpool(read_store, state, archive.list_digests)
    if "application/json" in request.headers.get("accept", "") and "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"digests": [dataclasses.asdict(r) for r in rows]})
    return HTMLResponse(render_list_html(rows), headers=PAGE_HEADERS)


async def one_digest(request: Request) -> Response:
    """GET /digests/{id}.html|.json|.md"""
    digest_id, fmt = request.path_params["digest_id"], request.path_params["fmt"]
    if fmt not in _MEDIA:
        return PlainTextResponse(f"unknown format {fmt!r}; use .html, .json or .md", status_code=404)
    text = await run_in_threadpool(
        read_store, _state(request), lambda con: archive.fetch_rendering(con, digest_id, fmt)
    )
    if text is None:
        return PlainTextResponse("no such digest", status_code=404)
    return Response(text, media_type=_MEDIA[fmt], headers=PAGE_HEADERS)


async def plot_png(request: Request) -> Response:
    """GET /digests/{id}/plots/{plot}.png"""
    digest_id, plot_id = request.path_params["digest_id"], request.path_params["plot_id"]
    digest = await run_in_threadpool(read_store, _state(request), lambda con: archive.fetch_digest(con, digest_id))
    plot = digest.plot(plot_id) if digest is not None and _PLOT_ID.match(plot_id) else None
    if plot is None:
        return PlainTextResponse("no such plot", status_code=404)
    return Response(plot.png, media_type="image/png")


# --- making digests ------------------------------------------------------------------------------------
async def create(request: Request) -> Response:
    """POST /digests: `{"since", "until", "gpu", "trigger"}` (all optional) -> the stored digest's JSON."""
    try:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InputError("body must be a JSON object")
        since_ns = parse_time_ns(body["since"], what="since") if body.get("since") not in (None, "") else None
        until_ns = parse_time_ns(body["until"], what="until") if body.get("until") not in (None, "") else None
        kind = body.get("trigger") or "manual"
        if kind not in ("manual", "schedule"):
            raise InputError("trigger must be manual or schedule")
        gpu = body.get("gpu") or None
    except (InputError, GpuRcaError) as exc:
        return error_response(400, str(exc), JSON)
    trigger = Trigger(kind, "requested over HTTP", (gpu,) if gpu else ())
    return await _make_and_store(request, trigger, since_ns=since_ns, until_ns=until_ns, gpu=gpu)


async def alertmanager(request: Request) -> Response:
    """POST /alertmanager: an Alertmanager v4 webhook -> a stored digest for the alerting GPUs."""
    try:
        notification = parse_alertmanager(await _raw_body(request))
    except InputError as exc:
        return error_response(400, str(exc), JSON)
    if notification.firing == 0:
        return JSONResponse({"digests": [], "ignored": "no firing alert in this notification"})
    state = _state(request)
    gpus, missing = await run_in_threadpool(
        read_store, state, lambda con: pipeline.resolve_gpus(con, notification.gpus)
    )
    now_ns = time.time_ns()
    problems: list[str] = []
    if state.config.prometheus_url:
        problems += await run_in_threadpool(
            _pull_prometheus, request.app, state.config.prometheus_url, gpus, notification.since_ns, now_ns
        )
    names = ", ".join(notification.alertnames) or "alert"
    if missing:
        log.warning("alert %s names GPUs not in the store: %s", names, ", ".join(missing))
        problems.append(f"the alert names GPUs not in the store: {', '.join(missing)}")
    detail = f"{names} ({notification.firing} firing)" + (
        f"; GPUs not in the store: {', '.join(missing)}" if missing else ""
    )
    trigger = Trigger("alertmanager", detail, tuple(gpus) + tuple(missing))
    # The whole fleet is analysed: the alerting GPUs' failures need the other GPUs' requests as a baseline,
    # and the trigger names the GPUs the alert is about.
    return await _make_and_store(
        request,
        trigger,
        since_ns=notification.since_ns,
        until_ns=now_ns,
        gpu=None,
        retry_when_empty=True,
        problems=problems,
    )


async def _make_and_store(
    request: Request,
    trigger: Trigger,
    *,
    since_ns: int | None,
    until_ns: int | None,
    gpu: str | None,
    retry_when_empty: bool = False,
    problems: list[str] | None = None,
) -> Response:
    state = _state(request)
    settings = _settings(request.app)
    said = _problems(state, problems or [])
    try:
        digest: Digest = await run_in_threadpool(
            read_store,
            state,
            lambda con: pipeline.make_digest(
                con,
                trigger=trigger,
                settings=settings,
                since_ns=since_ns,
                until_ns=until_ns,
                gpu=gpu,
                problems=said,
            ),
        )
    except EmptyWindowError as exc:
        if retry_when_empty:
            # Metrics alert before the spans of the same failures arrive (the exporters batch them):
            # a retryable answer makes Alertmanager send the notification again shortly.
            return error_response(
                503,
                f"{exc}; retry once the spans have arrived",
                JSON,
                headers={"Retry-After": str(state.config.retry_after_s)},
            )
        return error_response(422, str(exc), JSON)
    except UsageError as exc:  # a --gpu no span has: the caller's mistake
        return error_response(400, str(exc), JSON)
    except (InputError, GpuRcaError) as exc:
        return error_response(422 if isinstance(exc, InputError) else 500, str(exc), JSON)
    try:
        await state.writer.submit(lambda store: archive.save_digest(store.connection, digest))
    except (QueueFull, WriterClosed) as exc:
        return error_response(
            503, f"{exc}; retry later", JSON, headers={"Retry-After": str(state.config.retry_after_s)}
        )
    _count_digest(request.app, trigger.kind)
    notified = await run_in_threadpool(_notify, digest, settings)
    document = digest.to_dict()
    document["stored"] = True
    document["notified"] = notified
    return Response(
        json.dumps(document, allow_nan=False),
        status_code=201,
        media_type=JSON,
        headers={"Location": f"/digests/{digest.id}.html"},
    )


def _problems(state: ServerState, own: list[str]) -> list[str]:
    """What went wrong while this digest was made: its own problems, then the server's current ones."""
    said = [*own, *(p for p in state.problems.values() if p not in own)]
    for problem in said:
        log.warning("digest made with a warning: %s", problem)
    return said


def _notify(digest: Digest, settings: pipeline.DigestSettings) -> bool | None:
    """Post the summary; None when no notify URL is set. A failure is logged, never raised: the digest is stored."""
    if not settings.notify_url:
        return None
    try:
        pipeline.deliver(digest, settings)
    except NotifyError as exc:
        log.warning("digest %s stored, but the notification failed: %s", digest.id, exc)
        return False
    return True


def _pull_prometheus(app: Starlette, prometheus_url: str, gpus: list[str], since_ns: int, until_ns: int) -> list[str]:
    """Bring the alerting GPUs' metric windows (every GPU's, when the alert names none) in from `--prometheus`.

    Returns what went wrong, for the digest to say.
    """
    from gpu_rca.correlate.prometheus.pull import PullWindow, pull_windows
    from gpu_rca.correlate.server.prometheus_pull import WriterSink

    state: ServerState = app.state.gpu_rca
    config = state.config
    try:
        summary = pull_windows(
            WriterSink(state.writer, timeout_s=config.pull_timeout_s * 3),
            prometheus_url,
            [PullWindow(since_ns, until_ns, frozenset(gpus))],
            timeout_s=config.pull_timeout_s,
        )
    except GpuRcaError as exc:
        # A digest from the spans alone is still worth having; it says why its metric windows are thin.
        return [f"GPU metrics were not pulled: {exc}"]
    return [f"GPU metrics were pulled only in part: {warning}" for warning in summary.warnings]


async def _raw_body(request: Request) -> bytes:
    state = _state(request)
    try:
        body, _ = await read_body(
            request.stream(),
            content_length=request.headers.get("content-length"),
            content_encoding=request.headers.get("content-encoding"),
            max_bytes=min(MAX_REQUEST_BYTES, state.config.max_body_bytes),
        )
    except BodyError as exc:
        raise InputError(exc.message) from exc
    return body


async def _json_body(request: Request) -> Any:
    body = await _raw_body(request)
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"body is not JSON: {exc}") from exc


# --- the burst trigger --------------------------------------------------------------------------------
class BurstWatcher:
    """Makes a digest for each new failure burst: checks the store soon after a stored batch held failed
    spans (`ServeCounters.failures_stored`, at most once per `min_spacing_s`), and every `interval_s` anyway."""

    def __init__(
        self,
        app: Starlette,
        *,
        interval_s: float = BURST_INTERVAL_S,
        min_spacing_s: float = BURST_MIN_SPACING_S,
        detector: BurstDetector | None = None,
    ) -> None:
        self.app = app
        self.interval_s = interval_s
        self.min_spacing_s = min_spacing_s
        self.detector = detector or BurstDetector()
        self.digests_made = 0
        self._stop = threading.Event()
        state: ServerState = app.state.gpu_rca
        self._wake = state.counters.failures_stored
        self._thread = threading.Thread(target=self._loop, name="gpu-rca-burst", daemon=True)
        self._failing = False

    def start(self) -> BurstWatcher:
        """Start checking in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop checking (waits for a check in progress); safe to call twice."""
        self._stop.set()
        self._wake.set()  # a wait in progress returns now
        if self._thread.is_alive():
            self._thread.join()

    def check_once(self) -> str | None:
        """One check: the id of the digest made, or None."""
        state: ServerState = self.app.state.gpu_rca
        burst = read_store(state, self.detector.check)
        if burst is None:
            return None
        trigger = Trigger("burst", burst.describe(), burst.gpus)
        problems = _problems(state, [])
        digest = read_store(
            state,
            lambda con: pipeline.make_digest(
                con,
                trigger=trigger,
                settings=_settings(self.app),
                since_ns=burst.start_ns - 15 * _MINUTE_NS,
                until_ns=burst.end_ns + _MINUTE_NS,
                gpu=burst.gpus[0] if len(burst.gpus) == 1 else None,
                problems=problems,
            ),
        )
        state.writer.call(lambda store: archive.save_digest(store.connection, digest), timeout_s=60)
        self.detector.mark(burst)
        self.digests_made += 1
        _count_digest(self.app, "burst")
        _notify(digest, _settings(self.app))
        return digest.id

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            self._wake.wait(self.interval_s)
            if self._stop.is_set():
                return
            if (pause := last + self.min_spacing_s - time.monotonic()) > 0 and self._stop.wait(pause):
                return
            self._wake.clear()  # before the check: failures stored during it wake the next one
            last = time.monotonic()
            try:
                self.check_once()
                self._failing = False
            except (GpuRcaError, OSError) as exc:
                if not self._failing:  # log once per failure streak, not every few seconds
                    log.warning("burst check failed: %s", exc)
                self._failing = True


def start_burst_watcher(app: Starlette, *, interval_s: float = BURST_INTERVAL_S) -> Callable[[], None]:
    """Start the burst trigger for `app`; returns the function that stops it (call it before the writer closes)."""
    watcher = BurstWatcher(app, interval_s=interval_s).start()
    app.state.gpu_rca_burst_watcher = watcher
    return watcher.stop


ROUTES = [
    Route("/", list_page, methods=["GET"]),
    Route("/digests", list_page, methods=["GET"]),
    Route("/digests", create, methods=["POST"]),
    Route("/digests/{digest_id}/plots/{plot_id}.png", plot_png, methods=["GET"]),
    Route("/digests/{digest_id}.{fmt}", one_digest, methods=["GET"]),
    Route("/alertmanager", alertmanager, methods=["POST"]),
]

__all__ = ["ROUTES", "BurstWatcher", "start_burst_watcher"]
