"""The alert rules and dashboard queries against a real Prometheus scraping dcgm-exporter-style targets.

Prometheus runs on a free loopback port with 1 s scrape and evaluation intervals and a copy of
deploy/prometheus/rules in which every `for:` is shortened to 1 s. It scrapes two targets:
- job `gpu-rca-exporter`: gpu-rca's own exporter (the code `gpu-rca exporter` serves) over the lab's
  simulated L4, where a foreign process then takes nearly all the memory;
- job `dcgm`: the exposition dcgm-exporter writes, one GPU labelled `Hostname` and one with the newer
  `hostname` spelling (which gpu-rca's exporter never writes), whose memory the test then fills.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from gpu_rca import lab
from gpu_rca.collector import Collector
from gpu_rca.collector._exporter import MetricsSource, registry_for, serve_metrics
from gpu_rca.schemas import metrics as m
from tests.support import require_binary
from tests.support.prometheus import (
    dashboard_expressions,
    failing_expressions,
    free_port,
    get_json,
    poll,
    query,
    shortened_rules,
    start_prometheus,
    unix_s,
)

pytestmark = pytest.mark.prometheus


@dataclass
class Gpu:
    """One simulated GPU's labels and current readings, in dcgm-exporter's units."""

    labels: dict[str, str]
    fb_total_mib: int = 23034
    fb_used_mib: int = 1200
    temp_c: int = 55
    util_pct: int = 40


@dataclass(eq=False)  # registered with prometheus_client, which keys collectors by identity
class DcgmStyleTarget:
    """A scrape target writing dcgm-exporter's exposition for a few GPUs whose readings tests change."""

    gpus: list[Gpu]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector hook: one family per canonical metric, named as dcgm-exporter names it."""
        with self.lock:
            readings = [(gpu.labels, self._values(gpu)) for gpu in self.gpus]
        for metric in m.METRICS:
            if metric.name not in readings[0][1]:
                continue
            # A bare Metric: the typed families would add `_total` to counters, which dcgm-exporter does not,
            # and insist on one label set, while these GPUs spell the host label differently.
            family = Metric(metric.name, metric.help, metric.type)
            for labels, values in readings:
                family.add_sample(metric.name, labels, values[metric.name])
            yield family

    @staticmethod
    def _values(gpu: Gpu) -> dict[str, float]:
        return {
            m.FB_USED: gpu.fb_used_mib,
            m.FB_FREE: gpu.fb_total_mib - gpu.fb_used_mib,
            m.FB_TOTAL: gpu.fb_total_mib,
            m.GPU_TEMP: gpu.temp_c,
            m.SLOWDOWN_TEMP: 95,
            m.GPU_UTIL: gpu.util_pct,
            m.POWER_USAGE: 60.5,
            m.ENFORCED_POWER_LIMIT: 72.0,
            m.SM_CLOCK: 2040,
            m.MAX_SM_CLOCK: 2040,
            m.CLOCKS_EVENT_REASONS: 0,
            m.XID_ERRORS: 0,
            m.ECC_DBE_VOL_TOTAL: 0,
            m.ECC_SBE_VOL_TOTAL: 0,
            m.ROW_REMAP_FAILURE: 0,
        }


def _gpu_labels(index: int, uuid: str, host_label: str, host: str) -> dict[str, str]:
    return {
        m.LABEL_GPU: str(index),
        m.LABEL_UUID: uuid,
        m.LABEL_PCI_BUS_ID: f"00000000:{index + 1:02X}:00.0",
        m.LABEL_DEVICE: f"nvidia{index}",
        m.LABEL_MODEL_NAME: "NVIDIA L4",
        host_label: host,
    }


@dataclass
class LivePrometheus:
    """A running Prometheus, the dcgm-style target and the simulated GPU behind gpu-rca's exporter."""

    url: str
    target: DcgmStyleTarget
    simulated_gpu: Any

    def query(self, expr: str) -> dict[str, Any]:
        """GET /api/v1/query; the whole response, including an error's `status`."""
        return query(self.url, expr)

    def evaluated_since(self, group: str, since_s: float) -> bool:
        """Whether rule group `group` has been evaluated after `since_s` (Unix seconds)."""
        groups = get_json(f"{self.url}/api/v1/rules")["data"]["groups"]
        (last,) = [g["lastEvaluation"] for g in groups if g["name"] == group]
        return unix_s(last) > since_s

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, Any]]:
        """Alerts named `name` in `state`, from /api/v1/alerts."""
        alerts = get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == state]


