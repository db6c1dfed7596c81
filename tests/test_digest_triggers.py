"""Digest triggers: the Alertmanager v4 webhook payload, and the failure-burst detector on a real store."""

from __future__ import annotations

import json

import pytest

from gpu_rca.correlate import Store
from gpu_rca.correlate.digest import BurstDetector, parse_alertmanager
from gpu_rca.correlate.digest.alertmanager import LOOKBACK_NS, AlertedGpu
from gpu_rca.correlate.digest.pipeline import resolve_gpus
from gpu_rca.schemas.errors import InputError
from tests.support.digest import GPUS, HOST, START_NS, build_incident


def payload(*alerts: dict, status: str = "firing", **extra) -> dict:
    """A webhook body as Alertmanager 0.25 posts it."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="GpuMemoryHigh"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "gpu-rca",
        "groupLabels": {"alertname": "GpuMemoryHigh"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    } | extra


def alert(labels: dict, starts: str = "2026-03-02T10:06:00.123456789Z", status: str = "firing") -> dict:
    return {
        "status": status,
        "labels": {"alertname": "GpuMemoryHigh", **labels},
        "annotations": {},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "c0ffee",
    }


def test_parses_gpus_by_uuid_or_index_and_host_and_the_window_start():
    body = payload(
        alert({"UUID": GPUS[0][0], "gpu": "0", "Hostname": HOST}, starts="2026-03-02T10:07:00Z"),
        alert({"gpu": "1", "hostname": HOST}),  # newer dcgm-exporter: lowercase hostname, no UUID here
        alert({"UUID": GPUS[0][0], "gpu": "0", "Hostname": HOST}),  # the same GPU twice is one GPU
        alert({"instance": "node-b:9400"}),  # names no GPU: still counts for the window
    )
    note = parse_alertmanager(json.dumps(body).encode())
    assert note.gpus == (AlertedGpu(GPUS[0][0], 0, HOST), AlertedGpu(None, 1, HOST))
    assert note.alertnames == ("GpuMemoryHigh",)
    assert note.firing == 4
    assert note.earliest_start_ns == START_NS + 16 * 60 * 10**9 + 123_456_000  # Go's 9 digits, µs kept
    assert note.since_ns == note.earliest_start_ns - LOOKBACK_NS


def test_resolved_alerts_do_not_count():
    note = parse_alertmanager(payload(alert({"UUID": "GPU-x"}, status="resolved"), status="resolved"))
    assert (note.firing, note.gpus) == (0, ())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps(payload(alert({"UUID": "GPU-x"})) | {"version": "3"}).encode(), "version"),
        (json.dumps(payload()).encode(), "no `alerts`"),
        (
            json.dumps(
                payload({"labels": {}, "startsAt": "2026-03-02T10:00:00Z", "status": "firing"}) | {"alerts": "x"}
            ).encode(),
            "no `alerts`",
        ),
        (json.dumps(payload("alert")).encode(), "not an object"),
        (json.dumps(payload(alert({"UUID": 7}))).encode(), "string labels"),
        (json.dumps(payload(alert({}, starts="yesterday"))).encode(), "RFC 3339"),
        (json.dumps(payload(alert({}) | {"startsAt": None})).encode(), "startsAt"),
        (json.dumps(payload(alert({}, status="pending"))).encode(), "firing or resolved"),
        (json.dumps(payload(alert({"gpu": "zero", "Hostname": HOST}))).encode(), "GPU index"),
        (json.dumps(payload(alert({}), status="weird")).encode(), "firing or resolved"),
    ],
)
def test_malformed_payloads_are_input_errors(body, message):
    with pytest.raises(InputError, match=message):
        parse_alertmanager(body)


def test_alerted_gpus_resolve_through_the_inventory():
    with Store(":memory:") as store:
        build_incident(store, minutes=5)
        found, missing = resolve_gpus(
            store.connection, [AlertedGpu(None, 1, HOST), AlertedGpu(None, 7, HOST), AlertedGpu(GPUS[0][0], None, None)]
        )
    assert found == [GPUS[1][0], GPUS[0][0]]
    assert missing == [f"{HOST}/7"]


def test_burst_fires_once_per_gpu_per_cooldown():
    with Store(":memory:") as store:
        build_incident(store)  # from minute 15 (GPU 0) and 22 (GPU 1), 1280-px requests fail
        detector = BurstDetector()
        burst = detector.check(store.connection)
        assert burst is not None
        assert GPUS[0][0] in burst.gpus
        assert burst.failed >= 20 and burst.failed >= 0.05 * burst.total
        assert burst.end_ns - burst.start_ns == 5 * 60 * 10**9
        detector.mark(burst)
        assert detector.check(store.connection) is None  # the same GPU inside its 30 min cooldown


@pytest.mark.parametrize(("min_failed", "min_share"), [(1000, 0.05), (20, 0.9)])
def test_no_burst_below_either_threshold(min_failed, min_share):
    with Store(":memory:") as store:
        build_incident(store)
        assert BurstDetector(min_failed=min_failed, min_share=min_share).check(store.connection) is None


def test_no_burst_in_an_empty_store():
    with Store(":memory:") as store:
        assert BurstDetector().check(store.connection) is None
