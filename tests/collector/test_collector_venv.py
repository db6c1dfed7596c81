"""A fresh virtual environment with only the collector extra: it imports `collector`, runs an inference
span, serves `gpu-rca exporter --help`, and has no DuckDB."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import collector
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    c = collector.Collector(None, tracer_provider=provider)
    with c.inference_span("ddcolor.inference", gpu=0, attributes={"ddcolor.input_size": 512}):
        pass
    (span,) = exporter.get_finished_spans()
    print(json.dumps({
        "source": span.attributes["gpu.telemetry.source"],
        "duckdb": importlib.util.find_spec("duckdb") is not None,
        "heavy": [m for m in ("duckdb", "pandas", "numpy", "correlate", "lab") if m in sys.modules],
    }))
    """
)


@pytest.mark.slow
def test_collector_extra_alone_in_a_fresh_venv(tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{REPO}[collector]"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(python), "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == '{"source": "none", "duckdb": false, "heavy": []}'
    cli = subprocess.run([str(env_dir / "bin" / "gpu-rca"), "exporter", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert cli.returncode == 0 and "--port" in cli.stdout, cli.stderr
    assert sys.executable != str(python)
