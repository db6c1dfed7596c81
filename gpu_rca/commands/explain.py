"""`gpu-rca explain TRACE_ID`: one request's story — stamps, its GPU's metrics, logs, kernel events, cause."""

from __future__ import annotations

import sys

import click

from gpu_rca.commands.analyze import check_source, dump, fetch_json


@click.command()
@click.argument("trace_id")
@click.option(
    "--db", "db_path", metavar="PATH", default=None, help="Store to read (default: $GPU_RCA_DB, else ./gpu-rca.duckdb)."
)
@click.option("--server", metavar="URL", default=None, help="Ask a running `gpu-rca serve` instead of opening --db.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
def explain(trace_id: str, db_path: str | None, server: str | None, as_json: bool) -> None:
    """Tell the story of one inference request, and its cause."""
    check_source(db_path, server)
    if server is not None:
        result = fetch_json(server, f"/api/explain/{trace_id.strip().lower()}")
    else:
        from gpu_rca.correlate.ranking.api import explain as run

        result = run(db_path, trace_id)
    from gpu_rca.schemas.visible_text import visible

    for warning in result["warnings"]:
        click.echo(f"warning: {visible(warning)}", err=True)
    if as_json:
        dump(result)
        return
    from gpu_rca.ranking_view import print_story

    print_story(result, sys.stdout)
