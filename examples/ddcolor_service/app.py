"""The FastAPI application: `POST /colorize`, `GET /metrics`, `GET /healthz`, instrumented end to end.

One request makes one trace: the server span (`POST /colorize`), `ddcolor.preprocess` (decode, check), and,
once admitted for the GPU, `ddcolor.inference` opened by the collector and stamped with the GPU's
telemetry. loguru records inside carry the trace id. When the admission advisor says the GPU cannot take
the request now, the answer is HTTP 429 with the largest input size that fits and a `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace

from examples.ddcolor_service.backend import Colorizer
from examples.ddcolor_service.telemetry import ServerSpanMiddleware, Telemetry, clocked_span
from gpu_rca import collector
from gpu_rca.collector import AdmissionAdvisor, Collector, classify_error
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas.errors import InputError

SPAN_INFERENCE = "ddcolor.inference"
SPAN_PREPROCESS = "ddcolor.preprocess"
#: HTTP status per failure: the GPU could not serve it (503), it ran out of time (504), else a bug (500).
_STATUS = {
    A.ERROR_CUDA_OOM: 503,
    A.ERROR_GPU_LOST: 503,
    A.ERROR_CUDA_ILLEGAL_ADDRESS: 503,
    A.ERROR_CUDA_LAUNCH_FAILURE: 503,
    A.ERROR_TIMEOUT: 504,
}


class AdvisorMode(StrEnum):
    """`enforce`: refuse with 429; `shadow`: advise and record, never refuse; `off`: no advice."""

    OFF = "off"
    SHADOW = "shadow"
    ENFORCE = "enforce"


@dataclass(frozen=True)
class ServiceConfig:
    """What the service accepts; `gpu` is the collector's `gpu=` (a CUDA ordinal, UUID, …)."""

    gpu: Any = 0
    advisor_mode: AdvisorMode = AdvisorMode.ENFORCE
    default_model: str = "ddcolor_paper_tiny"
    min_input_size: int = 256
    max_input_size: int = 2048
    size_step: int = 32  # ComfyUI's step for DDColor's input_size
    max_upload_bytes: int = 32 * 1024 * 1024
    hostname: str = field(default_factory=socket.gethostname)


@dataclass
class Service:
    """Everything one running service holds."""

    config: ServiceConfig
    backend: Colorizer
    collector: Collector
    telemetry: Telemetry
    advisor: AdmissionAdvisor | None
    background: list[Any] = field(default_factory=list)  # coroutine factories run for the app's lifetime


def _json_error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def _decode(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"not an image PIL can read ({type(exc).__name__}: {exc})") from exc
    return picture


def _png(picture: Any) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def metrics_registry(service: Service) -> Any:
    """A Prometheus registry with the GPU's dcgm-exporter-compatible families and the advisor's gauge."""
    sampler = service.collector.sampler
    registry = collector.registry_for([collector.MetricsSource(sampler, service.config.hostname)] if sampler else [])
    if service.advisor is not None:
        registry.register(service.advisor.prometheus_collector())
    return registry


