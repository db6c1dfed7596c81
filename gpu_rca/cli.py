"""The `gpu-rca` dispatcher (Contract 3).

Each verb lives in its own module under `gpu_rca.commands` and is imported only when it runs, so
`gpu-rca exporter` works with the collector's dependencies alone and `--help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from gpu_rca.schemas.errors import GpuRcaError

#: verb -> "module:attribute" of its click command. The order is the order `--help` lists them.
VERBS: dict[str, str] = {
    "demo": "gpu_rca.commands.demo:demo",
    "ingest": "gpu_rca.commands.ingest:ingest",
    "analyze": "gpu_rca.commands.analyze:analyze",
    "explain": "gpu_rca.commands.explain:explain",
    "digest": "gpu_rca.commands.digest:digest",
    "serve": "gpu_rca.commands.serve:serve",
    "exporter": "gpu_rca.commands.exporter:exporter",
    "lab": "gpu_rca.commands.lab:lab",
    "bench": "gpu_rca.commands.bench:bench",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self._lazy) + sorted(super().list_commands(ctx))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy:
            module_name, _, attr = self._lazy[name].partition(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=VERBS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpu-rca")
def cli() -> None:
    """Why did these GPU inference requests fail? Rank root causes with evidence."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: project errors become one `Error: …` line and the contract's exit codes."""
    try:
        cli.main(args=argv, prog_name="gpu-rca", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        # Usage errors keep click's own message (with the usage line) and exit 2.
        exc.show()
        sys.exit(exc.exit_code)
    except GpuRcaError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("GPU_RCA_DEBUG"):
            raise
        click.echo(f"Error: {type(exc).__name__}: {exc} (set GPU_RCA_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
    sys.exit(0)
