"""`gpu-rca lab run` and `gpu-rca lab generate`: simulated incidents with known truth (docs/contracts.md §3)."""

from __future__ import annotations

from pathlib import Path

import click

from gpu_rca.schemas import attributes as A

#: `lab run --instrumentation`: who traces the service, and the perturbation that writes its files.
INSTRUMENTATIONS = {"gpu-rca": "", "otel-http": "unstamped", "otel-http-hosts": "unstamped_hosts"}


@click.group("lab")
def lab() -> None:
    """Simulated GPU fleet, DDColor workload and fault injection."""


@lab.command("list")
def list_scenarios() -> None:
    """List the shipped scenarios, one per line: name and what it simulates."""
    from gpu_rca.lab.scenario import describe_scenario, shipped_scenarios

    names = shipped_scenarios()
    width = max((len(n) for n in names), default=0)
    for name in names:
        click.echo(f"{name:<{width}}  {describe_scenario(name)}")


@lab.command("run")
@click.argument("scenario")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for traces, logs, metrics, kernel log and truth.json.",
)
@click.option(
    "--sample-hz",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.1, 10.0),
    help="Collector sampling rate in simulated time.",
)
@click.option(
    "--instrumentation",
    type=click.Choice(INSTRUMENTATIONS),
    default="gpu-rca",
    show_default=True,
    help="Who traces the service: gpu-rca's collector; the OTel SDK's HTTP server spans only, on Kubernetes "
    "with dcgm-exporter's pod labels (otel-http); the same without Kubernetes (otel-http-hosts).",
)
def run(scenario: str, out_dir: Path, sample_hz: float, instrumentation: str) -> None:
    """Simulate SCENARIO (a shipped name or a YAML file) and write the files of docs/contracts.md §3 into --out."""
    from gpu_rca.lab.engine import run_scenario
    from gpu_rca.lab.outputs import write_run
    from gpu_rca.lab.scenario import load_scenario

    result = run_scenario(load_scenario(scenario), sample_hz=sample_hz)
    paths = write_run(result, out_dir)
    if instrumentation != "gpu-rca":
        _rewrite(out_dir, INSTRUMENTATIONS[instrumentation], result.scenario.name)
    failures = result.failures()
    inference = [s for s in result.spans if s.attributes.get(A.TELEMETRY_SOURCE)]
    summary = ", ".join(f"{kind}: {n}" for kind, n in sorted(failures.items())) or "none"
    click.echo(
        f"{result.scenario.name}: {len(inference)} inference spans, {sum(failures.values())} failed ({summary})",
        err=True,
    )
    click.echo(f"wrote {', '.join(p.name for p in paths)} to {out_dir}", err=True)
    if instrumentation != "gpu-rca":
        from gpu_rca.bench.perturb import UNSTAMPED_UNIT

        click.echo(f"no span carries gpu.* stamps: ingest with --unit '{UNSTAMPED_UNIT}'", err=True)


def _rewrite(out_dir: Path, perturbation: str, name: str) -> None:
    """The written files as another instrumentation writes them (gpu_rca.bench.perturb)."""
    from gpu_rca.bench.perturb import perturbed

    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(out_dir.iterdir()) if p.is_file()}
    for file_name, text in perturbed(files, perturbation, name).items():
        (out_dir / file_name).write_text(text, encoding="utf-8")


@lab.command("generate")
@click.option("--seed", required=True, type=int, help="Seed of the draw: same seed, same scenarios.")
@click.option("--count", required=True, type=click.IntRange(1, 10000), help="How many scenarios.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the scenario YAML files (each with its truth).",
)
def generate(seed: int, count: int, out_dir: Path) -> None:
    """Draw COUNT random scenarios from the documented ranges (lab/generate.py) and write them as YAML."""
    from gpu_rca.lab.generate import write_generated

    paths = write_generated(seed, count, out_dir)
    click.echo(f"wrote {len(paths)} scenarios to {out_dir}", err=True)