def create_app(service: Service) -> FastAPI:
    """The ASGI application for `service` (drive it with uvicorn, or in-process with httpx's ASGI transport)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(start()) for start in service.background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            service.collector.shutdown()
            service.telemetry.shutdown()

    app = FastAPI(title="DDColor (gpu-rca reference service)", lifespan=lifespan)
    app.state.service = service
    config, backend, telemetry, advisor = service.config, service.backend, service.telemetry, service.advisor
    log = telemetry.logger

    @app.post("/colorize", response_model=None)
    async def colorize(
        image: Annotated[UploadFile, File(description="the photo to colorize")],
        input_size: Annotated[int, Form(description="DDColor's input_size: the model runs at this size squared")] = 512,
        model: Annotated[str, Form()] = config.default_model,
        task_type: Annotated[str, Form(description="what the photo shows (person, building, …)")] = "person",
    ) -> Response:
        server_span = trace.get_current_span()
        if input_size % config.size_step or not config.min_input_size <= input_size <= config.max_input_size:
            return _json_error(
                422,
                "bad_input_size",
                f"input_size must be a multiple of {config.size_step} in "
                f"[{config.min_input_size}, {config.max_input_size}], got {input_size}",
            )
        if model not in backend.models:
            return _json_error(
                422, "unknown_model", f"model {model!r} is not served (served: {', '.join(backend.models)})"
            )
        try:
            with clocked_span(telemetry.tracer, SPAN_PREPROCESS, telemetry.clock) as span:
                data = await image.read(config.max_upload_bytes + 1)
                if len(data) > config.max_upload_bytes:
                    raise InputError(f"the upload is larger than {config.max_upload_bytes} bytes")
                picture = _decode(data)
                span.set_attributes(
                    {A.IMAGE_WIDTH: picture.width, A.IMAGE_HEIGHT: picture.height, "image.bytes": len(data)}
                )
        except InputError as exc:
            log.warning("rejected upload {}: {}", image.filename, exc)
            return _json_error(400, "bad_image", str(exc))

        if advisor is not None and config.advisor_mode is not AdvisorMode.OFF:
            advice = advisor.advise(config.gpu, model, input_size)
            refuse = not advice.accept and config.advisor_mode is AdvisorMode.ENFORCE
            decision = "accept" if advice.accept else ("refuse" if refuse else "shadow_refuse")
            server_span.set_attributes(
                {
                    A.ADVISOR_DECISION: decision,
                    A.ADVISOR_MAX_INPUT_SIZE: advice.max_input_size or 0,
                    A.ADVISOR_REASON: advice.reason,
                }
            )
            if refuse:
                log.warning("GPU busy, refused input_size={} model={}: {}", input_size, model, advice.reason)
                return JSONResponse(
                    {"error": "gpu_busy", "suggested_input_size": advice.max_input_size, "reason": advice.reason},
                    status_code=429,
                    headers={"Retry-After": str(advice.retry_after_s)},
                )
            if not advice.accept:
                log.info("advisor (shadow) would refuse input_size={}: {}", input_size, advice.reason)

        attributes = {
            A.DDCOLOR_INPUT_SIZE: input_size,
            A.DDCOLOR_MODEL: model,
            A.DDCOLOR_TASK_TYPE: task_type,
            A.IMAGE_WIDTH: picture.width,
            A.IMAGE_HEIGHT: picture.height,
        }
        try:
            with service.collector.inference_span(SPAN_INFERENCE, gpu=config.gpu, attributes=attributes) as span:
                result = await backend.colorize(
                    picture, input_size=input_size, model=model, task_type=task_type, on_gpu_start=span.gpu_work_started
                )
                if result.peak_memory_bytes:
                    span.set_attribute(A.INFERENCE_MEMORY_PEAK, result.peak_memory_bytes)
                log.info("colorized {}x{} at input_size={} with {}", picture.width, picture.height, input_size, model)
        except InputError as exc:
            return _json_error(422, "bad_request", str(exc))
        except Exception as exc:
            error_type = classify_error(exc)
            first_line = (str(exc).splitlines() or [""])[0]
            log.error("colorize failed ({}): {}: {}", error_type, type(exc).__name__, first_line)
            return _json_error(_STATUS.get(error_type, 500), error_type, first_line)
        return Response(_png(result.image), media_type="image/png")

    @app.get("/metrics")
    def metrics() -> Response:
        """The GPU's dcgm-exporter-compatible metrics and `gpu_rca_advisor_max_input_size`."""
        return Response(
            collector.exposition(metrics_registry(service)), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the backend's name and the advisor's mode."""
        return {"status": "ok", "backend": backend.name, "advisor": config.advisor_mode.value}

    app.add_middleware(ServerSpanMiddleware, telemetry=telemetry)
    return app


__all__ = ["AdvisorMode", "Service", "ServiceConfig", "create_app", "metrics_registry"]
