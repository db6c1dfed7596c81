"""The dcgm-compatible exporter: scraped over HTTP, checked by promtool, values from the latest samples."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gpu_rca.collector._exporter import MetricsSource, registry_for, serve_metrics
from gpu_rca.schemas import metrics as M
from tests.support import require_binary
from tests.support.collector import Receiver, Sim, free_port, span_attributes

REPO = Path(__file__).resolve().parents[2]
#: promtool lint findings that dcgm-exporter's own names and labels trigger (its counters have no `_total`,
#: `modelName`/`Hostname`/`UUID` are not snake_case): the compatibility contract outranks the linter.
DCGM_LINT = re.compile(
    r"^DCGM_FI_\w+ (label names should be written in 'snake_case' not 'camelCase'"
    r"|counter metrics should have \"_total\" suffix|metric name should not include type 'counter')$"
)
SERIES = re.compile(r"^(\w+)\{(.*)\} (\S+)$")


def scrape(sim: Sim, hostname: str = "node-a") -> str:
    server = serve_metrics(registry_for([MetricsSource(sim.collector.sampler, hostname)]), "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return response.read().decode()
    finally:
        server.shutdown()
        server.server_close()


def series(text: str) -> dict[tuple[str, str], tuple[dict[str, str], float]]:
    """(metric, gpu) -> (labels in order, value)."""
    out = {}
    for line in text.splitlines():
        match = SERIES.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2]))
            out[(match[1], labels.get("gpu", ""))] = (labels, float(match[3]))
    return out


def test_scrape_has_dcgm_names_types_units_and_labels(sim: Sim):
    gpu = sim.gpus[1]
    gpu.load(0.7)
    gpu.set_process(99, "python3", 3 * 2**30)
    gpu.ecc_uncorrected = 4
    sim.tick(20)
    gpu.record_xid(sim.clock.now_ns(), 79, "GPU has fallen off the bus", None, None)
    gpu.record_xid(sim.clock.now_ns(), 48, "Double Bit ECC Error", None, None)
    sim.tick()
    sim.tick()  # the XID gauge keeps the last XID after the tick that saw it
    text = scrape(sim)
    got = series(text)
    latest = sim.collector.sampler.latest(1)
    labels, temp = got[(M.GPU_TEMP, "1")]
    assert list(labels) == list(M.GPU_LABELS)
    assert labels == {
        "gpu": "1",
        "UUID": gpu.uuid,
        "pci_bus_id": gpu.pci_bus_id,
        "device": "nvidia1",
        "modelName": "NVIDIA L4",
        "Hostname": "node-a",
        "DCGM_FI_DRIVER_VERSION": sim.nvml.nvmlSystemGetDriverVersion(),  # what the driver says, as dcgm-exporter
    }
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", labels["DCGM_FI_DRIVER_VERSION"])
    assert re.fullmatch(r"0{8}:[0-9A-F]{2}:00\.0", labels["pci_bus_id"])  # NVML's form, as dcgm-exporter writes it
    assert temp == latest.temperature_c
    assert got[(M.POWER_USAGE, "1")][1] == pytest.approx(latest.power_w)  # W
    assert got[(M.FB_USED, "1")][1] == latest.memory_used_bytes // 2**20  # MiB
    assert got[(M.FB_USED, "1")][1] == 3 * 1024
    assert got[(M.FB_TOTAL, "1")][1] == gpu.profile.memory_total_bytes // 2**20
    assert got[(M.ECC_DBE_VOL_TOTAL, "1")][1] == 4
    assert got[(M.ENFORCED_POWER_LIMIT, "1")][1] == pytest.approx(gpu.power_limit_w)
    assert got[(M.GPU_UTIL, "1")][1] == latest.utilization_pct
    xid_labels, xid = got[(M.XID_ERRORS, "1")]
    assert xid == 48 and xid_labels["err_code"] == "48" and xid_labels["err_msg"]
    assert got[(M.XID_ERRORS, "0")][0]["err_msg"] == "No Error"
    for metric in M.METRICS:
        if (metric.name, "0") in got:
            assert f"# TYPE {metric.name} {metric.type}\n" in text
    assert "# TYPE gpu_rca_sampler_samples_total counter\n" in text
    assert got[(M.SAMPLER_SAMPLES, "1")][1] == 22


def test_promtool_accepts_the_scrape(sim: Sim):
    promtool = require_binary("promtool")
    sim.gpus[0].load(0.5)
    sim.tick(5)
    text = scrape(sim)
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    findings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode in (0, 3), findings  # 3: lint findings only, the text parsed
    assert [f for f in findings if not DCGM_LINT.match(f)] == []  # gpu-rca's own series lint clean


def test_a_scrape_never_calls_nvml(sim: Sim):
    sim.tick(3)
    before = len(sim.nvml.readings)
    for _ in range(5):
        scrape(sim)
    assert len(sim.nvml.readings) == before


def test_a_lost_gpu_drops_out_and_errors_are_counted(sim: Sim):
    sim.tick(2)
    sim.gpus[0].lost_at_ns = sim.clock.now_ns() + 1
    sim.tick(2)
    got = series(scrape(sim))
    assert (M.GPU_TEMP, "0") not in got and (M.GPU_TEMP, "1") in got
    errors = {labels["reason"]: v for (name, _), (labels, v) in got.items() if name == M.TELEMETRY_ERRORS}
    assert errors == {"gpu_lost": 1}


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "gpu_rca", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def test_cli_without_nvml_fails_with_one_line():
    import pynvml

    try:
        pynvml.nvmlInit()
        pytest.skip("an NVIDIA driver is present")
    except pynvml.NVMLError_LibraryNotFound:
        pass
    proc = _cli("--port", str(free_port()), "--duration", "1")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: NVML unavailable (")
    assert "Traceback" not in proc.stderr


def test_cli_usage_errors_exit_2():
    proc = _cli("--speed", "2")
    assert proc.returncode == 2 and "--simulate" in proc.stderr
    proc = _cli("--port", "70000")
    assert proc.returncode == 2


def test_cli_simulate_serves_the_lab_fleet_and_replays_spans_with_the_same_uuids():
    promtool = require_binary("promtool")
    receiver = Receiver()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpu_rca",
            "exporter",
            "--simulate",
            "foreign-process-l4",
            "--speed",
            "30",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--otlp-endpoint",
            receiver.endpoint,
            "--duration",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and M.GPU_TEMP not in text:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                time.sleep(0.2)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        receiver.server.shutdown()
        receiver.server.server_close()
    assert proc.returncode == 0, stderr
    assert stderr.count("Warning: at --speed 30 the simulated spans run ahead of the wall clock") == 1
    temps = scrape_all(text, M.GPU_TEMP)
    assert {labels["Hostname"] for _, (labels, _) in temps} == {"node-a", "node-b"}
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode in (0, 3)
    assert [f for f in (check.stdout + check.stderr).splitlines() if f.strip() and not DCGM_LINT.match(f)] == []
    uuids = {labels["UUID"] for _, (labels, _) in temps}
    span_uuids = {span_attributes(span).get("gpu.uuid") for _, span in receiver.spans()}
    assert receiver.spans() and span_uuids - {None} <= uuids


def scrape_all(text: str, metric: str) -> list[tuple[tuple[str, str], tuple[dict[str, str], float]]]:
    """Every series of `metric` (several hosts share gpu="0")."""
    out = []
    for line in text.splitlines():
        match = SERIES.match(line)
        if match and match[1] == metric:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2]))
            out.append(((metric, labels["gpu"]), (labels, float(match[3]))))
    return out
