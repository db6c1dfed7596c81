"""configure() as an application uses it, each in its own process (OTel providers are process-global):
OTLP/HTTP to a local receiver, an existing SDK provider, a dead endpoint, gRPC, and no configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpu_rca.schemas import attributes as A
from tests.support.collector import Receiver, free_port, span_attributes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def run_app(code: str, **env: str) -> dict:
    """Run `code` as an application would (a fresh interpreter); it prints one JSON line last."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CUDA_VISIBLE"))}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


APP = """
    import json, time
    from loguru import logger
    from gpu_rca import collector, lab

    nvml = lab.simulated_nvml([{"host": "node-a", "gpus": 1, "model": "L4"}])
    nvml.devices[0].load(0.9)
    collector.configure(service_name="ddcolor", nvml=nvml, sample_hz=50, service_version="1.2.3", export_logs=True)

    @collector.inference_span("ddcolor.inference", gpu=0, attributes={"ddcolor.input_size": 512})
    def colorize(x):
        time.sleep(0.3)
        logger.info("colorized {}", x)
        return x * 2

    result = colorize(21)
    try:
        with collector.inference_span("ddcolor.inference", gpu=0) as span:
            span.gpu_work_started()
            raise RuntimeError("CUDA out of memory. Tried to allocate 22.00 MiB. GPU 0 has a total capacity of "
                               "23.65 GiB of which 11.06 MiB is free.")
    except RuntimeError as exc:
        error = str(exc)
    collector.shutdown()
    collector.shutdown()
    print(json.dumps({"result": result, "error": error}))
"""


def test_otlp_http_export_of_stamped_spans_and_joinable_logs(receiver: Receiver):
    out = run_app(APP, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, K8S_NODE_NAME="node-7")
    assert out["result"] == 42 and out["error"].startswith("CUDA out of memory")
    spans = receiver.spans()
    assert len(spans) == 2
    (resource, ok), (_, failed) = spans
    assert resource[A.SERVICE_NAME] == "ddcolor" and resource[A.SERVICE_VERSION] == "1.2.3"
    assert resource[A.K8S_NODE_NAME] == "node-7" and resource[A.HOST_NAME]
    a = span_attributes(ok)
    assert a[A.TELEMETRY_SOURCE] == A.SOURCE_SIMULATED and a[A.DDCOLOR_INPUT_SIZE] == 512
    assert a[A.TELEMETRY_SAMPLES] >= 10 and a[A.TELEMETRY_STALE] is False
    assert a[A.GPU_UUID].startswith("GPU-") and a[A.UTILIZATION_MAX] > 0
    f = span_attributes(failed)
    assert f[A.ERROR_TYPE] == A.ERROR_CUDA_OOM and failed.status.code == 2 and A.QUEUE_MS in f
    logs = [lr for req in receiver.logs for rl in req.resource_logs for sl in rl.scope_logs for lr in sl.log_records]
    (record,) = [lr for lr in logs if lr.body.string_value == "colorized 21"]
    assert record.trace_id == ok.trace_id and record.span_id == ok.span_id


def test_adds_to_an_existing_sdk_provider_instead_of_replacing_it():
    out = run_app(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from gpu_rca import collector, lab

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        c = collector.configure(service_name="app", nvml=lab.simulated_nvml([{"host": "h", "gpus": 1, "model": "T4"}]))
        with collector.inference_span("inf", gpu=0):
            pass
        with trace.get_tracer("auto").start_as_current_span("http", attributes={"gpu.index": 0}):
            pass
        collector.shutdown()
        spans = exporter.get_finished_spans()
        print(json.dumps({"same": trace.get_tracer_provider() is provider,
                          "sources": [s.attributes.get("gpu.telemetry.source") for s in spans]}))
        """
    )
    assert out == {"same": True, "sources": ["simulated", "simulated"]}


def test_dead_otlp_endpoint_leaves_the_call_unchanged_and_counts_the_drop():
    out = run_app(
        """
        import json, time
        from gpu_rca import collector, lab

        c = collector.configure(service_name="app", nvml=lab.simulated_nvml([{"host": "h", "gpus": 1, "model": "L4"}]))

        @collector.inference_span("inf", gpu=0)
        def work(x):
            if x < 0:
                raise ValueError("negative input")
            return x + 1

        t0 = time.perf_counter()
        result = work(1)
        try:
            work(-1)
        except ValueError as exc:
            error = repr(exc)
        elapsed = time.perf_counter() - t0
        c.tracer_provider.force_flush(20_000)
        print(json.dumps({"result": result, "error": error, "elapsed": elapsed,
                          "dropped": c.health.total("dropped")}))
        collector.shutdown()
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
    )
    assert out["result"] == 2 and out["error"] == "ValueError('negative input')"
    assert out["elapsed"] < 0.5  # export happens off the request path
    assert out["dropped"] == 2


def test_grpc_protocol_selects_the_grpc_exporter():
    out = run_app(
        """
        import json
        from gpu_rca.collector._setup import otlp_span_exporter, otlp_log_exporter
        print(json.dumps([type(otlp_span_exporter()).__module__, type(otlp_log_exporter()).__module__]))
        """,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    assert out == [
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
    ]


def test_unconfigured_spans_work_with_source_none():
    out = run_app(
        """
        import asyncio, json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from gpu_rca import collector

        @collector.inference_span("inf", gpu=0)
        async def work():
            return "ok"

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        result = asyncio.run(work())
        print(json.dumps({"result": result,
                          "sources": [s.attributes["gpu.telemetry.source"] for s in exporter.get_finished_spans()]}))
        """
    )
    assert out == {"result": "ok", "sources": ["none"]}


def test_configure_without_nvml_library_runs_with_source_none(receiver: Receiver):
    out = run_app(
        """
        import json, collector
        c = collector.configure(service_name="app")  # nvml=None: pynvml + nvmlInit, no driver here
        with collector.inference_span("inf", gpu=0):
            pass
        collector.shutdown()
        print(json.dumps({"errors": c.health.total("errors")}))
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
    )
    try:
        import pynvml

        pynvml.nvmlInit()
        pytest.skip("an NVIDIA driver is present")
    except pynvml.NVMLError_LibraryNotFound:
        pass
    assert out == {"errors": 1}
    ((_, span),) = receiver.spans()
    assert span_attributes(span)[A.TELEMETRY_SOURCE] == A.SOURCE_NONE


def test_configure_again_replaces_the_default_collector(receiver: Receiver):
    out = run_app(
        """
        import json
        from gpu_rca import collector, lab
        first = collector.configure(service_name="app", nvml=lab.simulated_nvml([{"host": "h", "gpus": 1, "model": "T4"}]))
        second = collector.configure(service_name="app", nvml=lab.simulated_nvml([{"host": "h", "gpus": 2, "model": "L4"}]))
        with collector.inference_span("inf", gpu=1):
            pass
        collector.shutdown()
        collector.shutdown()
        print(json.dumps({"first_enabled": first.processor.enabled, "second_is_default": second is not first}))
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
    )
    assert out == {"first_enabled": False, "second_is_default": True}
    ((_, span),) = receiver.spans()
    assert span_attributes(span)[A.GPU_INDEX] == 1 and span_attributes(span)[A.GPU_NAME] == "NVIDIA L4"
