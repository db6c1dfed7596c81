"""The simulated fleet in real time (× speed), for `gpu-rca exporter --simulate`.

A background thread advances the same engine `lab run` uses, following wall-clock time × `speed`, so a
real Prometheus can scrape the hosts' samplers and, with an OTLP endpoint, the service's spans and logs
go out over OTLP/HTTP as they happen, with the same GPU UUIDs. Past the scenario's duration the workload
keeps running (faults without an end stay in force).

The scenario's `start` is replaced by the wall-clock time at which `start()` is called: Prometheus
stamps what it scrapes with its own clock, and an alert's digest looks at the minutes before the alert,
so spans, logs and samples must be stamped in the present. At `speed` 1 simulated time is wall time; at a
higher speed it runs ahead of the wall clock (a fault at `start: 6m` shows after 6 min / speed), which
suits watching a scenario unfold on a dashboard but leaves spans stamped in the future of what
Prometheus holds. `lab run` (offline) keeps the scenario's own `start` and stays deterministic.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from gpu_rca.lab.clock import ScaledClock
from gpu_rca.lab.engine import _Engine
from gpu_rca.lab.scenario import Scenario, load_scenario
from gpu_rca.schemas.errors import UsageError

TICK_S = 0.05  # how often the thread catches up with the scaled clock


class LiveFleet:
    """A scenario's fleet and service, run live; `.samplers()` are what the exporter serves."""

    def __init__(
        self,
        scenario: str | Path | Scenario,
        *,
        speed: float = 1.0,
        otlp_endpoint: str | None = None,
        sample_hz: float = 2.0,
    ) -> None:
        if speed <= 0:
            raise UsageError(f"--speed must be positive, got {speed}")
        #: The scenario as given until `start()`, then with `start_ns` moved to the wall time of the start.
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.speed = speed
        self.sample_hz = sample_hz
        self.otlp_endpoint = otlp_endpoint.rstrip("/") if otlp_endpoint else None
        self._engine: _Engine | None = None
        self._clock: ScaledClock | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    @staticmethod
    def _otlp_processors(endpoint: str) -> tuple[Any, Any]:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return (
            lambda: BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")),
            lambda: BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")),
        )

    def _started(self) -> _Engine:
        if self._engine is None:
            raise UsageError("the live fleet has not been started (call start() first)")
        return self._engine

    def samplers(self) -> list[tuple[str, Any]]:
        """(host name, that host's collector sampler) for every host, in fleet order; after `start()`."""
        return [(name, host.collector.sampler) for name, host in self._started().hosts.items()]

    @property
    def now_ns(self) -> int:
        """Simulated time reached so far; after `start()`."""
        return self._started().clock.now_ns()

    def start(self) -> None:
        """Anchor the scenario's start at wall-clock now and simulate in a background thread (idempotent)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._clock = ScaledClock(speed=self.speed)
            self.scenario = dataclasses.replace(self.scenario, start_ns=self._clock.start_ns)
            span_processor = log_processor = None
            if self.otlp_endpoint:
                span_processor, log_processor = self._otlp_processors(self.otlp_endpoint)
            self._engine = _Engine(self.scenario, self.sample_hz, span_processor, log_processor, keep=False)
            self._engine.start()
            self._thread = threading.Thread(target=self._run, name="gpu-rca-lab-live", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            assert self._engine is not None and self._clock is not None
            while not self._stop.is_set():
                self._engine.advance(self._clock.now_ns())
                self._stop.wait(TICK_S)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        """Stop the thread and flush spans and logs (safe twice)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=10)
        self._started().close()

    def __enter__(self) -> LiveFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LiveFleet"]
