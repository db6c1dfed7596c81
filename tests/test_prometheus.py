"""pull_windows against a real Prometheus scraping a live gpu-rca exporter (simulated GPUs) and an alias target."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from gpu_rca import lab
from gpu_rca.collector import Collector
from gpu_rca.collector._exporter import MetricsSource, registry_for, serve_metrics
from gpu_rca.correlate.prometheus.pull import (
    PrometheusUnavailable,
    PullWindow,
    merge_windows,
    metric_selector,
    pull_windows,
    step_seconds,
)
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.correlate.store import Store
from gpu_rca.schemas import metrics as m
from tests.support import require_binary
from tests.support.waiting import wait_for

pytestmark = pytest.mark.prometheus
NS = 1_000_000_000
ALIAS_UUID = "GPU-a11a5000-0000-4000-8000-00000000000a"


@dataclass(frozen=True)
class Live:
    url: str
    uuids: tuple[str, ...]  # the simulated GPUs behind the in-process gpu-rca exporter
    started_ns: int
    cli_gpus: dict[str, str]  # UUID -> Hostname behind `gpu-rca exporter --simulate`


def start_cli_exporter() -> tuple[subprocess.Popen[str], str, threading.Thread]:
    """`gpu-rca exporter --simulate SCENARIO` on a free loopback port, and its /metrics URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpu_rca",
            "exporter",
            "--simulate",
            "thermal-fan-failure-l4",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if (match := re.search(r"serving (http://\S+/metrics)", line)) and not found:
                found.append(match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: found or process.poll() is not None, timeout_s=60, what="gpu-rca exporter serving")
    if not found:
        pytest.fail("gpu-rca exporter --simulate did not start")
    return process, found[0], reader


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    nvml = lab.simulated_nvml(fleet=[{"host": "node-r", "gpus": 2, "model": "L4"}])
    sampling = Collector(nvml, sample_hz=10.0, cuda_visible_devices=None)
    assert sampling.start()
    exporter = serve_metrics(registry_for([MetricsSource(sampling.sampler, "node-r")]), "127.0.0.1", 0)
    # A second target that speaks the 1.x names with a lowercase host label, as old exporters did.
    registry = CollectorRegistry()
    Gauge("dcgm_gpu_temp", "GPU temperature (in C).", ["gpu", "UUID", "hostname"], registry=registry).labels(
        "0", ALIAS_UUID, "node-old"
    ).set(57)
    old_port = free_port()
    old_server, old_thread = start_http_server(old_port, addr="127.0.0.1", registry=registry)
    cli, cli_url, cli_reader = start_cli_exporter()
    with urllib.request.urlopen(cli_url, timeout=10) as response:
        cli_gpus = dict(re.findall(r'UUID="([^"]+)".*?Hostname="([^"]+)"', response.read().decode()))
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gpu-rca-exporter",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_address[1]}"]}],
                    },
                    {"job_name": "old-dcgm", "static_configs": [{"targets": [f"127.0.0.1:{old_port}"]}]},
                    {"job_name": "gpu-rca-exporter-cli", "static_configs": [{"targets": [cli_url.split("/")[2]]}]},
                ],
            }
        )
    )
    port = free_port()
    started_ns = time.time_ns()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def scraped() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?{urlencode({'query': 'up == 1'})}", timeout=2) as response:
                return len(json.load(response)["data"]["result"]) == 3
        except OSError:
            return False

    try:
        wait_for(scraped, timeout_s=60, interval_s=0.2, what="a scrape of every target")
        yield Live(url, tuple(d.uuid for d in sampling.sampler.devices), started_ns, cli_gpus)
    finally:
        cli.terminate()
        cli.wait(timeout=30)
        cli_reader.join(timeout=10)  # it reads until the pipe closes; only then close our end
        assert cli.stderr is not None
        cli.stderr.close()
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()
        exporter.shutdown()
        exporter.server_close()
        old_server.shutdown()
        old_server.server_close()
        old_thread.join(timeout=5)
        sampling.shutdown()


def recent(live: Live, gpus: frozenset[str] = frozenset()) -> PullWindow:
    return PullWindow(live.started_ns - 60 * NS, time.time_ns() + NS, gpus)


