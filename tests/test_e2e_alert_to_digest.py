"""The live pipeline end to end, every piece a real process on loopback:

`gpu-rca exporter --simulate` (a foreign process holds 97 % of one L4 from the start) → Prometheus with the
shipped rules (1 s scrape and evaluation, every `for:` cut to 1 s) → Alertmanager (`group_wait: 1s`) →
`gpu-rca serve --prometheus` → a digest naming that GPU and the foreign process. The exporter's spans go
to serve over OTLP/HTTP, stamped at wall-clock time (the live fleet's start is anchored at now).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.lab import gpu_uuid_for
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as m
from gpu_rca.schemas.causes import CAUSES_BY_ID
from tests.support import REPO, require_binary
from tests.support.prometheus import (
    failing_expressions,
    free_port,
    get_json,
    poll,
    prometheus_command,
    shortened_rules,
)

pytestmark = pytest.mark.prometheus

TOKEN = "e2e-alertmanager-to-gpu-rca"
SEED = 7
TRUTH = CAUSES_BY_ID["gpu_memory_foreign_process"].id
#: node-a/1 loses 97 % of its memory to another process from the first instant; node-a/0 stays healthy.
SCENARIO = {
    "name": "e2e-foreign-process",
    "seed": SEED,
    "duration": "10m",
    "fleet": [{"host": "node-a", "gpus": 2, "model": "L4"}],
    "workload": {"rate": "8/s", "input_size": {512: 1.0}},
    "faults": [{"kind": "foreign_process", "gpu": "node-a/1", "start": "0s", "severity": 0.97}],
    "truth": {"cause": TRUTH, "drivers": {"gpu.uuid": "node-a/1"}},
}
EXHAUSTED_UUID = gpu_uuid_for(SEED, "node-a", 1)
DEADLINE_S = 45.0


@dataclass
class Pipeline:
    """Where each running piece answers."""

    serve: ServeProcess
    prometheus_url: str
    alertmanager_url: str
    exporter_url: str

    def serve_get(self, path: str, **params: Any) -> Any:
        """GET a JSON document from serve, with the token."""
        answer = httpx.get(
            f"{self.serve.url}{path}",
            params=params,
            timeout=10,
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        )
        answer.raise_for_status()
        return answer.json()


class Processes:
    """Child processes started by the fixture, stopped in reverse order even when a start fails."""

    def __init__(self) -> None:
        self._running: list[tuple[str, subprocess.Popen[Any], Any]] = []

    def start(self, name: str, command: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `command`, its output in `log`."""
        out = log.open("w")
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        self._running.append((name, process, out))
        return process

    def check_alive(self, logs: Path) -> None:
        """Fail with a process's log tail if it exited."""
        for name, process, _ in self._running:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}: {(logs / f'{name}.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM each, newest first; SIGKILL what lingers."""
        for _, process, out in reversed(self._running):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            out.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")
    scenario = tmp / "e2e-foreign-process.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    prometheus_port, alertmanager_port, exporter_port = free_port(), free_port(), free_port()
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    processes = Processes()
    serve = ServeProcess(tmp / "gpu-rca.duckdb", args=["--prometheus", prometheus_url, "--token-file", str(token)])
    try:
        (tmp / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "gpu-rca",
                        "group_by": ["UUID"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {
                            "name": "gpu-rca",
                            "webhook_configs": [
                                {
                                    "url": f"{serve.url}/alertmanager",
                                    "send_resolved": False,
                                    "http_config": {
                                        "authorization": {"type": "Bearer", "credentials_file": str(token)}
                                    },
                                }
                            ],
                        }
                    ],
                }
            )
        )
        processes.start(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'am'}",
                f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                "--cluster.listen-address=",
            ],
            tmp / "alertmanager.log",
        )
        alertmanager_url = f"http://127.0.0.1:{alertmanager_port}"
        poll(lambda: processes.check_alive(tmp) or _ready(f"{alertmanager_url}/-/ready"), "Alertmanager ready")
        # The token rides on the OTel SDK's standard header variable. Spans leave the exporter every 200 ms
        # rather than the SDK's 5 s, so the first failures are in serve before the alert reaches it.
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
        }
        processes.start(
            "exporter",
            [
                sys.executable,
                "-m",
                "gpu_rca",
                "exporter",
                "--simulate",
                str(scenario),
                "--speed",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(exporter_port),
                "--otlp-endpoint",
                serve.url,
            ],
            tmp / "exporter.log",
            env=env,
            cwd=REPO,
        )
        processes.start(
            "prometheus",
            prometheus_command(
                prometheus,
                tmp,
                {
                    "rule_files": [str(shortened_rules(tmp) / "*.yml")],
                    "alerting": {
                        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "gpu-rca-exporter",
                            "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                        },
                    ],
                },
                prometheus_port,
            ),
            tmp / "prometheus.log",
        )
        poll(lambda: processes.check_alive(tmp) or _ready(f"{prometheus_url}/-/ready"), "Prometheus ready")
        yield Pipeline(serve, prometheus_url, alertmanager_url, f"http://127.0.0.1:{exporter_port}")
    finally:
        processes.stop()
        serve.stop()


