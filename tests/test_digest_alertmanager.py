"""A real Alertmanager (Debian's 0.25) fires a GPU alert at `gpu-rca serve`, which stores a digest for that GPU."""

from __future__ import annotations

import os
import socket
import subprocess

import httpx
import pytest

from gpu_rca.correlate import Store
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas.timefmt import rfc3339
from tests.support import require_binary
from tests.support.digest import GPUS, HOST, MINUTE_NS, START_NS, build_incident
from tests.support.waiting import wait_for

pytestmark = pytest.mark.prometheus
TOKEN = "alertmanager-to-gpu-rca"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_alertmanager_webhook_reaches_serve_and_yields_a_digest(tmp_path):
    binary = require_binary("prometheus-alertmanager")
    db = tmp_path / "incident.duckdb"
    with Store.open(db) as store:
        build_incident(store)
    (tmp_path / "token").write_text(TOKEN + "\n")
    with ServeProcess(db, env=dict(os.environ, GPU_RCA_TOKEN=TOKEN)) as serve:
        config = tmp_path / "alertmanager.yml"
        config.write_text(f"""
route:
  receiver: gpu-rca
  group_by: [UUID]
  group_wait: 1s
  group_interval: 1m
receivers:
  - name: gpu-rca
    webhook_configs:
      - url: {serve.url}/alertmanager
        send_resolved: false
        http_config:
          authorization: {{type: Bearer, credentials_file: {tmp_path / "token"}}}
""")
        port = _free_port()
        log = (tmp_path / "alertmanager.log").open("w")
        manager = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _ready(base), timeout_s=30, what="Alertmanager ready")
            starts = START_NS + 16 * MINUTE_NS
            alert = {
                "labels": {
                    "alertname": "GPUMemoryUsageCritical",
                    "severity": "critical",
                    "UUID": GPUS[0][0],
                    "gpu": "0",
                    "Hostname": HOST,
                },
                "annotations": {"summary": "GPU memory above 95 %"},
                "startsAt": rfc3339(starts),
            }
            httpx.post(f"{base}/api/v2/alerts", json=[alert], timeout=10).raise_for_status()
            found: list[dict] = []
            wait_for(lambda: found.extend(_digests(serve.url)) or found, timeout_s=60, what="a digest from the alert")
            [row] = found
            document = httpx.get(f"{serve.url}/digests/{row['id']}.json", headers=_auth(), timeout=10).json()
        finally:
            manager.terminate()
            manager.wait(10)
            log.close()
    assert document["trigger"]["kind"] == "alertmanager"
    assert document["trigger"]["gpus"] == [GPUS[0][0]]
    assert document["trigger"]["detail"].startswith("GPUMemoryUsageCritical (1 firing)")
    assert document["window"]["start"] == rfc3339(starts - 15 * MINUTE_NS)
    assert document["causes"][0]["cause"] == "gpu_oom_large_inputs"
    assert document["headline"]["gpus"][0] == GPUS[0][0]  # the GPU with most of the OOMs comes first


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _digests(url: str) -> list[dict]:
    answer = httpx.get(f"{url}/digests", headers={**_auth(), "Accept": "application/json"}, timeout=10)
    answer.raise_for_status()
    return answer.json()["digests"]
