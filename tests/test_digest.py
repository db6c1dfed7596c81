"""The digest built from a real store: headline, actions from the spans, plots, capacity, archive, JSON."""

from __future__ import annotations

import json

import pytest

from gpu_rca.correlate import Store
from gpu_rca.correlate.digest import (
    Digest,
    Trigger,
    build_digest,
    fetch_digest,
    list_digests,
    render_markdown,
    save_digest,
)
from gpu_rca.correlate.digest.actions import largest_fitting_size
from gpu_rca.correlate.digest.archive import fetch_rendering
from tests.support.digest import GPUS, HOST, XSS, analysis_for, build_incident

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def incident_store():
    store = Store(":memory:")
    incident = build_incident(store, hostile=True)
    yield store, incident
    store.close()


@pytest.fixture(scope="module")
def digest(incident_store) -> Digest:
    store, incident = incident_store
    return build_digest(
        store.connection,
        analysis_for(incident, hostile=True),
        trigger=Trigger("manual"),
        grafana_url="http://grafana.example:3000/",
    )


def test_headline_names_counts_first_failure_and_gpu(digest, incident_store):
    _, incident = incident_store
    head = digest.headline
    assert (head.failed_spans, head.total_spans) == (incident["failed"], incident["total"])
    assert head.gpus[0] == GPUS[0][0]  # most of the OOMs; GPU 1's started later
    assert head.hosts == (HOST,)
    assert head.top_cause == "gpu_oom_large_inputs"
    assert head.first_failure.startswith("2026-03-02T10:0")  # failures start after minute 15 (10:05)
    assert f"{incident['failed']} of {incident['total']} inference requests failed" in head.text
    assert "node-a/0" in head.text


def test_oom_action_caps_at_the_largest_size_that_fitted(digest, incident_store):
    store, _ = incident_store
    n_512, n_1280, oom_1280 = store.connection.execute(
        "SELECT count(*) FILTER (WHERE ddcolor_input_size = 512), count(*) FILTER (WHERE ddcolor_input_size = 1280),"
        " count(*) FILTER (WHERE ddcolor_input_size = 1280 AND error_type = 'cuda_oom') FROM spans"
    ).fetchone()
    action = digest.causes[0].action
    assert action.startswith("Cap `ddcolor.input_size` at 512")
    assert f"(0 OOM in {n_512} requests)" in action
    assert f"1280 ran out of memory in {oom_1280} of {n_1280}" in action


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("512", 100, 0), ("1024", 50, 0), ("1280", 40, 30)], (1024.0, 50, 0)),
        ([("512", 100, 0), ("1024", 200, 1), ("1280", 40, 30)], (1024.0, 200, 1)),  # 0.5 % is noise
        ([("1024", 50, 0), ("512", 100, 40), ("2048", 10, 0)], None),  # the smallest already fails
        ([("512", 100, 0), ("768", 10, 5), ("1024", 50, 0)], (512.0, 100, 0)),  # a failing size stops the run
        # Small requests fail too once large ones fill the GPU: 1024 is no worse than 512, 1280 is.
        ([("512", 1836, 43), ("1024", 118, 3), ("1280", 1507, 382)], (1024.0, 118, 3)),
        ([("person", 10, 0)], None),
    ],
)
def test_largest_fitting_size(rows, expected):
    assert largest_fitting_size(rows) == expected


def test_plots_are_pngs_of_the_failure_window(digest):
    ids = [p.id for p in digest.plots]
    assert ids == ["overview-requests", "gpu_oom_large_inputs-metrics"]
    assert all(p.png.startswith(PNG_MAGIC) and len(p.png) > 5000 for p in digest.plots)
    assert digest.causes[0].plot_ids == ("gpu_oom_large_inputs-metrics",)


def test_evidence_links_logs_and_kernel_events(digest, incident_store):
    _, incident = incident_store
    section = digest.causes[0]
    assert [t.trace_id for t in section.trace_links] == incident["failed_traces"][:3]
    link = section.trace_links[0].url
    assert link.startswith("http://grafana.example:3000/explore?schemaVersion=1&orgId=1&panes=")
    assert incident["failed_traces"][0] in link
    # Log lines of the example traces come first, then other error lines on the cause's hosts.
    assert section.log_lines[0].trace_id == incident["failed_traces"][0]
    assert all(XSS in line.body for line in section.log_lines)
    assert [e.xid for e in section.kernel_events] == [31]
    assert section.kernel_events[0].gpu_uuid == GPUS[0][0]  # placed through the inventory by PCI bus id


def test_capacity_answers_busiest_hours_memory_cost_and_idle_gpus(digest, incident_store):
    _, incident = incident_store
    cap = digest.capacity
    assert sum(h["requests"] for h in cap["busiest_hours"]) == incident["total"]
    assert cap["busiest_hours"][0]["requests"] >= cap["busiest_hours"][-1]["requests"]
    # Requests run one after another here: each 1280 lifts the process reading by 12 GiB over the 512s' 3 GiB.
    memory = cap["request_memory"]
    by_size = {r["input_size"]: r for r in memory["rows"]}
    assert by_size[1280]["memory_gib"] == pytest.approx(12.0, rel=0.01)
    assert memory["fit"]["points"] >= 8
    assert by_size[1280]["oom"] == incident["failed"]
    assert [g["idle"] for g in cap["gpus"]] == [False, False]


def test_json_round_trips_and_is_strict(digest):
    text = digest.to_json()
    document = json.loads(text)
    for key in ("window", "spans", "warnings", "causes", "id", "created_at", "trigger", "headline", "capacity"):
        assert key in document
    assert document["causes"][0]["cause"] == "gpu_oom_large_inputs"
    assert document["causes"][0]["action"] == digest.causes[0].action
    assert Digest.from_json(text).to_json() == text


def test_markdown_escapes_untrusted_text(digest):
    markdown = render_markdown(digest, plot_href=lambda p: f"plots/{p.id}.png")
    outside_code = markdown.split("```")[0::2]  # log lines live in fenced blocks, where viewers show text
    assert all(XSS not in part for part in outside_code)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert "![Metric windows for gpu_oom_large_inputs](plots/gpu_oom_large_inputs-metrics.png)" in markdown


def test_archive_saves_lists_and_serves_every_rendering(digest, incident_store):
    store, _ = incident_store
    with store.transaction():
        save_digest(store.connection, digest)
    [row] = [r for r in list_digests(store.connection) if r.id == digest.id]
    assert (row.trigger, row.top_cause, row.failed_spans) == (
        "manual",
        "gpu_oom_large_inputs",
        digest.headline.failed_spans,
    )
    assert fetch_digest(store.connection, digest.id).to_json() == digest.to_json()
    assert "<html" in fetch_rendering(store.connection, digest.id, "html")
    assert fetch_rendering(store.connection, digest.id, "md").startswith("# GPU failure digest")
    assert fetch_rendering(store.connection, "'; DROP TABLE digests; --", "json") is None


def test_a_window_without_failures_says_so():
    with Store(":memory:") as store:
        incident = build_incident(store, minutes=10)  # failures only start at minute 15
        analysis = analysis_for(incident) | {"causes": []}
        made = build_digest(store.connection, analysis, trigger=Trigger("schedule"), with_plots=False)
    assert made.headline.text.startswith("No inference request failed between 2026-03-02 09:50:00 UTC")
    assert made.headline.top_cause is None and made.causes == ()