def test_pull_stores_canonical_samples_for_every_gpu(live: Live) -> None:
    with Store(":memory:") as store:
        summary = pull_windows(store, live.url, [recent(live)], timeout_s=10)
        assert (summary.windows, summary.queries, summary.warnings, summary.rejected) == (1, 1, (), 0)
        assert summary.samples == summary.stored > 0
        con = store.connection
        metrics = {row[0] for row in con.execute("SELECT DISTINCT metric FROM metric_samples").fetchall()}
        assert {m.GPU_TEMP, m.POWER_USAGE, m.FB_USED, m.SM_CLOCK, m.GPU_UTIL} <= metrics
        assert metrics <= set(m.METRICS_BY_NAME)  # canonical names only, aliases mapped
        per_gpu = dict(con.execute("SELECT gpu_uuid, any_value(host) FROM metric_samples GROUP BY 1").fetchall())
        assert per_gpu == {**dict.fromkeys(live.uuids, "node-r"), ALIAS_UUID: "node-old", **live.cli_gpus}
        assert len(live.cli_gpus) >= 2
        alias = con.execute("SELECT DISTINCT value FROM metric_samples WHERE gpu_uuid = ?", [ALIAS_UUID]).fetchall()
        assert alias == [(57.0,)]
        inventory = con.execute(
            "SELECT gpu_uuid, host, pci_bus_id FROM gpus WHERE host = 'node-r' ORDER BY gpu_index"
        ).fetchall()
        assert [row[0] for row in inventory] == list(live.uuids)
        assert all(len(row[2]) == 12 and row[2] == row[2].lower() for row in inventory)  # 0000:bb:dd.f
        again = pull_windows(store, live.url, [recent(live)], timeout_s=10)
        assert again.stored < again.samples  # the same samples twice are stored once


def test_a_window_for_one_gpu_stores_only_that_gpu(live: Live) -> None:
    with Store(":memory:") as store:
        half = recent(live)
        windows = [
            PullWindow(half.start_ns, half.end_ns - 30 * NS, frozenset({live.uuids[0]})),
            PullWindow(half.end_ns - 40 * NS, half.end_ns, frozenset({live.uuids[0]})),
        ]
        summary = pull_windows(store, live.url, windows, timeout_s=10)
        assert summary.queries == 1  # overlapping windows are one query
        stored = store.connection.execute("SELECT DISTINCT gpu_uuid FROM metric_samples").fetchall()
        assert stored == [(live.uuids[0],)]


def test_serve_pulls_around_failed_spans_as_they_arrive(live: Live, tmp_path: Path) -> None:
    from tests.support.otlp import every_stamp_trace_request
    from tests.support.serving import PB

    request = every_stamp_trace_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    now = time.time_ns()
    # Ended 58 s ago: the server pulls once its window [start − 5 min, end + 1 min] is over, in ~2 s, and that
    # window then holds live scrapes from both before and after this moment.
    span.start_time_unix_nano, span.end_time_unix_nano = now - 59 * NS, now - 58 * NS
    span.status.code = 2
    for attribute in span.attributes:
        if attribute.key == "gpu.uuid":
            attribute.value.string_value = live.uuids[1]
    db = tmp_path / "store.duckdb"
    with (
        ServeProcess(db, args=["--prometheus", live.url, "--pull-interval", "0.5"]) as process,
        httpx.Client(base_url=process.url, timeout=30) as client,
    ):
        assert client.post("/v1/traces", content=request.SerializeToString(), headers=PB).status_code == 200

        def pulled() -> bool:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith(m.SERVE_PROMETHEUS_SAMPLES + " "):
                    return float(line.split()[1]) > 0
            return False

        try:
            wait_for(pulled, timeout_s=30, interval_s=0.2, what="a pull after the failed span")
        except TimeoutError as exc:
            pytest.fail(f"{exc}; server said: {process.stderr}")
        assert process.stop() == 0
    with Store(db, read_only=True) as store:
        uuids = store.connection.execute("SELECT DISTINCT gpu_uuid FROM metric_samples").fetchall()
    assert uuids == [(live.uuids[1],)]


def test_an_unreachable_prometheus_fails_fast_with_a_clear_error() -> None:
    with Store(":memory:") as store, pytest.raises(PrometheusUnavailable, match="refused the connection"):
        pull_windows(store, f"http://127.0.0.1:{free_port()}", [PullWindow(NS, 2 * NS)], timeout_s=2)


def test_a_silent_prometheus_ends_the_pull_at_the_timeout() -> None:
    with socket.socket() as silent, Store(":memory:") as store:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections into the backlog and never answers
        started = time.monotonic()
        with pytest.raises(PrometheusUnavailable, match="timed out: no answer within 1 s"):
            pull_windows(store, f"http://127.0.0.1:{silent.getsockname()[1]}", [PullWindow(NS, 2 * NS)], timeout_s=1)
        assert time.monotonic() - started < 5


def test_windows_merge_and_choose_their_step() -> None:
    a, b, c = (
        PullWindow(0, 10 * NS, frozenset({"GPU-a"})),
        PullWindow(5 * NS, 20 * NS, frozenset({"GPU-b"})),
        PullWindow(30 * NS, 40 * NS),
    )
    assert merge_windows([c, b, a]) == [PullWindow(0, 20 * NS, frozenset({"GPU-a", "GPU-b"})), c]
    assert merge_windows([a, PullWindow(8 * NS, 9 * NS)]) == [PullWindow(0, 10 * NS)]  # "every GPU" wins
    assert step_seconds(PullWindow(0, 60 * NS)) == 1
    assert step_seconds(PullWindow(0, 3600 * NS)) == 8  # at most 500 points per series
    selector = metric_selector()
    assert m.GPU_TEMP in selector and "dcgm_temperature_gpu" in selector and selector.startswith('{__name__=~"')
