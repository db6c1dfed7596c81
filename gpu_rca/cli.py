"""The `gpu-rca` dispatcher (docs/contracts.md §3).

Each verb lives in its own module under `gpu_rca.commands` and is imported only when it runs, so
`gpu-rca exporter` works with the collector's dependencies alone and `--help` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from gpu_rca.schemas.errors import GpuRcaError, StoreLockedError

#: verb -> "module:attribute" of its click command. The order is the order `--help` lists them.
VERBS: dict[str, str] = {
    "demo": "gpu_rca.commands.demo:demo",
    "ingest": "gpu_rca.commands.ingest:ingest",
    "analyze": "gpu_rca.commands.analyze:analyze",
    "explain": "gpu_rca.commands.explain:explain",
    "digest": "gpu_rca.commands.digest:digest",
    "gpus": "gpu_rca.commands.gpus:gpus",
    "serve": "gpu_rca.commands.serve:serve",
    "exporter": "gpu_rca.commands.exporter:exporter",
    "lab": "gpu_rca.commands.lab:lab",
    "bench": "gpu_rca.commands.bench:bench",
}

#: extra (pyproject's [project.optional-dependencies]) -> the modules it installs that the verbs import.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "lab": ("yaml",),
    "correlate": (
        "duckdb",
        "pyarrow",
        "orjson",
        "rich",
        "starlette",
        "uvicorn",
        "jinja2",
        "matplotlib",
        "zstandard",
        "tqdm",
        "yaml",
        "prometheus_api_client",
    ),
}

#: verb -> the extras it needs beyond the base install (`exporter` needs none: the collector's own).
VERB_EXTRAS: dict[str, tuple[str, ...]] = {
    "demo": ("lab", "correlate"),
    "ingest": ("correlate",),
    "analyze": ("correlate",),
    "explain": ("correlate",),
    "digest": ("correlate",),
    "gpus": ("correlate",),
    "serve": ("correlate",),
    "lab": ("lab",),
    "bench": ("lab", "correlate"),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extras(verb: str) -> tuple[list[str], list[str]]:
    """The extras `verb` needs that are not installed, and the modules found missing."""
    extras: list[str] = []
    modules: list[str] = []
    for extra in VERB_EXTRAS.get(verb, ()):
        absent = [m for m in EXTRA_MODULES[extra] if not _importable(m)]
        if absent:
            extras.append(extra)
            modules.extend(m for m in absent if m not in modules)
    return extras, modules


class MissingExtraError(GpuRcaError):
    """A verb's optional dependencies are not installed (exit code 1: the install, not the command line)."""


def _check_extras(verb: str) -> None:
    extras, modules = missing_extras(verb)
    if not extras:
        return
    noun = "extra" if len(extras) == 1 else "extras"
    raise MissingExtraError(
        f"gpu-rca {verb} needs the {' and '.join(extras)} {noun} ({', '.join(modules)} not installed): "
        f"pip install 'gpu-rca[{','.join(extras)}]'"
    )


class StdoutClosed(Exception):
    """stdout's reader went away; not an OSError, so click's own EPIPE handling (exit 1) leaves it to `main`."""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use.

    A verb whose extra is missing fails before its module is imported, with one line naming the extra.
    """

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

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in self._lazy:
            _check_extras(args[0])
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise StdoutClosed() from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        shown = [(name, command) for name, command in commands if command is not None and not command.hidden]
        width = max((len(name) for name, _ in shown), default=0)
        rows = []
        for name, command in shown:
            extras = VERB_EXTRAS.get(name, ())
            suffix = f" [{','.join(extras)}]" if extras else ""
            limit = formatter.width - 6 - width - len(suffix)
            rows.append((name, command.get_short_help_str(limit=limit) + suffix))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
            formatter.write_paragraph()
            formatter.write_text(
                "A verb marked [extra] needs that extra installed: pip install 'gpu-rca[all]' brings them all."
            )


@click.group(cls=LazyGroup, lazy=VERBS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpu-rca")
def cli() -> None:
    """Why did these GPU inference requests fail? Rank root causes with evidence."""


#: What to do about a store another process holds, per verb (the readers can go through that process).
LOCK_ADVICE: dict[str, str] = {
    "analyze": "use --server URL to query it through that process",
    "explain": "use --server URL to query it through that process",
    "digest": "use --server URL to make the digest through that process",
    "ingest": "stop that process first, or ingest into another --db (a running serve takes telemetry over OTLP/HTTP)",
    "serve": "stop the other process, or serve another --db",
}


def _verb(argv: list[str] | None) -> str | None:
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if not a.startswith("-")), None)


def _quiet_stdout() -> None:
    """The reader of stdout went away (`gpu-rca analyze | head -1`): send what is left to /dev/null, so the
    interpreter's last flush raises nothing either. Exit 0: the reader had what it wanted."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: project errors become one `Error: …` line and the contract's exit codes."""
    try:
        cli.main(args=argv, prog_name="gpu-rca", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except (BrokenPipeError, StdoutClosed):
        _quiet_stdout()
        sys.exit(0)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        # Usage errors keep click's own message (with the usage line) and exit 2.
        exc.show()
        sys.exit(exc.exit_code)
    except StoreLockedError as exc:
        advice = LOCK_ADVICE.get(_verb(argv) or "")
        click.echo(f"Error: {exc}" + (f"; {advice}" if advice else ""), err=True)
        sys.exit(exc.exit_code)
    except GpuRcaError as exc:
        click.echo(f"Error: {_shown(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("GPU_RCA_DEBUG"):
            raise
        click.echo(f"Error: {type(exc).__name__}: {_shown(exc)} (set GPU_RCA_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
    sys.exit(0)


def _shown(exc: BaseException) -> str:
    """An error's message on one line, with any text it quotes from traffic or files shown, not interpreted."""
    from gpu_rca.schemas.visible_text import visible

    return visible(exc, layout=False)