def _firing(pipeline: Pipeline, name: str) -> list[dict[str, Any]]:
    alerts = get_json(f"{pipeline.prometheus_url}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def _delivered(pipeline: Pipeline) -> list[dict[str, Any]]:
    return get_json(f"{pipeline.alertmanager_url}/api/v2/alerts?active=true")


def test_memory_exhaustion_alert_reaches_serve_as_a_digest_naming_the_gpu_and_the_foreign_process(
    pipeline: Pipeline,
) -> None:
    # Prometheus: the critical memory alert fires for the exhausted GPU, and only for it.
    firing = poll(lambda: _firing(pipeline, "GPUMemoryUsageCritical"), "GPUMemoryUsageCritical firing", DEADLINE_S)
    assert [a["labels"]["UUID"] for a in firing] == [EXHAUSTED_UUID]
    assert firing[0]["labels"]["Hostname"] == "node-a" and float(firing[0]["value"]) > 0.95
    # Alertmanager holds it with the GPU's labels intact, then posts it to serve, which stores a digest.
    held = poll(
        lambda: [a for a in _delivered(pipeline) if a["labels"]["alertname"] == "GPUMemoryUsageCritical"],
        "the alert in Alertmanager",
    )
    assert held[0]["labels"]["UUID"] == EXHAUSTED_UUID
    # serve also writes digests of its own when failures burst; the alert's is the one with its trigger.
    digests = poll(
        lambda: [d for d in pipeline.serve_get("/digests")["digests"] if d["trigger"] == "alertmanager"],
        "a digest from the alert",
        DEADLINE_S,
    )
    document = pipeline.serve_get(f"/digests/{digests[-1]['id']}.json")

    assert document["trigger"]["kind"] == "alertmanager"
    assert EXHAUSTED_UUID in document["trigger"]["gpus"]
    assert "GPUMemoryUsageCritical" in document["trigger"]["detail"]
    assert "not in the store" not in document["trigger"]["detail"]
    assert EXHAUSTED_UUID in document["headline"]["gpus"]
    top = document["causes"][0]
    assert top["cause"] == TRUTH, document["causes"]
    assert top["gpus"] == [EXHAUSTED_UUID]
    # Every request on this GPU failed, so there is no "normally" to compare with; the summary says none.
    assert "None" not in top["summary"]
    # The webhook pulled the GPU's metric window from Prometheus into serve's store: a failed request's
    # story shows the exhausted memory as Prometheus scraped it (MiB, as dcgm-exporter reports it).
    story = pipeline.serve_get(f"/api/explain/{top['example_traces'][0]}")
    fb_used_mib = [point["value"] for point in story["metrics"] if point["metric"] == m.FB_USED]
    assert fb_used_mib and max(fb_used_mib) * 2**20 > 0.95 * story["span"]["stamps"][A.MEMORY_TOTAL]


def test_the_simulated_service_spans_are_in_serve_at_wall_clock_time(pipeline: Pipeline) -> None:
    analysis = poll(
        lambda: (a := pipeline.serve_get("/api/analyze", lookback="10m"))["spans"]["failed"] > 0 and a,
        "failed spans in serve",
        DEADLINE_S,
    )
    assert analysis["spans"]["total"] > analysis["spans"]["failed"] > 0
    assert analysis["causes"][0]["cause"] == TRUTH
    assert analysis["causes"][0]["gpus"] == [EXHAUSTED_UUID]


def test_every_rule_and_dashboard_expression_runs_against_the_pipeline_prometheus(pipeline: Pipeline) -> None:
    poll(lambda: get_json(f"{pipeline.prometheus_url}/api/v1/query?query=up")["data"]["result"], "the first scrape")
    count, failures = failing_expressions(pipeline.prometheus_url)
    assert count > 30
    assert failures == {}
