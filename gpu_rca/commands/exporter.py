"""`gpu-rca exporter`: dcgm-exporter-compatible `/metrics` from gpu-rca's NVML sampler (docs/contracts.md §2).

Without `--simulate` it needs only the collector's dependencies. It binds 0.0.0.0 by default, like
dcgm-exporter, because Prometheus scrapes it from another host or pod; pass `--host 127.0.0.1` to keep
it local. A scrape reads the sampler's latest samples and never calls NVML.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from gpu_rca.schemas.errors import GpuRcaError, UsageError


@click.command("exporter")
@click.option("--port", default=9400, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to bind (127.0.0.1: this machine only).")
@click.option(
    "--sample-hz",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 100, min_open=True),
    help="NVML sampling rate.",
)
@click.option("--hostname", default=None, help="Value of the Hostname label (default: this machine's name).")
@click.option(
    "--simulate",
    metavar="SCENARIO",
    default=None,
    help="Serve the lab's simulated fleet for a scenario (name or YAML file) instead of real GPUs.",
)
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="With --simulate: simulated seconds per real second (only 1 keeps spans aligned with Prometheus).",
)
@click.option(
    "--otlp-endpoint",
    default=None,
    metavar="URL",
    help="With --simulate: also send the simulated service's spans and logs over OTLP/HTTP.",
)
@click.option(
    "--duration",
    default=None,
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="Stop after this many seconds (default: run until interrupted).",
)
def exporter(
    port: int,
    host: str,
    sample_hz: float,
    hostname: str | None,
    simulate: str | None,
    speed: float,
    otlp_endpoint: str | None,
    duration: float | None,
) -> None:
    """Serve dcgm-exporter-compatible GPU metrics on http://HOST:PORT/metrics."""
    from gpu_rca.collector._exporter import registry_for, serve_metrics

    if simulate is None and (otlp_endpoint is not None or speed != 1.0):
        raise UsageError("--speed and --otlp-endpoint need --simulate SCENARIO")
    if otlp_endpoint is not None and speed != 1.0:
        # The fleet starts at wall-clock now; faster, its spans are stamped ahead of what Prometheus scrapes.
        click.echo(
            f"Warning: at --speed {speed:g} the simulated spans run ahead of the wall clock, so digests "
            "will not line them up with Prometheus's samples; use --speed 1 for that.",
            err=True,
        )
    stop = threading.Event()
    if simulate is not None:
        fleet, sources = _simulated(simulate, speed, otlp_endpoint, sample_hz)
        closers = [fleet.stop]
    else:
        collector, sources = _real(sample_hz, hostname)
        closers = [collector.shutdown]
    try:
        server = serve_metrics(registry_for(sources), host, port)
    except OSError as exc:
        for close in closers:
            close()
        raise GpuRcaError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    bound = server.server_address[1]
    click.echo(
        f"gpu-rca exporter: serving http://{host}:{bound}/metrics"
        + (f" (simulated: {simulate}, x{speed:g})" if simulate else ""),
        err=True,
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(duration)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
        for close in closers:
            close()


def _real(sample_hz: float, hostname: str | None) -> tuple[Any, list[Any]]:
    import pynvml

    from gpu_rca.collector import Collector
    from gpu_rca.collector._exporter import MetricsSource

    collector = Collector(pynvml, sample_hz=sample_hz, cuda_visible_devices=None)
    sampler = collector.sampler
    if sampler is None or not collector.start():
        events = list(sampler.events) if sampler is not None else []
        detail = events[-1].detail if events else "unknown error"
        raise GpuRcaError(f"NVML unavailable ({detail}); on a machine without GPUs, try --simulate SCENARIO")
    return collector, [MetricsSource(sampler, hostname)]


def _simulated(scenario: str, speed: float, otlp_endpoint: str | None, sample_hz: float) -> tuple[Any, Any]:
    try:
        from gpu_rca.lab import LiveFleet  # the lab extra
    except ImportError as exc:
        raise GpuRcaError(f"--simulate needs the lab (pip install 'gpu-rca[lab]'): {exc}") from exc
    from gpu_rca.collector._exporter import MetricsSource

    fleet = LiveFleet(scenario, speed=speed, otlp_endpoint=otlp_endpoint, sample_hz=sample_hz)
    fleet.start()

    def sources() -> list[MetricsSource]:
        return [MetricsSource(sampler, host) for host, sampler in fleet.samplers()]

    return fleet, sources
