"""GPU history: one GPU the lab makes fail in three separate incidents, its ledger through `gpu-rca gpus` and
`serve`'s `/gpus`, and the digest that says it is the third incident.

The same fleet (same seed, so the same GPU UUIDs) runs three times, 20, 10 and 2 days ago, an uncorrectable-ECC
fault on node-b/0 each time; each run's window gets its own digest. The lab seeds a GPU's UUID from its host
and index, so the move is made as an operator's would look in the telemetry: the third run's files name the
same GPU's host node-c.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gpu_rca.correlate import Store
from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.lab import gpu_uuid_for
from gpu_rca.schemas.timefmt import rfc3339

SEED = 5
DAY_NS = 86_400 * 10**9
MINUTE_NS = 60 * 10**9
DAYS_AGO = (20, 10, 2)
SCENARIO = """\
name: {name}
seed: {seed}
start: {start}
duration: 12m
fleet:
  - {{host: node-a, gpus: 2, model: A100-80GB}}
  - {{host: node-b, gpus: 1, model: A100-80GB}}
workload:
  rate: 2/s
faults:
  - {{kind: ecc_uncorrectable, gpu: node-b/0, start: 6m, end: 10m, severity: 0.7}}
truth: {{cause: ecc_memory_errors, drivers: {{gpu.uuid: node-b/0}}}}
"""
FAILING = gpu_uuid_for(SEED, "node-b", 0)


def gpu_rca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpu_rca", *args], capture_output=True, text=True, timeout=300)


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    run = gpu_rca(*args)
    assert run.returncode == 0, run.stderr
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """The three runs in one store, a digest made for each window (oldest first); returns the digests' JSON."""
    root = tmp_path_factory.mktemp("history")
    db = root / "fleet.duckdb"
    now_ns = (time.time_ns() // MINUTE_NS) * MINUTE_NS
    digests = []
    for run, days in enumerate(DAYS_AGO, 1):
        start_ns = now_ns - days * DAY_NS
        scenario = root / f"ecc-repeat-{run}.yaml"
        scenario.write_text(SCENARIO.format(name=scenario.stem, seed=SEED, start=rfc3339(start_ns)))
        out = root / f"run-{run}"
        ok("lab", "run", str(scenario), "--out", str(out))
        if run == 3:  # the GPU has moved to node-c
            for file in out.iterdir():
                file.write_text(file.read_text().replace("node-b", "node-c"))
        ok("ingest", "--db", str(db), str(out))
        made = ok(
            "digest",
            "--db",
            str(db),
            "--since",
            rfc3339(start_ns),
            "--until",
            rfc3339(start_ns + 12 * MINUTE_NS),
            "--format",
            "json",
        )
        digests.append(json.loads(made.stdout))
    return db, digests


def test_the_lab_blames_the_same_gpu_in_each_window(store: tuple[Path, list[dict]]) -> None:
    _, digests = store
    for digest in digests:
        assert digest["causes"][0]["cause"] == "ecc_memory_errors"
        assert digest["causes"][0]["gpus"] == [FAILING]


def test_the_gpu_that_failed_three_times_comes_first_with_its_incidents_and_advice(
    store: tuple[Path, list[dict]],
) -> None:
    db, digests = store
    ledger = json.loads(ok("gpus", "--db", str(db), "--json").stdout)
    first = ledger["gpus"][0]
    assert first["gpu_uuid"] == FAILING
    assert [i["digests"] for i in first["incidents"]] == [[d["id"]] for d in digests]
    assert first["causes"] == {"ecc_memory_errors": 3}
    assert [g["incidents"] for g in ledger["gpus"][1:]] == [[], []]
    actions = [a["action"] for a in first["advice"]]
    assert actions[:1] == ["rma"] and "drain" in actions
    rma = first["advice"][0]["text"]
    dbe = sum(x["count"] for x in first["xids"] if x["xid"] == 48)
    days = sorted({x["day"] for x in first["xids"] if x["xid"] == 48})
    assert len(days) == 3 and dbe >= 3
    assert f"XID 48 ×{dbe} ({', '.join(days)})" in rma
    assert "3 incidents blamed on its hardware (ecc_memory_errors ×3)" in first["advice"][1]["text"]
    assert first["failure_lift"] > 1 and first["ecc_uncorrected"] > 0


def test_a_gpu_moved_to_another_host_keeps_its_history(store: tuple[Path, list[dict]]) -> None:
    db, _ = store
    ledger = json.loads(ok("gpus", "--db", str(db), "--json").stdout)
    first = ledger["gpus"][0]
    assert [h["host"] for h in first["hosts"]] == ["node-b", "node-c"]
    assert len(first["incidents"]) == 3
    assert not any("node-c" in [h["host"] for h in g["hosts"]] for g in ledger["gpus"][1:])


def test_since_cuts_older_incidents(store: tuple[Path, list[dict]]) -> None:
    db, digests = store
    ledger = json.loads(ok("gpus", "--db", str(db), "--since", "15d", "--json").stdout)
    first = ledger["gpus"][0]
    assert first["gpu_uuid"] == FAILING
    assert [i["digests"] for i in first["incidents"]] == [[d["id"]] for d in digests[1:]]
    assert {x["day"] for x in first["xids"]} == {i["start"][:10] for i in first["incidents"]}
    assert "drain" in [a["action"] for a in first["advice"]]
    assert json.loads(ok("gpus", "--db", str(db), "--since", "1d", "--json").stdout)["gpus"] == []


def test_the_third_digest_says_it_is_the_third_incident_on_this_gpu(store: tuple[Path, list[dict]]) -> None:
    _, digests = store
    assert digests[0]["history"] == []
    assert [n["text"] for n in digests[1]["history"]] == ["second incident on this GPU in 30 days"]
    (note,) = digests[2]["history"]
    assert note["gpu_uuid"] == FAILING and note["incident"] == 3
    assert note["text"] == "third incident on this GPU in 30 days"
    assert [e["digests"] for e in note["earlier"]] == [[digests[0]["id"]], [digests[1]["id"]]]


def test_the_table_shows_the_gpu_first_with_its_advice(store: tuple[Path, list[dict]]) -> None:
    db, _ = store
    text = ok("gpus", "--db", str(db)).stdout
    rows = [line for line in text.splitlines() if "GPU-" in line]
    assert FAILING[:12] in rows[0] and "rma, drain" in rows[0]
    assert "advice: RMA, with this evidence: XID 48" in text


def test_the_page_on_serve_shows_the_same_ledger(store: tuple[Path, list[dict]]) -> None:
    db, digests = store
    cli = json.loads(ok("gpus", "--db", str(db), "--json").stdout)
    with ServeProcess(db) as serve:
        page = httpx.get(f"{serve.url}/gpus", timeout=60)
        document = httpx.get(f"{serve.url}/gpus", headers={"Accept": "application/json"}, timeout=60).json()
        via_server = json.loads(ok("gpus", "--server", serve.url, "--json", "--since", "15d").stdout)
        digest_page = httpx.get(f"{serve.url}/digests/{digests[2]['id']}.html", timeout=60)
        bad = httpx.get(f"{serve.url}/gpus?since=yesterday", headers={"Accept": "application/json"}, timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.index(FAILING) < min(html.index(g["gpu_uuid"]) for g in cli["gpus"][1:])
    assert "RMA, with this evidence: XID 48" in html and "drain it: 3 incidents" in html
    assert [g["gpu_uuid"] for g in document["gpus"]] == [g["gpu_uuid"] for g in cli["gpus"]]
    assert document["gpus"][0]["incidents"] == cli["gpus"][0]["incidents"]
    assert len(via_server["gpus"][0]["incidents"]) == 2
    assert "third incident on this GPU in 30 days" in digest_page.text
    assert bad.status_code == 400 and "since" in bad.json()["message"]


def test_an_empty_store_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    Store.open(db).close()
    run = gpu_rca("gpus", "--db", str(db))
    assert run.returncode == 1
    assert run.stderr.strip() == "Error: the store holds no inference spans yet: ingest files or point serve at it"
    run = gpu_rca("gpus", "--db", str(db), "--since", "soon")
    assert run.returncode == 2 and run.stderr.startswith("Error: --since: 'soon' is not")


def test_the_page_needs_the_token_when_serve_has_one(store: tuple[Path, list[dict]]) -> None:
    db, _ = store
    env = dict(os.environ, GPU_RCA_TOKEN="gpus-page-token")
    with ServeProcess(db, env=env) as serve:
        refused = httpx.get(f"{serve.url}/gpus", timeout=60)
        let_in = httpx.get(f"{serve.url}/gpus?token=gpus-page-token", timeout=60)
    assert refused.status_code == 401
    assert let_in.status_code == 200 and FAILING in let_in.text
