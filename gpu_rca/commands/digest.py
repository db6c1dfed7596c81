"""`gpu-rca digest`: render the analysis of a window as Markdown, HTML or JSON, store it, and optionally post it."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gpu_rca.schemas.errors import GpuRcaError, InputError, StoreError, UsageError

if TYPE_CHECKING:
    from gpu_rca.correlate.digest import Digest, Trigger
    from gpu_rca.correlate.digest.pipeline import DigestSettings

_FORMATS = ("md", "html", "json")


@click.command("digest")
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="DuckDB store (default: $GPU_RCA_DB, else ./gpu-rca.duckdb).",
)
@click.option(
    "--server",
    "server_url",
    default=None,
    metavar="URL",
    help="A running `gpu-rca serve` to make the digest (use while serve holds the store).",
)
@click.option(
    "--since", default=None, metavar="T", help="Window start: RFC 3339, epoch seconds, or a duration like 24h."
)
@click.option("--until", default=None, metavar="T", help="Window end (default: now, or just after the last failure).")
@click.option("--gpu", default=None, metavar="UUID", help="Only requests served by this GPU.")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="md", show_default=True)
@click.option(
    "--out",
    "out_path",
    type=click.Path(),
    default=None,
    help="A folder (existing, or a path without .md/.html/.json): digest.md, digest.html, digest.json and "
    "plots/ linked to each other; or one file in --format (Markdown plots go beside it under plots/). "
    "Default: stdout.",
)
@click.option(
    "--grafana-url", default=None, metavar="URL", help="Grafana to link example traces to (else $GPU_RCA_GRAFANA_URL)."
)
@click.option(
    "--notify-url",
    default=None,
    metavar="URL",
    help='POST a Slack-compatible {"text": …} summary here (else $GPU_RCA_NOTIFY_URL).',
)
@click.option(
    "--trigger",
    type=click.Choice(("manual", "schedule")),
    default="manual",
    show_default=True,
    help="Recorded with the digest; cron jobs pass `schedule`.",
)
def digest(
    db_path: str | None,
    server_url: str | None,
    since: str | None,
    until: str | None,
    gpu: str | None,
    fmt: str,
    out_path: str | None,
    grafana_url: str | None,
    notify_url: str | None,
    trigger: str,
) -> None:
    """Render the failure digest of a window and store it."""
    from gpu_rca.correlate.digest import pipeline
    from gpu_rca.correlate.digest.model import Trigger
    from gpu_rca.schemas.timefmt import parse_time_ns

    if db_path and server_url:
        raise UsageError("use --db or --server, not both")
    settings = pipeline.DigestSettings.from_env(grafana_url=grafana_url, notify_url=notify_url, public_url=server_url)
    since_ns = parse_time_ns(since, what="--since") if since else None
    until_ns = parse_time_ns(until, what="--until") if until else None
    if server_url:
        made = _from_server(server_url, since=since, until=until, gpu=gpu, trigger=trigger)
    else:
        made = _from_db(db_path, Trigger(trigger, "", (gpu,) if gpu else ()), settings, since_ns, until_ns, gpu)
    _write(made, fmt, out_path)
    from gpu_rca.schemas.visible_text import visible

    click.echo(visible(f"digest {made.id}: {made.headline.text}"), err=True)
    pipeline.deliver(made, settings)


def _from_db(
    db_path: str | None,
    trigger: Trigger,
    settings: DigestSettings,
    since_ns: int | None,
    until_ns: int | None,
    gpu: str | None,
) -> Digest:
    """Make the digest on the store itself and keep it in its `digests` table (a read-only store: not kept)."""
    from gpu_rca.correlate.digest import archive, pipeline
    from gpu_rca.correlate.store import Store, default_db_path
    from gpu_rca.correlate.store.open import read_only_reason

    path = Path(db_path or default_db_path())
    if not path.exists():  # opening it writable would create an empty store as a side effect
        raise StoreError(f"{path} does not exist; ingest something first (gpu-rca ingest --db {path} ...)")
    read_only = read_only_reason(str(path))
    with Store.open(path, read_only=read_only is not None) as store:
        made = pipeline.make_digest(
            store.connection, trigger=trigger, settings=settings, since_ns=since_ns, until_ns=until_ns, gpu=gpu
        )
        if read_only is None:
            with store.transaction():
                archive.save_digest(store.connection, made)
    if read_only is not None:
        click.echo(
            f"warning: {path} is read-only ({read_only}): digest {made.id} was made but not stored"
            " (not archived in its digests table)",
            err=True,
        )
    return made


def _from_server(server_url: str, *, since: str | None, until: str | None, gpu: str | None, trigger: str) -> Digest:
    """Ask serve to make and store the digest (POST /digests), and rebuild it from the JSON it answers."""
    from urllib.parse import urlsplit

    from gpu_rca.correlate.digest.model import Digest

    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--server must be an http(s) URL such as http://127.0.0.1:4318, got {server_url!r}")
    base = server_url.rstrip("/")
    body = json.dumps({"since": since, "until": until, "gpu": gpu, "trigger": trigger}).encode("utf-8")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = os.environ.get("GPU_RCA_TOKEN", "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base}/digests", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc.read())
        if exc.code == 401:
            raise UsageError(f"{base} needs a token: set $GPU_RCA_TOKEN ({detail})") from exc
        raise GpuRcaError(f"{base} answered HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(f"cannot reach gpu-rca serve at {base}: {getattr(exc, 'reason', exc)}") from exc
    return Digest.from_json(payload)


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", body[:200]))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _write(made: Digest, fmt: str, out_path: str | None) -> None:
    from gpu_rca.correlate.digest import render_html, render_markdown
    from gpu_rca.correlate.digest.files import write_digest_files

    if out_path and (Path(out_path).is_dir() or Path(out_path).suffix.lower() not in (".md", ".html", ".json")):
        written = write_digest_files(made, Path(out_path))
        click.echo(f"wrote {len(written)} files to {out_path}", err=True)
        return
    if fmt == "json":
        text = made.to_json(indent=None) + "\n"
    elif fmt == "html":
        text = render_html(made)
    elif out_path:
        plots_dir = Path(out_path).parent / "plots"
        for plot in made.plots:
            _write_file(plots_dir / f"{plot.id}.png", plot.png)
        text = render_markdown(made, plot_href=lambda p: f"plots/{p.id}.png")
    else:
        text = render_markdown(made)
    if out_path:
        _write_file(Path(out_path), text.encode("utf-8"))
    else:
        click.echo(text, nl=False)


def _write_file(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
