"""Assemble a service: a backend, the collector over its GPU, the advisor, telemetry, the application."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from examples.ddcolor_service.app import AdvisorMode, Service, ServiceConfig, create_app
from examples.ddcolor_service.backend import Colorizer
from examples.ddcolor_service.lab_backend import LabBackend
from examples.ddcolor_service.telemetry import build_telemetry
from gpu_rca.collector import AdmissionAdvisor, Collector, build_resource

SERVICE_NAME = "ddcolor"
SERVICE_VERSION = "1.4.2"


def build_service(
    backend: Colorizer,
    *,
    config: ServiceConfig | None = None,
    otlp_endpoint: str | None = None,
    export: bool = True,
    realtime: bool = True,
    timeout_s: float = 30.0,
) -> Service:
    """Wire `backend` in. A `LabBackend` gets the collector on its simulated GPU and clock (stepped by the
    backend; with `realtime`, following the wall clock while the app runs); any other backend gets real
    NVML through pynvml (source `none` where there is none) and the wall clock."""
    config = config or ServiceConfig()
    if isinstance(backend, LabBackend):
        clock = backend.clock.now_ns
        config = dataclasses.replace(config, hostname=backend.host)  # the simulated GPU's host
        resource = build_resource(SERVICE_NAME, SERVICE_VERSION, {"host.name": backend.host})
    else:
        clock = time.time_ns
        resource = build_resource(SERVICE_NAME, SERVICE_VERSION)
    telemetry = build_telemetry(resource, clock, otlp_endpoint=otlp_endpoint, export=export)
    background: list[Any] = []
    if isinstance(backend, LabBackend):
        gpu_collector = Collector(
            nvml=backend.nvml,
            clock=clock,
            tracer_provider=telemetry.tracer_provider,
            sample_hz=10,
            background=False,
            cuda_visible_devices=None,
            pid=backend.pid,
        )
        gpu_collector.start()
        gpu_collector.sample_once(clock())
        backend.on_tick = gpu_collector.sample_once
        if realtime:
            background.append(backend.run_realtime)
    else:
        gpu_collector = Collector(nvml=_pynvml(), tracer_provider=telemetry.tracer_provider, sample_hz=10)
        gpu_collector.start()
    advisor = None
    if config.advisor_mode is not AdvisorMode.OFF:
        advisor = AdmissionAdvisor(
            gpu_collector,
            models=backend.models,
            max_concurrency=backend.max_concurrency,
            timeout_s=getattr(backend, "timeout_s", timeout_s),
            size_step=config.size_step,
            min_input_size=config.min_input_size,
            max_input_size=config.max_input_size,
        )
    return Service(config, backend, gpu_collector, telemetry, advisor, background)


def _pynvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def build_app(backend: Colorizer, **kwargs: Any) -> Any:
    """`create_app(build_service(backend, **kwargs))`."""
    return create_app(build_service(backend, **kwargs))


__all__ = ["SERVICE_NAME", "SERVICE_VERSION", "build_app", "build_service"]
