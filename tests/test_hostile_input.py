"""Hostile input, property-based: mangled OTLP (protobuf and JSON) sent to the server, and mangled Prometheus
answers and text, kernel logs, loguru lines and scenarios read from files. Never a crash or a 500, always a
clear `GpuRcaError`-family error or report, and a refused input writes nothing."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_rca.correlate.ingest import ingest_file
from gpu_rca.correlate.server import ServerConfig, create_app
from gpu_rca.correlate.store import Store
from gpu_rca.lab.scenario import load_scenario, parse_scenario
from gpu_rca.schemas import store as s
from gpu_rca.schemas.errors import GpuRcaError
from gpu_rca.schemas.otlp_json import message_to_json
from tests.support.files import KERNEL_LOG, loguru_lines, query_range
from tests.support.otlp import every_stamp_trace_request
from tests.support.serving import all_stored, running

#: Derandomized: the same examples on every run, so a failure here is reproducible, never flaky.
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    max_examples=40,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Strings that mean something to SQL, HTML, a shell or a file system; they must stay plain text.
HOSTILE = (
    "'); DROP TABLE spans; --",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "\x00",
    "%s%n",
    "${jndi:ldap://x}",
    "\u202e\ufeff",
    "0" * 300,
    "-1",
    "NaN",
    "1e309",
    "\\",
    '"',
    "{{7*7}}",
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=24)
    | st.sampled_from(HOSTILE)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document: containers too, so whole subtrees get replaced."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*prefix, index))


@st.composite
def mangled_json(draw: st.DrawFn, valid: Any) -> Any:
    """`valid` with one to three places replaced by arbitrary JSON values (or removed)."""
    document = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(document) if p]
        if not paths:
            return draw(JSON_VALUES)
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return document


@st.composite
def mangled_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` cut short, with bytes flipped or spliced in, or replaced by random bytes."""
    how = draw(st.sampled_from(["random", "truncate", "flip", "splice"]))
    if how == "random":
        return draw(st.binary(max_size=512))
    if how == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        if how == "flip":
            data[at] ^= draw(st.integers(1, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def row_counts(connection: Any) -> dict[str, int]:
    """Rows in every store table."""
    return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in s.TABLES}


# --- OTLP through the server ----------------------------------------------------------------------

VALID_TRACES = every_stamp_trace_request(3)
VALID_PROTOBUF = VALID_TRACES.SerializeToString()
VALID_JSON = json.loads(message_to_json(VALID_TRACES))


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[httpx.Client, Store]]:
    """The real app under uvicorn on loopback (single writer, store on disk); one for every example."""
    with tempfile.TemporaryDirectory(prefix="gpu-rca-hostile-") as folder:
        store = Store(Path(folder) / "store.duckdb")
        app = create_app(store, ServerConfig(max_body_bytes=1 << 20), close_store=False)
        with running(app) as client:
            yield client, store
        store.close()


def _post_and_check(client: httpx.Client, store: Store, body: bytes, content_type: str) -> None:
    reader = store.cursor()
    try:
        all_stored(client)
        before = row_counts(reader)
        response = client.post("/v1/traces", content=body, headers={"Content-Type": content_type})
        all_stored(client)
        assert response.status_code in (200, 400), response.content[:300]
        if response.status_code == 400:
            assert row_counts(reader) == before  # a refused request writes nothing
            message = (
                response.json()["message"]
                if content_type == "application/json"
                else response.content.decode("utf-8", "replace")
            )
            assert message.strip()  # says why
        else:
            after = row_counts(reader)
            assert after[s.SPANS] - before[s.SPANS] <= 3
    finally:
        reader.close()


@SETTINGS
@given(body=mangled_bytes(VALID_PROTOBUF))
def test_mangled_otlp_protobuf_is_stored_or_refused_whole(server, body: bytes) -> None:
    client, store = server
    _post_and_check(client, store, body, "application/x-protobuf")


@SETTINGS
@given(document=mangled_json(VALID_JSON))
def test_mangled_otlp_json_is_stored_or_refused_whole(server, document: Any) -> None:
    client, store = server
    _post_and_check(client, store, json.dumps(document).encode(), "application/json")


@SETTINGS
@given(body=st.binary(max_size=256) | st.text(max_size=256).map(str.encode))
def test_arbitrary_json_bodies_are_refused_cleanly(server, body: bytes) -> None:
    client, store = server
    _post_and_check(client, store, body, "application/json")


