"""The reference DDColor service on the lab backend, driven in-process on the lab's clock (deterministic)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
import pytest
from PIL import Image

from examples.ddcolor_service.app import AdvisorMode, ServiceConfig, create_app
from examples.ddcolor_service.ddcolor_backend import DDColorBackend
from examples.ddcolor_service.lab_backend import DEFAULT_START_NS, LabBackend
from examples.ddcolor_service.loadgen import BurstPlan, Phase, compare, run_burst
from examples.ddcolor_service.service import build_service
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas import attributes as A
from gpu_rca.schemas import metrics as M
from gpu_rca.schemas.errors import InputError
from tests.support import REPO

GIB = 1024**3
#: A short plan for the OTLP test: a warm-up, a burst of 1280s, a drain.
SHORT = BurstPlan(
    phases=(Phase(40.0, 0.5, {512: 0.5, 1024: 0.5}), Phase(15.0, 1.5, {1280: 1.0}), Phase(30.0, 0.0, {512: 1.0}))
)


def photo(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 90).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def burst() -> dict[str, object]:
    return compare(BurstPlan(seed=7))


def test_under_a_burst_of_1280s_the_advisor_suggests_smaller_before_ooms_and_keeps_goodput(burst) -> None:
    off, on = burst["shadow"], burst["enforce"]
    assert off.requests == on.requests > 100  # same seed, same users
    # Advisor off (advising in shadow, never refusing): the burst runs into OOMs ...
    assert off.failed.get(A.ERROR_CUDA_OOM, 0) > 10 and off.refused == 0
    # ... and the advisor had said a 1280 no longer fits before the first of them.
    assert off.first_gauge_drop_s is not None and off.first_suggestion_s is not None
    assert off.first_gauge_drop_s < off.first_oom_s and off.first_suggestion_s < off.first_oom_s
    # Advisor on: 429s with a smaller size instead, fewer OOMs, at least the same goodput.
    assert on.failed.get(A.ERROR_CUDA_OOM, 0) < off.failed[A.ERROR_CUDA_OOM]
    assert on.goodput_per_min >= off.goodput_per_min
    assert on.succeeded >= off.succeeded and on.reduced_size > 0
    assert all(o.final_size % 32 == 0 for o in on.outcomes)


def test_same_seed_same_results() -> None:
    first, again = (asyncio.run(run_burst(SHORT, AdvisorMode.ENFORCE)) for _ in range(2))
    assert again.summary() == first.summary()
    assert [(o.status, o.final_size, o.end_ns) for o in again.outcomes] == [
        (o.status, o.final_size, o.end_ns) for o in first.outcomes
    ]


async def _post(app, **data: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ddcolor") as client:
        return await client.post(
            "/colorize", files={"image": ("p.png", data.pop("_image", photo()), "image/png")}, data=data
        )


def _service(mode: AdvisorMode = AdvisorMode.ENFORCE):
    backend = LabBackend(models=("ddcolor_paper",), start_ns=DEFAULT_START_NS)
    service = build_service(
        backend, config=ServiceConfig(advisor_mode=mode, default_model="ddcolor_paper"), export=False, realtime=False
    )
    return backend, service, create_app(service)


def test_a_busy_gpu_answers_429_with_the_size_that_fits_and_retry_after() -> None:
    backend, _, app = _service()
    backend.gpu.set_process(777, "foreign-trainer", 14 * GIB)  # someone else holds 14 GiB

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        await backend.run_until(DEFAULT_START_NS + 200_000_000)
        refused = await _post(app, input_size="1280", model="ddcolor_paper")
        fits = refused.json()["suggested_input_size"]
        task = asyncio.create_task(_post(app, input_size=str(fits), model="ddcolor_paper"))

        async def settle() -> None:
            while not task.done() and backend.waiting == 0:
                await asyncio.sleep(0)

        while not task.done():
            await backend.run_until(backend.clock.now_ns() + 100_000_000, settle)
        return refused, task.result()

    refused, served = asyncio.run(scenario())
    body = refused.json()
    assert refused.status_code == 429 and body["error"] == "gpu_busy"
    assert isinstance(body["suggested_input_size"], int) and body["suggested_input_size"] % 32 == 0
    assert 256 <= body["suggested_input_size"] < 1280 and body["reason"].startswith("GPU memory: 1280 needs")
    assert int(refused.headers["Retry-After"]) >= 1 and len(refused.headers["x-trace-id"]) == 32
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(served.content)).size == (64, 48)


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"input_size": "1000"}, 422, "bad_input_size"),
        ({"input_size": "4096"}, 422, "bad_input_size"),
        ({"input_size": "512", "model": "ddcolor_artistic"}, 422, "unknown_model"),
        ({"input_size": "512", "_image": b"GIF89a not really"}, 400, "bad_image"),
    ],
)
def test_bad_requests_get_a_clear_error(data: dict[str, str], status: int, error: str) -> None:
    _, _, app = _service()
    response = asyncio.run(_post(app, **data))
    assert response.status_code == status and response.json()["error"] == error
    assert response.json()["detail"]


def test_metrics_and_healthz() -> None:
    backend, _, app = _service()

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ddcolor") as client:
            return await client.get(path)

    health = asyncio.run(get("/healthz"))
    assert health.json() == {"status": "ok", "backend": "lab", "advisor": "enforce"}
    text = asyncio.run(get("/metrics")).text
    gauge = f'{M.ADVISOR_MAX_INPUT_SIZE}{{UUID="{backend.gpu.uuid}",model="ddcolor_paper"}} '
    assert gauge in text and f'Hostname="{backend.host}"' in text


def test_the_real_backend_explains_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"DDColor weights not found: .* is not a directory"):
        DDColorBackend(tmp_path / "absent")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "configuration.json").write_text("{}")
    with pytest.raises(InputError, match=re.escape("missing pytorch_model.pt")):
        DDColorBackend(tmp_path / "weights")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.ddcolor_service",
            "--backend",
            "ddcolor",
            "--weights",
            str(tmp_path / "absent"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        run.returncode == 1
        and run.stderr.startswith("Error: DDColor weights not found")
        and "Traceback" not in run.stderr
    )


def _gpu_rca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=120)


def test_every_request_reaches_serve_over_otlp_and_explain_tells_its_story(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    with ServeProcess(db) as server:
        off = asyncio.run(run_burst(SHORT, AdvisorMode.SHADOW, otlp_endpoint=server.url))
        on = asyncio.run(
            run_burst(BurstPlan(seed=8, phases=SHORT.phases), AdvisorMode.ENFORCE, otlp_endpoint=server.url)
        )
        served = next(o for o in off.outcomes if o.status == 200)
        oom = next(o for o in off.outcomes if o.error == A.ERROR_CUDA_OOM)
        stories = {}
        for name, outcome in (("served", served), ("oom", oom)):
            run = _gpu_rca("explain", outcome.trace_ids[-1], "--server", server.url, "--json")
            assert run.returncode == 0, run.stderr
            stories[name] = json.loads(run.stdout)
        text = _gpu_rca("explain", oom.trace_ids[-1], "--server", server.url)
        refused_once = next(o for o in on.outcomes if o.attempts > 1)
        never_on_gpu = _gpu_rca("explain", refused_once.trace_ids[0], "--server", server.url, "--json")
        assert server.stop() == 0, server.stderr
    ok, failed = stories["served"], stories["oom"]
    assert ok["span"]["status"] != "ERROR" and ok["span"]["gpu_uuid"].startswith("GPU-")
    assert ok["span"]["stamps"][A.TELEMETRY_SOURCE] == A.SOURCE_SIMULATED
    assert ok["span"]["attributes"][A.INFERENCE_MEMORY_PEAK] > 0
    assert any("colorized" in line["message"] for line in ok["logs"])
    assert failed["span"]["error_type"] == A.ERROR_CUDA_OOM and failed["span"]["failed"]
    assert failed["span"]["attributes"][A.DDCOLOR_INPUT_SIZE] == 1280
    assert any("colorize failed (cuda_oom)" in line["message"] for line in failed["logs"])
    assert failed["cause"]["cause"] == "gpu_oom_large_inputs"
    assert text.returncode == 0 and "cuda_oom" in text.stdout
    # A refused request never reached the GPU: explain tells the story of its server span and says so.
    assert never_on_gpu.returncode == 0, never_on_gpu.stderr
    refusal = json.loads(never_on_gpu.stdout)
    assert refusal["span"]["name"] == "POST /colorize" and refusal["cause"] is None
    assert any("never reached a GPU" in w for w in refusal["warnings"])
    assert any("busy" in line["message"] or "429" in line["message"] for line in refusal["logs"]), refusal["logs"]

    every_trace = {t for run in (off, on) for o in run.outcomes for t in o.trace_ids}
    # Every attempt before an outcome's last was a 429, and the last too when the user gave up.
    refused = {t for o in on.outcomes for t in (o.trace_ids if o.status == 429 else o.trace_ids[:-1])}
    assert refused
    with duckdb.connect(str(db), read_only=True) as con:
        stored = {
            row[0]
            for row in con.execute("SELECT DISTINCT trace_id FROM spans WHERE name = 'POST /colorize'").fetchall()
        }
        names = dict(con.execute("SELECT name, count(*) FROM spans GROUP BY name").fetchall())
        decisions = dict(
            con.execute(
                "SELECT json_extract_string(attributes, ?) AS d, count(*) FROM spans WHERE trace_id IN (SELECT unnest(?)) "
                "AND name = 'POST /colorize' GROUP BY d",
                [f'$."{A.ADVISOR_DECISION}"', sorted(refused)],
            ).fetchall()
        )
        logs = con.execute("SELECT count(*) FROM logs WHERE body LIKE 'GPU busy, refused%'").fetchone()[0]
    assert every_trace <= stored  # every request's server span arrived
    assert names["ddcolor.preprocess"] == len(every_trace) and names["ddcolor.inference"] < len(every_trace)
    assert decisions == {"refuse": len(refused)} and logs == len(refused)
