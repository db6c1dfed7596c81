"""The simulated fleet in real time (× speed), for `gpu-rca exporter --simulate`.

A background thread advances the same engine `lab run` uses, following wall-clock time × `speed` from
the scenario's start, so a real Prometheus can scrape the hosts' samplers and, with an OTLP endpoint,
the service's spans and logs go out over OTLP/HTTP as they happen, with the same GPU UUIDs. Past the
scenario's duration the workload keeps running (faults without an end stay in force).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lab.clock import ScaledClock
from lab.engine import _Engine
from lab.scenario import Scenario, load_scenario
from schemas.errors import UsageError

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
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.speed = speed
        self.otlp_endpoint = otlp_endpoint.rstrip("/") if otlp_endpoint else None
        span_processor = log_processor = None
        if self.otlp_endpoint:
            span_processor, log_processor = self._otlp_processors(self.otlp_endpoint)
        self._engine = _Engine(self.scenario, sample_hz, span_processor, log_processor, keep=False)
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

    def samplers(self) -> list[tuple[str, Any]]:
        """(host name, that host's collector sampler) for every host, in fleet order."""
        return [(name, host.collector.sampler) for name, host in self._engine.hosts.items()]

    @property
    def now_ns(self) -> int:
        """Simulated time reached so far."""
        return self._engine.clock.now_ns()

    def start(self) -> None:
        """Start simulating in a background thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._engine.start()
            self._clock = ScaledClock(self.scenario.start_ns, self.speed)
            self._thread = threading.Thread(target=self._run, name="gpu-rca-lab-live", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._engine.advance(self._clock.now_ns())
                self._stop.wait(TICK_S)
        except BaseException as exc:  # noqa: BLE001 - reported through .error; the exporter keeps serving
            self.error = exc

    def stop(self) -> None:
        """Stop the thread and flush spans and logs (safe twice)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=10)
        self._engine.close()

    def __enter__(self) -> LiveFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LiveFleet"]
