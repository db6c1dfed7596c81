"""A dcgm-exporter-compatible `/metrics` (docs/contracts.md §2) from the sampler's latest samples, never from NVML.

A scrape copies each GPU's newest sample and formats it, so its cost is flat in the request rate and
does not touch the driver. Names, types, units and labels are dcgm-exporter 4.x's (facts §1): FB in MiB,
power in W, the driver version as the `DCGM_FI_DRIVER_VERSION` label on every GPU series (dcgm-exporter's
default counters have it as a label counter), the XID gauge keeps the last XID with `err_code`/`err_msg`. gpu-rca's own counters follow.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from gpu_rca.collector._nvml import DROPPED, ERRORS, SAMPLES, DeviceInfo, Sample
from gpu_rca.collector._sampler import Sampler
from gpu_rca.schemas import metrics as M
from gpu_rca.schemas.xid import xid_info

MIB = 1024 * 1024

#: canonical metric -> how to read it from (device, sample); None leaves the series out, as
#: dcgm-exporter skips blank and unsupported fields.
_VALUES: dict[str, Callable[[DeviceInfo, Sample], float | int | None]] = {
    M.SM_CLOCK: lambda d, s: s.sm_clock_mhz,
    M.MEM_CLOCK: lambda d, s: s.mem_clock_mhz,
    M.MAX_SM_CLOCK: lambda d, s: d.max_sm_clock_mhz,
    M.CLOCKS_EVENT_REASONS: lambda d, s: s.throttle_mask,
    M.GPU_TEMP: lambda d, s: s.temperature_c,
    M.SLOWDOWN_TEMP: lambda d, s: d.slowdown_temp_c,
    M.SHUTDOWN_TEMP: lambda d, s: d.shutdown_temp_c,
    M.POWER_USAGE: lambda d, s: s.power_w,
    M.TOTAL_ENERGY_CONSUMPTION: lambda d, s: s.energy_mj,
    M.ENFORCED_POWER_LIMIT: lambda d, s: s.power_limit_w,
    M.PCIE_REPLAY_COUNTER: lambda d, s: s.pcie_replays,
    M.GPU_UTIL: lambda d, s: s.utilization_pct,
    M.MEM_COPY_UTIL: lambda d, s: s.memory_utilization_pct,
    M.FB_TOTAL: lambda d, s: s.memory_total_bytes // MIB if s.memory_total_bytes is not None else None,
    M.FB_FREE: lambda d, s: (
        (s.memory_total_bytes - s.memory_used_bytes) // MIB
        if s.memory_total_bytes is not None and s.memory_used_bytes is not None
        else None
    ),
    M.FB_USED: lambda d, s: s.memory_used_bytes // MIB if s.memory_used_bytes is not None else None,
    M.ECC_SBE_VOL_TOTAL: lambda d, s: s.ecc_corrected,
    M.ECC_DBE_VOL_TOTAL: lambda d, s: s.ecc_uncorrected,
}


class MetricsSource:
    """One host's sampler and the `Hostname` label its series carry."""

    def __init__(self, sampler: Sampler, hostname: str | None = None) -> None:
        self.sampler = sampler
        self.hostname = hostname or socket.gethostname()


def _family(name: str, help_text: str, kind: str) -> Metric:
    """A family whose samples carry exactly its name (dcgm-exporter's counters have no `_total` suffix,
    which prometheus_client's CounterMetricFamily would add)."""
    return Metric(name, help_text, kind)


@dataclass(frozen=True, slots=True)
class _Row:
    labels: dict[str, str]
    device: DeviceInfo
    sample: Sample
    last_xid: int
    samples_taken: int


