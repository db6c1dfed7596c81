"""Real Prometheus answers: series backfilled with promtool, read back with query_range, then stored."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC

import httpx
import pytest

from gpu_rca.correlate import Store
from gpu_rca.correlate.ingest import ingest_file, samples_from_series
from tests.support import require_binary

pytestmark = pytest.mark.prometheus

UUID = "GPU-7d1e0c55-0000-4000-8000-0000000000aa"
T0 = int(time.time()) - 3 * 3600  # older than Prometheus' head block, so the backfilled block is queried as is
LABELS = f'gpu="0",UUID="{UUID}",pci_bus_id="00000000:3B:00.0",Hostname="node-a",modelName="NVIDIA L4"'


def _openmetrics() -> str:
    lines = ["# TYPE DCGM_FI_DEV_GPU_TEMP gauge"]
    lines += [
        f"DCGM_FI_DEV_GPU_TEMP{{{LABELS}}} {value} {T0 + 15 * i}" for i, value in enumerate(("60", "61", "NaN", "63"))
    ]
    lines += ["# TYPE dcgm_power_violation gauge"]  # dcgm-exporter 1.x: microseconds
    lines += [f'dcgm_power_violation{{gpu="0",uuid="{UUID}"}} {10 * i} {T0 + 15 * i}' for i in range(4)]
    return "\n".join(lines) + "\n# EOF\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory) -> Iterator[str]:
    prometheus, promtool = require_binary("prometheus"), require_binary("promtool")
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "series.om").write_text(_openmetrics())
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(folder / "series.om"), str(folder / "data")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (folder / "prometheus.yml").write_text("global:\n  scrape_interval: 1s\nscrape_configs: []\n")
    url = f"http://127.0.0.1:{_free_port()}"
    with (folder / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"prometheus did not start: {(folder / 'prometheus.log').read_text()[-800:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


QUERY = '{__name__=~"DCGM_FI_DEV_GPU_TEMP|dcgm_power_violation"}'
EXPECTED = [
    ("DCGM_FI_DEV_GPU_TEMP", T0, 60.0),
    ("DCGM_FI_DEV_GPU_TEMP", T0 + 15, 61.0),
    ("DCGM_FI_DEV_GPU_TEMP", T0 + 45, 63.0),
    ("DCGM_FI_DEV_POWER_VIOLATION", T0, 0.0),
    ("DCGM_FI_DEV_POWER_VIOLATION", T0 + 15, 10_000.0),
    ("DCGM_FI_DEV_POWER_VIOLATION", T0 + 30, 20_000.0),
    ("DCGM_FI_DEV_POWER_VIOLATION", T0 + 45, 30_000.0),
]


def _stored(store: Store) -> list[tuple]:
    rows = store.connection.execute(
        "SELECT metric, ts_ns, value, gpu_uuid FROM metric_samples ORDER BY 1, 2"
    ).fetchall()
    assert {r[3] for r in rows} == {UUID}
    return [(metric, ts_ns // 10**9, value) for metric, ts_ns, value, _ in rows]


def test_a_saved_query_range_answer_is_ingested(prometheus_url, tmp_path):
    answer = httpx.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": QUERY, "start": T0, "end": T0 + 45, "step": "15s"},
        timeout=10,
    )
    path = tmp_path / "metrics.prom.jsonl"
    path.write_text(json.dumps(answer.json()) + "\n")
    with Store() as store:
        report = ingest_file(store, path)
        assert (report.format, report.stored, report.skipped) == ("prometheus-query-range", 7, {"NaN/Inf samples": 1})
        assert _stored(store) == EXPECTED
        assert store.connection.execute("SELECT host, pci_bus_id, name FROM gpus").fetchall() == [
            ("node-a", "0000:3b:00.0", "NVIDIA L4")
        ]


def test_prometheus_api_client_results_feed_the_same_conversion(prometheus_url):
    from datetime import datetime

    from prometheus_api_client import PrometheusConnect

    client = PrometheusConnect(url=prometheus_url, disable_ssl=True)
    series = client.custom_query_range(
        QUERY,
        start_time=datetime.fromtimestamp(T0, UTC),
        end_time=datetime.fromtimestamp(T0 + 45, UTC),
        step="15",
    )
    batch = samples_from_series(series, source="prometheus-pull")
    with Store() as store:
        result = store.ingest_metric_samples(batch.samples, batch.gpus)
        assert (result.stored, dict(batch.skipped)) == (7, {"NaN/Inf samples": 1})
        assert _stored(store) == EXPECTED
