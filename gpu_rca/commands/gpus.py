"""`gpu-rca gpus`: each GPU's record across incidents, worst first, with advice (docs/gpus.md)."""

from __future__ import annotations

import sys

import click

from gpu_rca.commands.analyze import check_source, dump, fetch_json


@click.command()
@click.option(
    "--db", "db_path", metavar="PATH", default=None, help="Store to read (default: $GPU_RCA_DB, else ./gpu-rca.duckdb)."
)
@click.option("--server", metavar="URL", default=None, help="Ask a running `gpu-rca serve` instead of opening --db.")
@click.option(
    "--since",
    metavar="T",
    default=None,
    help="Period start: RFC 3339, epoch seconds, or a duration back (default 30d).",
)
@click.option("--until", metavar="T", default=None, help="Period end (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def gpus(db_path: str | None, server: str | None, since: str | None, until: str | None, as_json: bool) -> None:
    """Each GPU's incidents, XID, ECC and thermal history and failure rate, worst first, with advice."""
    check_source(db_path, server)
    from gpu_rca.correlate.history.api import period

    period(since, until)  # usage errors before anything is opened or fetched
    if server is not None:
        result = fetch_json(server, "/gpus", {"since": since, "until": until})
    else:
        from gpu_rca.correlate.history.api import gpus as run

        result = run(db_path, since, until)
    if as_json:
        dump(result)
        return
    from gpu_rca.gpus_view import print_gpus

    print_gpus(result, sys.stdout)