def test_the_server_is_healthy_after_the_hostile_requests(server) -> None:
    client, _ = server
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert (
        client.post(
            "/v1/traces", content=VALID_PROTOBUF, headers={"Content-Type": "application/x-protobuf"}
        ).status_code
        == 200
    )


# --- files ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def file_store() -> Iterator[tuple[Store, Path]]:
    with tempfile.TemporaryDirectory(prefix="gpu-rca-hostile-files-") as folder:
        with Store(Path(folder) / "store.duckdb") as store:
            yield store, Path(folder)


def _ingest_and_check(file_store: tuple[Store, Path], content: bytes) -> None:
    store, folder = file_store
    path = folder / "input"
    path.write_bytes(content)
    before = row_counts(store.connection)
    report = ingest_file(store, path)  # never raises: a bad file is a report, not a crash
    assert report.status in ("ingested", "skipped", "failed")
    if report.status != "ingested":
        assert report.reason and "\n" not in report.reason.strip()  # one clear line
        assert row_counts(store.connection) == before  # and nothing of it stored


VALID_QUERY_RANGE = json.loads(query_range())


@SETTINGS
@given(document=mangled_json(VALID_QUERY_RANGE))
def test_mangled_prometheus_answers_are_stored_or_refused_whole(file_store, document: Any) -> None:
    _ingest_and_check(file_store, (json.dumps(document) + "\n").encode())


METRIC_NAMES = st.sampled_from(
    [
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_FB_USED",
        "dcgm_gpu_temp",
        "nvidia_gpu_memory_used_mb",
        "DCGM_FI_DEV_POWER_USAGE",
    ]
) | st.text(max_size=12)
LABEL_VALUES = st.sampled_from(HOSTILE) | st.text(max_size=16)
SAMPLE_VALUES = st.sampled_from(["71", "NaN", "+Inf", "-Inf", "1e309", "0x10", ""]) | st.text(max_size=8)


@st.composite
def exposition_lines(draw: st.DrawFn) -> str:
    lines = ["# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).", "# TYPE DCGM_FI_DEV_GPU_TEMP gauge"]
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.text(max_size=60)))
            continue
        labels = draw(
            st.dictionaries(
                st.sampled_from(["gpu", "UUID", "pci_bus_id", "Hostname", "modelName"]) | st.text(max_size=6),
                LABEL_VALUES,
                max_size=4,
            )
        )
        rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
        timestamp = draw(st.sampled_from(["", " 1700000000000", " -5", " 99999999999999999999", " x"]))
        lines.append(f"{draw(METRIC_NAMES)}{{{rendered}}} {draw(SAMPLE_VALUES)}{timestamp}")
    return "\n".join(lines) + "\n"


@SETTINGS
@given(text=exposition_lines())
def test_hostile_prometheus_text_is_stored_or_refused_whole(file_store, text: str) -> None:
    _ingest_and_check(file_store, text.encode())


@st.composite
def kernel_lines(draw: st.DrawFn) -> str:
    prefixes = [
        "2026-03-02T10:00:02+0000 node-a kernel: ",
        "[Sun Feb 23 16:24:18 2025] ",
        "[  100.5] ",
        "Mar  2 10:00:02 node-a kernel: ",
        "",
    ]
    lines = [KERNEL_LOG.splitlines()[0]]
    for _ in range(draw(st.integers(1, 5))):
        pci = draw(st.sampled_from(["0000:3b:00", "3b:00.0", "zz:zz", ""]) | st.text(max_size=12))
        xid = draw(st.sampled_from(["79", "13", "-1", "99999999999999999999", "x"]) | st.text(max_size=4))
        tail = draw(st.sampled_from(HOSTILE) | st.text(max_size=30))
        pid = draw(st.sampled_from(["1234", "-", "99999999999999999999999"]) | st.text(max_size=5))
        lines.append(f"{draw(st.sampled_from(prefixes))}NVRM: Xid (PCI:{pci}): {xid}, pid={pid}, name={tail}, {tail}")
    return "\n".join(lines) + "\n"


@SETTINGS
@given(text=kernel_lines())
def test_hostile_kernel_log_lines_are_stored_or_refused_whole(file_store, text: str) -> None:
    _ingest_and_check(file_store, text.encode("utf-8", "surrogatepass"))


