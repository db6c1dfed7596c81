"""`gpu-rca demo`: simulate an incident in the lab, ingest it, rank the causes and write the digest.

One of the two places where `correlate` and `lab` meet. No GPU, no server, no network.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gpu_rca.schemas.errors import InputError

if TYPE_CHECKING:
    from gpu_rca.correlate.digest import Digest

DEFAULT_SCENARIO = "large-uploads-10am"
DEFAULT_OUT = "gpu-rca-demo"
#: The stages the progress bar walks through; simulating is most of the time.
_STAGES = (
    ("simulating", 6),
    ("writing the lab's files", 2),
    ("ingesting", 3),
    ("ranking", 1),
    ("writing the digest", 1),
)


@click.command("demo")
@click.option(
    "--scenario",
    default=DEFAULT_SCENARIO,
    show_default=True,
    metavar="NAME|FILE",
    help="A shipped scenario name or a scenario YAML file.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(DEFAULT_OUT),
    show_default=True,
    help="Folder for analysis.json, digest.md, digest.html, digest.json, plots/, the store and the lab's files.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as one JSON document on stdout.")
@click.option("--seed", type=int, default=None, help="Run the scenario with this seed instead of its own.")
@click.option(
    "--grafana-url",
    default=None,
    metavar="URL",
    help="Link example traces to this Grafana (else $GPU_RCA_GRAFANA_URL).",
)
def demo(scenario: str, out_dir: Path, as_json: bool, seed: int | None, grafana_url: str | None) -> None:
    """Simulate SCENARIO on a virtual GPU fleet, then ingest, rank and write the failure digest."""
    started = time.perf_counter()
    result = run_demo(
        scenario, out_dir, seed=seed, grafana_url=grafana_url, progress=sys.stderr.isatty() and not as_json
    )
    elapsed_s = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps(result.analysis, allow_nan=False))
        _print_causes(result, elapsed_s, err=True)
    else:
        _print_causes(result, elapsed_s, err=False)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What a demo run produced: the analysis, the digest, the lab's truth and where the files are."""

    scenario: str
    seed: int
    analysis: dict[str, Any]
    digest: Digest
    truth: dict[str, Any]
    out_dir: Path
    files: tuple[Path, ...]


def run_demo(
    scenario_ref: str,
    out_dir: Path,
    *,
    seed: int | None = None,
    grafana_url: str | None = None,
    progress: bool = False,
) -> DemoResult:
    """Simulate a scenario (name or file), write the lab's files, ingest them, rank, and write the digest files."""
    from tqdm import tqdm

    from gpu_rca.correlate.digest import archive, pipeline
    from gpu_rca.correlate.digest.files import write_digest_files
    from gpu_rca.correlate.digest.model import Trigger
    from gpu_rca.correlate.ingest import ingest_paths
    from gpu_rca.correlate.store import Store
    from gpu_rca.lab.engine import run_scenario
    from gpu_rca.lab.outputs import write_run
    from gpu_rca.lab.scenario import load_scenario

    scenario = load_scenario(scenario_ref)
    if seed is not None:
        scenario = dataclasses.replace(scenario, seed=seed)
    out_dir = Path(out_dir)
    lab_dir = out_dir / "lab"
    db_path = out_dir / "gpu-rca.duckdb"
    _prepare(out_dir, db_path)
    bar = tqdm(
        total=sum(w for _, w in _STAGES),
        file=sys.stderr,
        disable=not progress,
        leave=False,
        bar_format="{desc:<26}{bar}| {elapsed}",
    )
    stages = iter(_STAGES)

    def stage() -> int:
        name, weight = next(stages)
        bar.set_description_str(name)
        return weight

    try:
        weight = stage()
        shown = 0.0

        def simulated(done_ns: int, total_ns: int) -> None:
            nonlocal shown
            bar.update(weight * done_ns / total_ns - shown)
            shown = weight * done_ns / total_ns

        with _quiet_collector():
            run = run_scenario(scenario, progress=simulated)
        bar.update(weight - shown)
        weight = stage()
        write_run(run, lab_dir)
        bar.update(weight)
        weight = stage()
        settings = pipeline.DigestSettings.from_env(grafana_url=grafana_url)
        with Store.open(db_path) as store:
            summary = ingest_paths(store, [lab_dir], progress=False)
            if summary.failed:
                failed = summary.failed[0]
                raise InputError(f"the lab wrote a file the ingest could not read: {failed.path}: {failed.reason}")
            bar.update(weight)
            weight = stage()
            analysis = pipeline.analyze_window(store.connection, since_ns=None, until_ns=None)
            bar.update(weight)
            weight = stage()
            made = pipeline.make_digest(
                store.connection,
                analysis=analysis,
                settings=settings,
                trigger=Trigger("demo", f"lab scenario {scenario.name}, seed {scenario.seed}"),
            )
            with store.transaction():
                archive.save_digest(store.connection, made)
        files = [_write(out_dir / "analysis.json", json.dumps(analysis, indent=2, allow_nan=False) + "\n")]
        files += write_digest_files(made, out_dir)
        bar.update(weight)
    finally:
        bar.close()
    return DemoResult(scenario.name, scenario.seed, analysis, made, run.truth, out_dir, tuple(files))


@contextmanager
def _quiet_collector() -> Iterator[None]:
    """The simulated GPUs answer NotSupported for MIG and the like; the collector's notes on that are noise here."""
    collector_log = logging.getLogger("gpu_rca.collector")
    level = collector_log.level
    collector_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        collector_log.setLevel(level)


def _prepare(out_dir: Path, db_path: Path) -> None:
    """Create the folder; a previous demo's store and plots are replaced, never merged with this run."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in (db_path, db_path.with_name(db_path.name + ".wal")):
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(f"cannot prepare {out_dir}: {exc.strerror or exc}") from exc


def _write(path: Path, data: str | bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def _print_causes(result: DemoResult, elapsed_s: float, *, err: bool) -> None:
    analysis = result.analysis
    echo = lambda text="": click.echo(text, err=err)  # noqa: E731 - one sink for the whole report
    echo(
        f"Scenario {result.scenario} (seed {result.seed}): {analysis['spans']['failed']} of "
        f"{analysis['spans']['total']} inference requests failed, "
        f"{analysis['window']['start']} – {analysis['window']['end']}"
    )
    echo(result.digest.headline.text)
    echo()
    if not analysis["causes"]:
        echo("No cause ranked.")
    for i, cause in enumerate(analysis["causes"], 1):
        drivers = ", ".join(f"{d['attribute']}={d['value']}" for d in cause["drivers"][:3]) or "–"
        echo(
            f"{i:>2}. {cause['cause']:<28} score {cause['score']:.2f}  {cause['confidence']:<6}  "
            f"{cause['failed_spans']:>5} failed  drivers: {drivers}"
        )
    truth = result.truth or {}
    if truth.get("cause"):
        drivers = ", ".join(f"{k}={v}" for k, v in (truth.get("drivers") or {}).items())
        echo(f"\nThe lab injected: {truth['cause']}" + (f" ({drivers})" if drivers else ""))
    if result.digest.causes:
        echo(f"\nAction: {result.digest.causes[0].action}")
    echo(
        f"\nWrote {result.out_dir / 'digest.html'}, digest.md, digest.json, analysis.json, plots/ and the store "
        f"gpu-rca.duckdb in {elapsed_s:.1f} s."
    )
