"""The collector -> gpu-rca path of the stack, from the files the stack writes: the token the compose `init`
step writes, the Authorization header the OTel Collector builds from it, and a real `gpu-rca serve` that
reads the same file and must accept that header.

The init step's shell script runs here as compose would run it (`$$` unescaped, the container paths of its
volumes mapped into a temporary folder); the header is built as the collector's `${file:PATH}` substitution
builds it, by pasting the file's bytes into the string.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_rca.correlate.server.process import ServeProcess
from gpu_rca.schemas import attributes as a
from tests.support import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
COLLECTOR = yaml.safe_load((REPO / "otel-collector.yaml").read_text())
#: RFC 9110 §5.5: field-value = *field-content, field-content = field-vchar [ 1*( SP / HTAB / field-vchar )
#: field-vchar ], field-vchar = VCHAR / obs-text. No CR, LF or other control bytes; no edge whitespace.
_VCHAR = rb"\x21-\x7e\x80-\xff"
FIELD_VALUE = re.compile(rb"(?:[%s](?:[\x20\x09%s]*[%s])?)?" % (_VCHAR, _VCHAR, _VCHAR))
_FILE_REF = re.compile(r"\$\{file:([^}]+)\}")


def _volume_targets(service: str) -> dict[str, str]:
    """Container path -> volume name, for a service's named volumes."""
    targets = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        targets[target] = source
    return targets


def _run_init(volumes: Path, env_token: str) -> subprocess.CompletedProcess[str]:
    """The init service's command, with compose's `$$` unescaped and its volume paths under `volumes`."""
    init = COMPOSE["services"]["init"]
    shell, flags, script = init["command"]
    assert re.search(r"(?<!\$)\$(?!\$)", script.replace("$$", "")) is None, "an unescaped $ compose would expand"
    script = script.replace("$$", "$")
    for target, volume in sorted(_volume_targets("init").items(), key=lambda item: -len(item[0])):
        (volumes / volume).mkdir(exist_ok=True)
        script = script.replace(target, str(volumes / volume))
    assert "GPU_RCA_TOKEN" in init["environment"]
    env = {"PATH": os.environ["PATH"], "GPU_RCA_TOKEN": env_token}
    return subprocess.run([shell, flags, script], env=env, capture_output=True, text=True, timeout=30)


def _host_path(volumes: Path, service: str, container_path: str) -> Path:
    """Where `service`'s `container_path` lies on this machine, through the volume it is mounted from."""
    for target, volume in _volume_targets(service).items():
        if Path(container_path).is_relative_to(target):
            return volumes / volume / Path(container_path).relative_to(target)
    raise AssertionError(f"{service} mounts no volume holding {container_path}")


def _collector_authorization(volumes: Path) -> bytes:
    """The Authorization value the collector sends: each ${file:PATH} replaced by that file's bytes."""
    template = COLLECTOR["exporters"]["otlp_http/gpu-rca"]["headers"]["Authorization"]
    parts = _FILE_REF.split(template)
    value = b""
    for index, part in enumerate(parts):
        # split() alternates literal text and captured paths.
        value += part.encode() if index % 2 == 0 else _host_path(volumes, "otel-collector", part).read_bytes()
    return value


def _serve_token_file(volumes: Path) -> Path:
    (option,) = [arg for arg in COMPOSE["services"]["gpu-rca"]["command"] if arg.startswith("--token-file=")]
    return _host_path(volumes, "gpu-rca", option.split("=", 1)[1])


def _trace_request() -> bytes:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({a.SERVICE_NAME: "ddcolor", a.HOST_NAME: "node-1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span(
        "ddcolor.inference", attributes={a.TELEMETRY_SOURCE: "none"}
    ):
        pass
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans()).SerializeToString()


def _delivers(volumes: Path, tmp_path: Path, header: bytes) -> httpx.Response:
    with ServeProcess(tmp_path / "store.duckdb", args=["--token-file", str(_serve_token_file(volumes))]) as serve:
        return httpx.post(
            f"{serve.url}/v1/traces",
            content=_trace_request(),
            headers={"Content-Type": "application/x-protobuf", "Authorization": header.decode("latin-1")},
            timeout=30,
        )


@pytest.mark.parametrize(
    ("env_token", "existing"),
    [
        ("", None),  # first start: a token is generated
        ("s3cret.Token_from-env~+/==", None),  # $GPU_RCA_TOKEN given
        ("", b"gpurca_0123abcd\n"),  # a volume an older setup wrote, with its trailing newline
    ],
    ids=["generated", "from-env", "older-file-with-newline"],
)
def test_the_collector_header_from_the_init_token_is_valid_and_serve_accepts_it(
    tmp_path: Path, env_token: str, existing: bytes | None
) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    if existing is not None:
        (volumes / "gpu-rca-secrets").mkdir()
        (volumes / "gpu-rca-secrets" / "gpu-rca-token").write_bytes(existing)
    done = _run_init(volumes, env_token)
    assert done.returncode == 0, done.stderr

    header = _collector_authorization(volumes)
    assert FIELD_VALUE.fullmatch(header), f"not a valid HTTP field value: {header!r}"
    token = header.removeprefix(b"Bearer ")
    assert token != header and token
    if env_token:
        assert token == env_token.encode()
    elif existing is not None:
        assert token == existing.strip()
    # The data folders belong to the uid Tempo and the collector run as.
    for volume in ("tempo-data", "otelcol-queue"):
        assert (volumes / volume).stat().st_uid == 10001

    response = _delivers(volumes, tmp_path, header)
    assert response.status_code == 200, response.text


def test_a_second_start_keeps_the_generated_token(tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    assert _run_init(volumes, "").returncode == 0
    first = _collector_authorization(volumes)
    assert _run_init(volumes, "").returncode == 0
    assert _collector_authorization(volumes) == first


@pytest.mark.parametrize("env_token", ["two words", "line\nbreak", 'quo"te'])
def test_a_token_that_cannot_be_a_bearer_token_stops_the_stack_with_one_line(tmp_path: Path, env_token: str) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    done = _run_init(volumes, env_token)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: the gpu-rca token must be") and done.stderr.count("\n") == 1
    assert not (volumes / "gpu-rca-secrets" / "gpu-rca-token").exists()


def test_a_header_with_the_file_newline_would_not_be_a_valid_field_value() -> None:
    # What the collector built before the init step dropped the newline: Go's client refuses it.
    assert FIELD_VALUE.fullmatch(b"Bearer gpurca_0123abcd") is not None
    assert FIELD_VALUE.fullmatch(b"Bearer gpurca_0123abcd\n") is None
    assert FIELD_VALUE.fullmatch(b"Bearer gpurca_0123abcd\r\n") is None