VALID_LOGURU = [json.loads(line) for line in loguru_lines().splitlines()]


@SETTINGS
@given(documents=st.lists(mangled_json(VALID_LOGURU[0]), min_size=1, max_size=3))
def test_mangled_loguru_lines_are_stored_or_refused_whole(file_store, documents: list[Any]) -> None:
    lines = [json.dumps(VALID_LOGURU[1])] + [json.dumps(d) for d in documents]
    _ingest_and_check(file_store, ("\n".join(lines) + "\n").encode())


VALID_SCENARIO = {
    "name": "hostile",
    "seed": 7,
    "duration": "2m",
    "fleet": [{"host": "node-a", "gpus": 1, "model": "L4"}],
    "workload": {"rate": "1/s", "input_size": {512: 0.8, 1280: 0.2}, "model": {"ddcolor_paper_tiny": 1}},
    "faults": [{"kind": "thermal", "gpu": "node-a/0", "start": "30s", "end": "1m", "severity": 0.3}],
    "truth": {"cause": "thermal_throttling", "drivers": {"gpu.uuid": "node-a/0"}},
}


@SETTINGS
@given(document=mangled_json(VALID_SCENARIO))
def test_mangled_scenarios_are_parsed_or_refused_with_a_clear_error(document: Any) -> None:
    try:
        parse_scenario(document, "hostile.yaml", stem="hostile")
    except GpuRcaError as exc:
        assert str(exc).strip()


@SETTINGS
@given(text=st.text(max_size=200) | st.sampled_from(["{", "a: [", "!!python/object:os.system {}", "- - -", "&a [*a]"]))
def test_scenario_files_that_are_not_yaml_scenarios_are_refused_with_a_clear_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hostile.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_scenario(path)
        except GpuRcaError as exc:
            assert "hostile.yaml" in str(exc)
        else:
            pytest.fail(f"accepted a scenario from {text!r}")


def test_the_valid_scenario_used_above_parses() -> None:
    assert (
        parse_scenario(yaml.safe_load(yaml.safe_dump(VALID_SCENARIO)), "hostile.yaml", stem="hostile").name == "hostile"
    )


# --- what the properties above found (kept as plain examples, so they stay covered at 40 examples) --------

_LOGURU_BASE = VALID_LOGURU[0]


@pytest.mark.parametrize(
    ("content", "status"),
    [
        # an XID no driver prints, past the store's INTEGER column: the line is skipped, the file still read
        (KERNEL_LOG.replace("): 79,", "): 99999999999999999999,"), "ingested:0"),
        (KERNEL_LOG.replace("pid=1234", "pid=99999999999999999999999"), "ingested:1"),  # stored without its pid
        # loguru lines whose record is the wrong shape: the file fails with a reason, nothing stored
        (json.dumps({**_LOGURU_BASE, "record": {**_LOGURU_BASE["record"], "file": 1}}), "failed"),
        (json.dumps({**_LOGURU_BASE, "record": {**_LOGURU_BASE["record"], "extra": [1]}}), "failed"),
        (json.dumps({**_LOGURU_BASE, "record": {**_LOGURU_BASE["record"], "time": {"timestamp": 1e300}}}), "failed"),
        # a Prometheus series with a list as a label value, and one with an infinite timestamp
        (
            json.dumps(
                {
                    "status": "success",
                    "data": {
                        "resultType": "matrix",
                        "result": [
                            {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "UUID": ["GPU-x"]}, "values": [[1, "2"]]}
                        ],
                    },
                }
            ),
            "failed",
        ),
        (
            json.dumps(
                {
                    "status": "success",
                    "data": {
                        "resultType": "matrix",
                        "result": [
                            {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "UUID": "GPU-x"}, "values": [[1e309, "2"]]}
                        ],
                    },
                }
            ),
            "failed",
        ),
    ],
)
def test_inputs_that_once_crashed_ingest_are_read_or_refused(file_store, content: str, status: str) -> None:
    store, folder = file_store
    path = folder / "regression"
    path.write_text(content + "\n", encoding="utf-8")
    before = row_counts(store.connection)
    report = ingest_file(store, path)
    if status == "failed":
        assert report.status == "failed" and report.reason, report
        assert row_counts(store.connection) == before
    else:
        stored = int(status.split(":")[1])
        assert (report.status, report.stored) == ("ingested", stored), report
        assert report.skipped == ({} if stored else {"XID code out of range": 1})