class DcgmCollector(PromCollector):
    """prometheus_client collector yielding dcgm-exporter's metric families from the latest samples."""

    def __init__(self, sources: Iterable[MetricsSource] | Callable[[], Iterable[MetricsSource]]) -> None:
        self._sources = sources

    def sources(self) -> list[MetricsSource]:
        """The current sources (a callable lets a live fleet add hosts)."""
        return list(self._sources() if callable(self._sources) else self._sources)

    def collect(self) -> Iterator[Metric]:
        rows: list[_Row] = []
        totals: Counter[tuple[str, str]] = Counter()
        for source in self.sources():
            sampler = source.sampler
            health = sampler.health.snapshot()
            totals.update(health)
            for device in sampler.devices:
                sample = sampler.latest(device.index)
                if sample is None or sampler.is_lost(device.index):
                    continue  # a lost GPU has no current value; its last one would mislead
                labels = {
                    M.LABEL_GPU: str(device.index),
                    M.LABEL_UUID: device.uuid,
                    M.LABEL_PCI_BUS_ID: device.pci_bus_id,
                    M.LABEL_DEVICE: f"nvidia{device.index}",
                    M.LABEL_MODEL_NAME: device.name,
                    M.LABEL_HOSTNAME: source.hostname,
                }
                if device.driver_version:
                    labels[M.LABEL_DRIVER_VERSION] = device.driver_version
                taken = health.get((SAMPLES, str(device.index)), 0)
                rows.append(_Row(labels, device, sample, sampler.last_xid.get(device.index, 0), taken))
        for metric in M.METRICS:
            if metric.name == M.XID_ERRORS:
                yield self._xid_family(rows)
                continue
            reader = _VALUES.get(metric.name)
            if reader is None:
                continue
            family = _family(metric.name, metric.help, metric.type)
            for row in rows:
                value = reader(row.device, row.sample)
                if value is not None:
                    family.add_sample(metric.name, row.labels, float(value))
            if family.samples:
                yield family
        yield from self._own(totals, rows)

    @staticmethod
    def _xid_family(rows: list[_Row]) -> Metric:
        family = _family(M.XID_ERRORS, M.METRICS_BY_NAME[M.XID_ERRORS].help, "gauge")
        for row in rows:
            message = xid_info(row.last_xid).meaning if row.last_xid else "No Error"
            xid_labels = {**row.labels, M.LABEL_XID_ERR_CODE: str(row.last_xid), M.LABEL_XID_ERR_MSG: message}
            family.add_sample(M.XID_ERRORS, xid_labels, float(row.last_xid))
        return family

    @staticmethod
    def _own(totals: Counter[tuple[str, str]], rows: list[_Row]) -> Iterator[Metric]:
        families = {
            DROPPED: _family(
                M.TELEMETRY_DROPPED,
                "Telemetry gpu-rca dropped (spans without GPU data, undelivered exports, failed samples).",
                "counter",
            ),
            ERRORS: _family(
                M.TELEMETRY_ERRORS,
                "Failures inside gpu-rca's instrumentation (NVML errors, lost GPUs), never raised into requests.",
                "counter",
            ),
        }
        for (counter, reason), n in sorted(totals.items()):
            if counter in families:
                families[counter].add_sample(families[counter].name, {"reason": reason}, float(n))
        yield from families.values()
        samples = _family(M.SAMPLER_SAMPLES, "GPU samples taken by gpu-rca's NVML sampler.", "counter")
        last = _family(M.SAMPLER_LAST_SAMPLE, "Unix time of the newest sample of each GPU.", "gauge")
        for row in rows:
            key = {
                M.LABEL_GPU: row.labels[M.LABEL_GPU],
                M.LABEL_UUID: row.device.uuid,
                M.LABEL_HOSTNAME: row.labels[M.LABEL_HOSTNAME],
            }
            samples.add_sample(M.SAMPLER_SAMPLES, key, float(row.samples_taken))
            last.add_sample(M.SAMPLER_LAST_SAMPLE, key, row.sample.ts_ns / 1e9)
        yield samples
        yield last


def registry_for(sources: Iterable[MetricsSource] | Callable[[], Iterable[MetricsSource]]) -> CollectorRegistry:
    """A fresh registry holding only the dcgm-compatible collector (no process metrics, like dcgm-exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DcgmCollector(sources))
    return registry


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    # dcgm-exporter prints integer fields with %d; keep integral values integral.
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**63 else floatToGoString(value)


def exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4 with the family names exactly as given.

    prometheus_client's own encoder renames every counter family to `<name>_total` in HELP/TYPE; dcgm-exporter
    writes `# TYPE DCGM_FI_DEV_PCIE_REPLAY_COUNTER counter` over samples of that very name, and that is the
    contract, so the families come from prometheus_client and only the few lines of text are written here.
    """
    lines: list[str] = []
    for family in registry.collect():
        lines.append(
            f"# HELP {family.name} {family.documentation.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}"
        )
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            lines.append(
                f"{sample.name}{{{labels}}} {_number(sample.value)}"
                if labels
                else f"{sample.name} {_number(sample.value)}"
            )
    return ("\n".join(lines) + "\n").encode()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def wsgi_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """`/metrics` (and `/`) as a WSGI application."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; metrics are at /metrics\n"]
        body = exposition(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return app


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Any:
    """Serve `/metrics` on host:port in a daemon thread (prometheus_client's threading WSGI server);
    returns the server: `.server_address`, `.shutdown()`, `.server_close()`."""
    from wsgiref.simple_server import make_server

    from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _SilentHandler

    ThreadingWSGIServer.address_family, addr = _get_best_family(host, port)
    server = make_server(addr, port, wsgi_app(registry), ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, name="gpu-rca-exporter", daemon=True).start()
    return server