@pytest.fixture(scope="module")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrometheus]:
    binary = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    target = DcgmStyleTarget(
        [
            Gpu(_gpu_labels(0, "GPU-5b7a2d1e-0000-4000-8000-000000000001", "Hostname", "node-a")),
            Gpu(_gpu_labels(1, "GPU-5b7a2d1e-0000-4000-8000-000000000002", "hostname", "node-b")),
        ]
    )
    registry = CollectorRegistry()
    registry.register(target)
    target_port = free_port()
    exporter, exporter_thread = start_http_server(target_port, addr="127.0.0.1", registry=registry)

    nvml = lab.simulated_nvml(fleet=[{"host": "node-r", "gpus": 1, "model": "L4"}])
    sampling = Collector(nvml, sample_hz=10.0, cuda_visible_devices=None)
    assert sampling.start()
    gpu_rca_exporter = serve_metrics(registry_for([MetricsSource(sampling.sampler, "node-r")]), "127.0.0.1", 0)

    process, url = start_prometheus(
        binary,
        tmp,
        {
            "rule_files": [str(shortened_rules(tmp) / "*.yml")],
            "scrape_configs": [
                {"job_name": "dcgm", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]},
                {
                    "job_name": "gpu-rca-exporter",
                    "static_configs": [{"targets": [f"127.0.0.1:{gpu_rca_exporter.server_address[1]}"]}],
                },
            ],
        },
    )
    live = LivePrometheus(url, target, nvml.devices[0])
    try:

        def scraped() -> bool:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {process.stderr.read().decode()[-2000:]}")
            result = live.query(f"count by (job) ({m.FB_USED})")
            return result.get("status") == "success" and len(result["data"]["result"]) == 2

        poll(scraped, "the first scrape of both targets")
        yield live
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()
        exporter.shutdown()
        exporter.server_close()
        exporter_thread.join(timeout=5)
        gpu_rca_exporter.shutdown()
        gpu_rca_exporter.server_close()
        sampling.shutdown()


def test_memory_exhaustion_fires_critical_alert_with_real_percentage(live_prometheus: LivePrometheus) -> None:
    live = live_prometheus
    # Every GPU well below 85 %: after the memory rules have evaluated the scraped data, nothing fires.
    scraped_at = time.time()
    poll(lambda: live.evaluated_since("gpu-memory", scraped_at + 1.0), "two evaluations of the memory rules")
    assert live.alerts("GPUMemoryUsageCritical", state="pending") == []
    assert live.alerts("GPUMemoryUsageCritical") == []

    # gpu-rca's exporter: another process takes 97 % of the simulated L4's memory.
    gpu = live.simulated_gpu
    gpu.set_process(4242, "foreign", int(0.97 * gpu.profile.memory_total_bytes))
    # dcgm-exporter's exposition: the GPU labelled `hostname`, the newer spelling, fills up too.
    exhausted = live.target.gpus[1]
    with live.target.lock:
        exhausted.fb_used_mib = 22500  # of 23034 MiB: 97.68 %

    def both_firing() -> list[dict[str, Any]]:
        firing = live.alerts("GPUMemoryUsageCritical")
        return firing if len(firing) == 2 else []

    firing = {a["labels"]["job"]: a for a in poll(both_firing, "GPUMemoryUsageCritical on both GPUs")}

    dcgm = firing["dcgm"]
    assert dcgm["labels"][m.LABEL_UUID] == exhausted.labels[m.LABEL_UUID]
    assert dcgm["labels"]["severity"] == "critical"
    assert float(dcgm["value"]) == pytest.approx(22500 / 23034)
    assert dcgm["annotations"]["description"].startswith(
        f"GPU 1 (NVIDIA L4, {exhausted.labels[m.LABEL_UUID]}) on node-b has used 97.68% of its memory"
    )

    own = firing["gpu-rca-exporter"]
    assert own["labels"][m.LABEL_UUID] == gpu.uuid
    assert own["labels"][m.LABEL_HOSTNAME] == "node-r"
    # The exporter reports MiB, as dcgm-exporter does: the share survives the rounding.
    assert float(own["value"]) == pytest.approx(0.97, abs=0.001)
    assert f"on node-r has used {float(own['value']) * 100:.4g}% of its memory" in own["annotations"]["description"]
    # The warning fires too; Alertmanager's inhibit rule keeps it quiet while the critical one fires.
    poll(lambda: len(live.alerts("GPUMemoryUsageHigh")) == 2, "GPUMemoryUsageHigh on both GPUs")


def test_every_rule_dashboard_and_datasource_expression_runs(live_prometheus: LivePrometheus) -> None:
    count, failures = failing_expressions(live_prometheus.url)
    assert count > 30
    assert failures == {}


def test_dashboard_gpu_panels_return_data_for_both_host_spellings(live_prometheus: LivePrometheus) -> None:
    expr = dict(dashboard_expressions())["gpu-rca-gpus.json: GPU memory used A"]
    result = live_prometheus.query(expr)["data"]["result"]
    hosts = {r["metric"].get("Hostname") or r["metric"].get("hostname") for r in result}
    assert hosts == {"node-a", "node-b", "node-r"}
