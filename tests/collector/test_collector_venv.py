"""The wheel in a fresh virtual environment with only the collector extra, beside a user's own modules
named like the design's folders (`schemas.py`, `collector.py`, a `lab/` package): both import, an inference
span runs, `gpu-rca exporter --help` works, and neither DuckDB nor grpcio is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The fresh venv must see only what was installed into it: a PYTHONPATH naming a checkout would show it the
#: checkout's gpu_rca (and its build metadata, which pip then takes for an installed gpu-rca).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

#: The user's own modules, in the working directory of their inference service.
USER_FILES = {
    "schemas.py": "WHO = 'the user schemas.py'\n",
    "collector.py": "WHO = 'the user collector.py'\n",
    "lab/__init__.py": "WHO = 'the user lab package'\n",
}

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys, sysconfig
    from pathlib import Path
    import collector as user_collector, lab as user_lab, schemas as user_schemas
    from gpu_rca import collector
    from gpu_rca.schemas import attributes
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
    site = Path(sysconfig.get_paths()["purelib"])
    print(json.dumps({
        "user": [user_collector.WHO, user_lab.WHO, user_schemas.WHO],
        "source": span.attributes[attributes.TELEMETRY_SOURCE],
        "duckdb": importlib.util.find_spec("duckdb") is not None,
        "grpc": importlib.util.find_spec("grpc") is not None,
        "heavy": [m for m in ("duckdb", "pandas", "numpy", "gpu_rca.correlate", "gpu_rca.lab") if m in sys.modules],
        "clashing": sorted(n for n in ("collector", "correlate", "lab", "schemas", "scenarios") if (site / n).exists()),
    }))
    """
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("gpu_rca-*.whl")
    return path


def test_wheel_installs_one_top_level_package(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"gpu_rca"}
    assert "gpu_rca/scenarios/large-uploads-10am.yaml" in names
    assert "gpu_rca/correlate/digest/templates/digest.html.j2" in names


@pytest.mark.slow
def test_collector_extra_alone_beside_user_modules(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"gpu-rca[collector] @ {wheel.as_uri()}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=CLEAN_ENV,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    service = tmp_path / "service"
    for name, text in USER_FILES.items():
        (service / name).parent.mkdir(parents=True, exist_ok=True)
        (service / name).write_text(text)
    run = subprocess.run(
        [str(python), "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=service, env=CLEAN_ENV
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {
        "user": ["the user collector.py", "the user lab package", "the user schemas.py"],
        "source": "none",
        "duckdb": False,
        "grpc": False,
        "heavy": [],
        "clashing": [],
    }
    cli = subprocess.run(
        [str(env_dir / "bin" / "gpu-rca"), "exporter", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=service,
        env=CLEAN_ENV,
    )
    assert cli.returncode == 0 and "--port" in cli.stdout, cli.stderr
    assert sys.executable != str(python)
