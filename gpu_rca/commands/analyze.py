"""`gpu-rca analyze`: rank the root causes of failed inference requests in a window (docs/contracts.md §3)."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from gpu_rca.schemas.errors import GpuRcaError, StoreError, UsageError

#: Where `--server` reads its bearer token (never from the command line; docs/contracts.md §9).
TOKEN_ENV = "GPU_RCA_TOKEN"
SERVER_TIMEOUT_S = 120.0


def fetch_json(server: str, path: str, params: dict[str, str | None] | None = None) -> Any:
    """GET a JSON document from `gpu-rca serve`; its error message becomes a one-line GpuRcaError."""
    base = server.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--server must be an http(s) URL such as http://127.0.0.1:4318, got {server!r}")
    query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
    request = urllib.request.Request(
        f"{base}{path}" + (f"?{query}" if query else ""), headers={"Accept": "application/json"}
    )
    token = os.environ.get(TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token.strip()}")
    try:
        with urllib.request.urlopen(request, timeout=SERVER_TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        message = _server_message(exc)
        error = UsageError(message) if exc.code == 400 else GpuRcaError(message)
        raise error from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"cannot reach gpu-rca serve at {base}: {reason}") from exc
    except ValueError as exc:
        raise StoreError(f"gpu-rca serve at {base} answered something that is not JSON") from exc


def _server_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        message = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return message or f"gpu-rca serve answered HTTP {exc.code}"


def check_source(db_path: str | None, server: str | None) -> None:
    """--db and --server name two different sources; at most one may be given."""
    if db_path is not None and server is not None:
        raise UsageError("give --db PATH or --server URL, not both")


def dump(document: Any) -> None:
    """Exactly one JSON document on stdout (undefined numbers are null, never NaN)."""
    click.echo(json.dumps(document, allow_nan=False, indent=2))


@click.command()
@click.option(
    "--db", "db_path", metavar="PATH", default=None, help="Store to read (default: $GPU_RCA_DB, else ./gpu-rca.duckdb)."
)
@click.option("--server", metavar="URL", default=None, help="Ask a running `gpu-rca serve` instead of opening --db.")
@click.option(
    "--since", metavar="T", default=None, help="Window start: RFC 3339, epoch seconds, or a duration back (2h)."
)
@click.option("--until", metavar="T", default=None, help="Window end (same forms as --since).")
@click.option(
    "--lookback",
    metavar="D",
    default=None,
    help="With no --since: start this long before the first failure (default 15m).",
)
@click.option(
    "--prometheus", metavar="URL", default=None, help="Pull the window's GPU metrics from this Prometheus first."
)
@click.option("--service", default=None, help="Only this service.name.")
@click.option("--host", default=None, help="Only this host.name.")
@click.option("--gpu", metavar="UUID", default=None, help="Only this GPU.")
@click.option(
    "--slow",
    metavar="auto|off|DURATION",
    default=None,
    help="auto (default): find requests far slower than comparable ones were before; off; or a threshold (5s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def analyze(
    db_path: str | None,
    server: str | None,
    since: str | None,
    until: str | None,
    lookback: str | None,
    prometheus: str | None,
    service: str | None,
    host: str | None,
    gpu: str | None,
    slow: str | None,
    as_json: bool,
) -> None:
    """Rank the likely root causes of failed GPU inference requests, with evidence."""
    check_source(db_path, server)
    from gpu_rca.correlate.ranking.api import resolve_options

    resolve_options(since, until, slow, lookback)  # usage errors before anything is opened or fetched
    if server is not None:
        params = {
            "since": since,
            "until": until,
            "lookback": lookback,
            "service": service,
            "host": host,
            "gpu": gpu,
            "slow": slow,
            "prometheus": prometheus,
        }
        result = fetch_json(server, "/api/analyze", params)
    else:
        from gpu_rca.correlate.ranking.api import analyze as run

        result = run(
            db_path,
            since,
            until,
            service=service,
            host=host,
            gpu=gpu,
            slow=slow,
            lookback=lookback,
            prometheus=prometheus,
        )
    from gpu_rca.schemas.visible_text import visible

    window = result["window"]
    click.echo(visible(f"window: {window['start']} .. {window['end']}"), err=True)
    for warning in result["warnings"]:
        click.echo(f"warning: {visible(warning)}", err=True)
    if as_json:
        dump(result)
        return
    from gpu_rca.ranking_view import print_analysis

    print_analysis(result, sys.stdout)
