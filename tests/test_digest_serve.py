"""Digests through `gpu-rca serve` and the `digest` command: Alertmanager's webhook, pages, tokens, bursts, cron."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import httpx
import pytest

from gpu_rca.correlate import Store
from gpu_rca.correlate.digest import list_digests
from gpu_rca.correlate.server import ServerConfig, create_app
from gpu_rca.correlate.server.digests import BurstWatcher
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas.timefmt import rfc3339
from tests.support.digest import GPUS, HOST, MINUTE_NS, START_NS, build_incident, make_incident
from tests.support.waiting import wait_for

TOKEN = "s3cret-digest-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def incident_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "incident.duckdb"
    with Store.open(path) as store:
        incident = build_incident(store, hostile=True)
    return path, incident


@pytest.fixture(scope="module")
def server(incident_db):
    path, _ = incident_db
    env = dict(os.environ, GPU_RCA_TOKEN=TOKEN, GPU_RCA_GRAFANA_URL="http://grafana.example:3000")
    with ServeProcess(path, env=env) as serve:
        yield serve


def alert_payload(**labels: str) -> dict:
    starts = rfc3339(START_NS + 16 * MINUTE_NS)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="GpuMemoryHigh"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "gpu-rca",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "GpuMemoryHigh", **labels},
                "annotations": {},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "f",
            }
        ],
    }


def digest_count(url: str) -> int:
    answer = httpx.get(f"{url}/digests", headers={**AUTH, "Accept": "application/json"}, timeout=30)
    answer.raise_for_status()
    return len(answer.json()["digests"])


def test_alertmanager_webhook_stores_a_digest_for_the_named_gpu_and_window(server):
    answer = httpx.post(
        f"{server.url}/alertmanager", json=alert_payload(gpu="0", Hostname=HOST), headers=AUTH, timeout=120
    )
    assert answer.status_code == 201, answer.text
    document = answer.json()
    assert document["trigger"]["kind"] == "alertmanager"
    assert document["trigger"]["gpus"] == [GPUS[0][0]]  # index + host resolved through the inventory
    assert document["window"]["start"] == rfc3339(START_NS + MINUTE_NS)  # startsAt − 15 min
    # The alert names GPU 0; the workload's OOMs fail the same size on GPU 1 too, and the digest says so.
    assert GPUS[0][0] in document["headline"]["gpus"]
    assert document["causes"] and GPUS[0][0] in document["causes"][0]["gpus"]
    digest_id = document["id"]
    assert answer.headers["location"] == f"/digests/{digest_id}.html"

    page = httpx.get(f"{server.url}/digests/{digest_id}.html", headers=AUTH, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="causes"' in page.text and "<script>" not in page.text and "&lt;script&gt;" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script runs
    stored = httpx.get(f"{server.url}/digests/{digest_id}.json", headers=AUTH, timeout=30).json()
    assert stored["id"] == digest_id and stored["causes"] == document["causes"]
    markdown = httpx.get(f"{server.url}/digests/{digest_id}.md", headers=AUTH, timeout=30).text
    plot_path = markdown.split("![", 1)[1].split("](", 1)[1].split(")", 1)[0]  # the first image, relative to the .md
    plot = httpx.get(f"{server.url}/digests/{plot_path}", headers=AUTH, timeout=30)
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    listing = httpx.get(f"{server.url}/digests", headers=AUTH, timeout=30).text
    assert f'href="/digests/{digest_id}.html"' in listing
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=30).text
    assert 'gpu_rca_serve_digests_total{trigger="alertmanager"}' in metrics


def test_an_alert_before_any_span_arrived_is_retryable_and_creates_nothing(server):
    before = digest_count(server.url)
    payload = alert_payload(gpu="0", Hostname=HOST)
    payload["alerts"][0]["startsAt"] = rfc3339(START_NS + 400 * MINUTE_NS)  # long after the stored incident
    answer = httpx.post(f"{server.url}/alertmanager", json=payload, headers=AUTH, timeout=60)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"].isdigit()
    assert "no inference spans" in answer.json()["message"]
    assert digest_count(server.url) == before


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json.dumps({"version": "4", "alerts": []}).encode(),
        json.dumps(alert_payload() | {"version": "2"}).encode(),
        json.dumps({**alert_payload(), "alerts": [{"labels": {"UUID": 1}, "startsAt": "x"}]}).encode(),
    ],
)
def test_a_malformed_payload_gets_400_and_creates_nothing(server, body):
    before = digest_count(server.url)
    answer = httpx.post(
        f"{server.url}/alertmanager", content=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=30
    )
    assert answer.status_code == 400
    assert answer.json()["message"]
    assert digest_count(server.url) == before


def test_every_digest_route_needs_the_token(server):
    for method, path in (("GET", "/"), ("GET", "/digests"), ("POST", "/alertmanager"), ("POST", "/digests")):
        assert httpx.request(method, f"{server.url}{path}", timeout=30).status_code == 401


def test_unknown_digests_and_formats_are_404(server):
    for path in ("/digests/nope.html", "/digests/nope.pdf", "/digests/x/plots/y.png"):
        assert httpx.get(f"{server.url}{path}", headers=AUTH, timeout=30).status_code == 404


def test_digest_command_asks_serve_while_it_holds_the_store(server, incident_db, tmp_path):
    path, incident = incident_db
    env = dict(os.environ, GPU_RCA_TOKEN=TOKEN)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpu_rca",
            "digest",
            "--server",
            server.url,
            "--since",
            rfc3339(START_NS),
            "--until",
            rfc3339(incident["end_ns"]),
            "--trigger",
            "schedule",
            "--format",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["trigger"]["kind"] == "schedule"
    assert document["spans"] == {"total": incident["total"], "failed": incident["failed"], "slow": 0}
    assert httpx.get(f"{server.url}/digests/{document['id']}.json", headers=AUTH, timeout=30).status_code == 200
    locked = subprocess.run(
        [sys.executable, "-m", "gpu_rca", "digest", "--db", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert locked.returncode == 1
    assert locked.stderr.startswith("Error: ") and "--server" in locked.stderr


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    httpd = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", _Hook.received
    httpd.shutdown()
    httpd.server_close()


def test_digest_command_on_a_store_writes_markdown_with_plots_stores_it_and_notifies(tmp_path, webhook):
    hook_url, received = webhook
    db = tmp_path / "s.duckdb"
    with Store.open(db) as store:
        incident = build_incident(store)
    out = tmp_path / "report" / "digest.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_RCA_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpu_rca",
            "digest",
            "--db",
            str(db),
            "--out",
            str(out),
            "--notify-url",
            hook_url,
            "--grafana-url",
            "http://grafana.example:3000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    markdown = out.read_text()
    assert markdown.startswith("# GPU failure digest")
    assert "](plots/gpu_oom_large_inputs-metrics.png)" in markdown
    assert (out.parent / "plots" / "gpu_oom_large_inputs-metrics.png").read_bytes().startswith(b"\x89PNG")
    assert "http://grafana.example:3000/explore?" in markdown
    with Store.open(db, read_only=True) as store:
        [row] = list_digests(store.connection)
    # No --since: the window is [first failure − 15 min, last failure + 1 min], so every failure is in it.
    assert done.stderr.startswith(f"digest {row.id}: {incident['failed']} of ")
    [message] = received
    assert set(message) == {"text"}
    assert message["text"].startswith("*GPU failure digest* (manual): ")
    assert "gpu_oom_large_inputs" in message["text"]


def test_burst_watcher_makes_one_digest_per_burst(tmp_path):
    db = tmp_path / "b.duckdb"
    with Store.open(db) as store:
        build_incident(store)
    app = create_app(Store.open(db), ServerConfig())

    async def two_checks() -> tuple[str | None, str | None, list]:
        async with app.router.lifespan_context(app):  # starts the store writer, as serve does
            app.state.gpu_rca_burst_watcher.stop()  # serve's own watcher: this test checks by hand
            watcher = BurstWatcher(app)
            first, second = watcher.check_once(), watcher.check_once()
            cursor = app.state.gpu_rca.store.cursor()
            try:
                return first, second, list_digests(cursor)
            finally:
                cursor.close()

    made, again, rows = asyncio.run(two_checks())
    assert made is not None
    assert again is None  # the same GPU within its cooldown
    assert [(r.id, r.trigger, r.top_cause) for r in rows] == [(made, "burst", "gpu_oom_large_inputs")]


def test_stored_failures_wake_the_burst_watcher_before_its_interval(tmp_path):
    """A stored batch holding failed spans starts a check within about a second, not at the next interval."""
    incident = make_incident()
    app = create_app(Store.open(tmp_path / "wake.duckdb"), ServerConfig())

    async def post_and_wait() -> tuple[int, float]:
        async with app.router.lifespan_context(app):
            app.state.gpu_rca_burst_watcher.stop()
            app.state.gpu_rca.counters.failures_stored.clear()  # set by that stop, to end its wait
            watcher = BurstWatcher(app, interval_s=3600.0).start()  # only a wake can check within the test
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                    answer = await client.post(
                        "/v1/traces",
                        content=incident.trace_request.SerializeToString(),
                        headers={"Content-Type": "application/x-protobuf"},
                    )
                posted = asyncio.get_running_loop().time()
                while watcher.digests_made == 0 and asyncio.get_running_loop().time() - posted < 30:
                    await asyncio.sleep(0.05)
                return answer.status_code, asyncio.get_running_loop().time() - posted
            finally:
                await asyncio.to_thread(watcher.stop)

    code, waited_s = asyncio.run(post_and_wait())
    assert code == 200
    assert waited_s < 30, "no burst digest although the stored batch held a burst of failures"


def test_bad_input_to_post_digests_is_400(server):
    answer = httpx.post(f"{server.url}/digests", json={"since": "last tuesday"}, headers=AUTH, timeout=30)
    assert answer.status_code == 400 and answer.json()["message"] == (
        "since: 'last tuesday' is not RFC 3339, epoch seconds or a duration like 2h or 1h30m"
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--db", "{tmp}/missing.duckdb"], 1, "does not exist; ingest something first"),
        (["--db", "{tmp}/x.duckdb", "--server", "http://127.0.0.1:9"], 2, "use --db or --server, not both"),
        (["--server", "ftp://example"], 2, "--server must be an http(s) URL"),
        (["--server", "http://127.0.0.1:9"], 1, "cannot reach gpu-rca serve at http://127.0.0.1:9"),
        (["--db", "{tmp}/x.duckdb", "--notify-url", "slack"], 2, "--notify-url must be an http(s) URL"),
        (
            ["--db", "{tmp}/x.duckdb", "--since", "soon"],
            2,
            "--since: 'soon' is not RFC 3339, epoch seconds or a duration",
        ),
    ],
)
def test_digest_command_errors_are_one_line(tmp_path, capsys, args, code, message):
    from gpu_rca.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["digest", *(a.format(tmp=tmp_path) for a in args)])
    assert stop.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "missing.duckdb").exists()


def test_serve_makes_a_burst_digest_from_spans_it_receives(tmp_path):
    incident = make_incident()
    with ServeProcess(tmp_path / "live.duckdb") as serve:
        answer = httpx.post(
            f"{serve.url}/v1/traces",
            content=incident.trace_request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=60,
        )
        assert answer.status_code == 200
        found: list[dict] = []
        wait_for(
            lambda: (
                found.extend(
                    d
                    for d in httpx.get(
                        f"{serve.url}/digests", headers={"Accept": "application/json"}, timeout=10
                    ).json()["digests"]
                    if d["trigger"] == "burst"
                )
                or found
            ),
            timeout_s=60,
            interval_s=0.5,
            what="a burst digest",
        )
        document = httpx.get(f"{serve.url}/digests/{found[0]['id']}.json", timeout=10).json()
    assert GPUS[0][0] in document["trigger"]["gpus"]
    assert re.search(r"failed within 5 min on [12] GPU\(s\)$", document["trigger"]["detail"])
    assert document["causes"][0]["cause"] == "gpu_oom_large_inputs"
