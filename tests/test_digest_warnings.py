"""A digest says what went wrong while it was made: a Prometheus that refused the connection or never answered,
and GPUs the trigger names without metrics, in its Markdown, HTML and JSON (not only in the server log)."""

from __future__ import annotations

import html
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gpu_rca.correlate.server import ServerConfig, create_app
from gpu_rca.correlate.store import Store
from gpu_rca.schemas.timefmt import rfc3339
from tests.support.digest import GPUS, HOST, MINUTE_NS, START_NS, build_incident
from tests.support.serving import running


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port nothing listens on: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port


@contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


PROMETHEUS = {"refused": (refusing_port, "refused the connection"), "silent": (silent_port, "timed out")}


@pytest.fixture(scope="module")
def incident_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("warnings") / "incident.duckdb"
    with Store.open(path) as store:
        build_incident(store)
    return path


def alert(*labels: dict[str, str]) -> dict[str, object]:
    starts = rfc3339(START_NS + 16 * MINUTE_NS)
    alerts = [
        {"status": "firing", "labels": {"alertname": "GpuMemoryHigh", **one}, "startsAt": starts} for one in labels
    ]
    return {"version": "4", "status": "firing", "alerts": alerts, "commonLabels": {}}


@pytest.mark.parametrize("how", PROMETHEUS)
def test_a_webhook_digest_says_why_prometheus_gave_nothing(incident_db: Path, tmp_path: Path, how: str) -> None:
    db = tmp_path / "copy.duckdb"
    db.write_bytes(incident_db.read_bytes())
    port_of, reason = PROMETHEUS[how]
    with port_of() as port:
        config = ServerConfig(prometheus_url=f"http://127.0.0.1:{port}", pull_timeout_s=1.0, pull_interval_s=3600)
        with running(create_app(Store.open(db), config)) as client:
            answer = client.post("/alertmanager", json=alert({"gpu": "0", "Hostname": HOST}))
            assert answer.status_code == 201, answer.text
            digest_id = answer.json()["id"]
            renderings = {fmt: client.get(f"/digests/{digest_id}.{fmt}") for fmt in ("json", "md", "html")}
    warnings = renderings["json"].json()["warnings"]
    assert answer.json()["warnings"] == warnings
    said = [w for w in warnings if w.startswith("GPU metrics were not pulled")]
    assert len(said) == 1 and reason in said[0] and f"127.0.0.1:{port}" in said[0], warnings
    other = "timed out" if how == "refused" else "refused"
    assert other not in said[0]  # the right word, not both
    assert said[0] in renderings["md"].text
    assert html.escape(said[0], quote=False) in renderings["html"].text or said[0] in renderings["html"].text


def test_a_webhook_digest_names_alerting_gpus_without_metrics(incident_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    db.write_bytes(incident_db.read_bytes())
    stranger = "GPU-ffffffff-0000-4000-8000-000000000000"  # alerting, but no sample of it is stored
    with running(create_app(Store.open(db), ServerConfig())) as client:
        answer = client.post("/alertmanager", json=alert({"gpu": "0", "Hostname": HOST}, {"UUID": stranger}))
        assert answer.status_code == 201, answer.text
        digest_id = answer.json()["id"]
        renderings = {fmt: client.get(f"/digests/{digest_id}.{fmt}").text for fmt in ("md", "html")}
        stored = client.get(f"/digests/{digest_id}.json").json()
    said = [w for w in stored["warnings"] if w.startswith("no GPU metrics in the store")]
    assert len(said) == 1 and stranger in said[0] and GPUS[0][0] not in said[0], stored["warnings"]
    assert said[0] in renderings["md"]
    assert stranger in renderings["html"] and "no GPU metrics in the store" in renderings["html"]


def test_a_webhook_digest_says_which_parts_of_the_store_could_not_be_read(incident_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    db.write_bytes(incident_db.read_bytes())
    store = Store.open(db)
    with running(create_app(store, ServerConfig())) as client:
        # The store goes bad under the running server: its logs and metric tables can no longer be read.
        for table in ("logs", "metric_samples"):
            store.connection.execute(f"ALTER TABLE {table} RENAME TO {table}_unreadable")
        answer = client.post("/alertmanager", json=alert({"gpu": "0", "Hostname": HOST}))
        assert answer.status_code == 201, answer.text
        digest_id = answer.json()["id"]
        renderings = {fmt: client.get(f"/digests/{digest_id}.{fmt}").text for fmt in ("md", "html")}
        stored = client.get(f"/digests/{digest_id}.json").json()
    said = [w for w in stored["warnings"] if w.startswith("the store could not be read")]
    assert said, stored["warnings"]
    assert any("metric_samples" in w for w in said), said
    for warning in said:
        assert warning in renderings["md"]
        assert html.escape(warning, quote=False) in renderings["html"] or warning in renderings["html"]
