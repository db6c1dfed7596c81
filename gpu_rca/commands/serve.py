"""`gpu-rca serve`: receive OTLP/HTTP spans and logs into the store and serve the correlator over HTTP."""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from gpu_rca.commands.unit_option import parse_units, unit_option
from gpu_rca.schemas.errors import GpuRcaError

_MIB = 1024 * 1024
_SWITCH_INTERVAL_S = 0.002
#: A connection idle this long between requests is closed (OTel exporters reconnect).
_KEEP_ALIVE_S = 5
#: The largest request head read (h11's own default); a longer one is answered 400.
_MAX_HEAD_BYTES = 16 * 1024


@click.command("serve")
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="DuckDB store (default: $GPU_RCA_DB, else ./gpu-rca.duckdb). serve owns it while it runs.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4318,
    show_default=True,
    help="Port to listen on (OTLP/HTTP's 4318; 0 picks a free one, printed on stderr).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the bearer token every route but /healthz requires (else $GPU_RCA_TOKEN).",
)
@click.option(
    "--prometheus",
    "prometheus_url",
    default=None,
    metavar="URL",
    help="Prometheus to pull GPU metrics from around failed spans.",
)
@click.option(
    "--pull-interval",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="With --prometheus: how often to pull metrics around new failed spans.",
)
@click.option(
    "--max-body-mib",
    type=click.IntRange(1, 1024),
    default=64,
    show_default=True,
    help="Largest request body accepted, after decompression.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(1, 100_000),
    default=64,
    show_default=True,
    help="Trace and log requests that may be received at once, and metric requests that may wait for the store "
    "writer, before the server answers 503.",
)
@click.option(
    "--max-queue-wait",
    type=click.FloatRange(0.1, 3600),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Answer 503 when the writes queued ahead would take longer than this.",
)
@click.option(
    "--retention",
    metavar="DURATION",
    default=None,
    help="Delete spans, logs, samples, kernel events and digests older than this (e.g. 7d), "
    "in small steps every minute. Default: keep everything.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the ingest log, where each trace and log request is written before it is acknowledged "
    "(default: the store's path + .ingest-log).",
)
@click.option(
    "--log-max-mib",
    type=click.IntRange(1, 1_048_576),
    default=1024,
    show_default=True,
    help="Acknowledged requests the ingest log holds before they are stored; past it, 503 with Retry-After.",
)
@click.option(
    "--max-lag",
    type=click.FloatRange(0.1, 86_400),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Answer traces and logs 503 (before reading them) while the store is this far behind the ingest log.",
)
@click.option(
    "--client-timeout",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a connection whose request head, or the next bytes of whose body, take longer than this.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Open connections past which requests are answered 503 at once.",
)
@click.option("--init", is_flag=True, help="Create the store in --db even if that file exists and is empty (0 bytes).")
@unit_option
def serve(
    db_path: str | None,
    host: str,
    port: int,
    token_file: str | None,
    prometheus_url: str | None,
    pull_interval: float,
    max_body_mib: int,
    queue_size: int,
    max_queue_wait: float,
    retention: str | None,
    log_dir: str | None,
    log_max_mib: int,
    max_lag: float,
    client_timeout: float,
    max_connections: int,
    init: bool,
    units: tuple[str, ...],
) -> None:
    """Receive OTLP/HTTP traces and logs (POST /v1/traces, /v1/logs) into the DuckDB store."""
    import uvicorn
    from prometheus_client import disable_created_metrics

    from gpu_rca.correlate.prometheus.pull import check_prometheus_url
    from gpu_rca.correlate.server import ServerConfig, create_app
    from gpu_rca.correlate.server.access import load_token
    from gpu_rca.correlate.server.connections import protocol_class, raise_open_files_limit
    from gpu_rca.correlate.store import Store

    retention_s = None
    if retention is not None:
        from gpu_rca.schemas.timefmt import parse_duration_ns

        retention_s = parse_duration_ns(retention, "--retention") / 1e9
        if retention_s <= 0:
            raise click.BadParameter("must be longer than 0", param_hint="--retention")
    token = load_token(token_file)
    if prometheus_url is not None:
        prometheus_url = check_prometheus_url(prometheus_url)
    config = ServerConfig(
        token=token,
        prometheus_url=prometheus_url,
        max_body_bytes=max_body_mib * _MIB,
        max_queue=queue_size,
        pull_interval_s=pull_interval,
        max_queue_wait_s=max_queue_wait,
        retention_s=retention_s,
        log_dir=log_dir,
        log_max_bytes=log_max_mib * _MIB,
        max_lag_s=max_lag,
        client_timeout_s=client_timeout,
    )
    if token is None and not _is_loopback(host):
        click.echo(
            f"warning: listening on {host} without a token; anyone who can reach it can write the store "
            "(use --token-file or $GPU_RCA_TOKEN)",
            err=True,
        )
    disable_created_metrics()  # this process only: `_created` series are noise on a scrape
    # The loader builds rows in Python for long stretches; the event loop, which gives the GIL up at every
    # socket call, gets it back within 2 ms instead of 5, so /healthz and early refusals answer within 100 ms.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    rules = parse_units(units)
    store = Store.open(db_path, init=init, units=rules)
    try:
        raise_open_files_limit()  # each connection is a file: --max-connections must not run the process out
        listener = _listen(host, port)
        app = create_app(store, config)
        dropped = app.state.gpu_rca.counters.connections_dropped.labels(reason="head_timeout")
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                http=protocol_class(client_timeout, dropped.inc),
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=30,
                timeout_keep_alive=_KEEP_ALIVE_S,
                limit_concurrency=max_connections,
                h11_max_incomplete_event_size=_MAX_HEAD_BYTES,
                server_header=False,
            )
        )
        _log_text_visibly()  # after uvicorn.Config, which sets up uvicorn's own log handlers
        bound_port = listener.getsockname()[1]
        shown_host = f"[{host}]" if ":" in host else host
        with _signals_end_cleanly(server):
            # Announced only once a signal is handled: a SIGTERM right after this line must stop it cleanly.
            click.echo(
                f"gpu-rca serve: listening on http://{shown_host}:{bound_port} (store {store.path}"
                f"{', token required' if token else ''})",
                err=True,
            )
            server.run(sockets=[listener])
    finally:
        store.close()  # after the app's shutdown drained the writer; safe twice
    click.echo("gpu-rca serve: stopped, store closed", err=True)


def _log_text_visibly() -> None:
    """Every log line shows the traffic text it quotes (paths, labels, messages); none is sent to the terminal."""
    import logging

    from gpu_rca.schemas.visible_text import VisibleLogText

    root = logging.getLogger()
    if not root.handlers:  # what logging's last-resort handler would do (stderr, the message alone), filtered
        root.addHandler(logging.StreamHandler())
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, VisibleLogText) for f in handler.filters):
                handler.addFilter(VisibleLogText())


@contextmanager
def _signals_end_cleanly(server: Any) -> Iterator[None]:
    """uvicorn drains on SIGINT/SIGTERM and then re-raises the signal; land it here so serve exits 0.

    A signal that arrives before uvicorn installs its own handlers also lands here: it tells the server to
    stop as soon as it has started (instead of being lost, which left serve running after a SIGTERM).
    """
    received: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port fails here as one clear line and `--port 0` can report its port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise GpuRcaError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
