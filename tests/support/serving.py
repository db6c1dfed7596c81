"""A serve app under a real uvicorn inside the test process, its store writer held on purpose, and what a
client sends and reads back over OTLP/HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from google.rpc import status_pb2
from starlette.applications import Starlette

from gpu_rca.correlate.server.writer import Writer
from tests.support.waiting import wait_for

#: Request headers of an OTLP/HTTP protobuf body, and of an OTLP/JSON one.
PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


@contextmanager
def running(app: Starlette) -> Iterator[httpx.Client]:
    """`app` under a real uvicorn on a free loopback port, in this process; a client for it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=20, what="uvicorn started")
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@contextmanager
def writer_held(writer: Writer) -> Iterator[None]:
    """Hold the store writer inside a job and fill one queue slot behind it; both run once the block ends."""
    entered, gate = threading.Event(), threading.Event()
    holder = threading.Thread(target=writer.call, args=(lambda _: (entered.set(), gate.wait(30)),))
    holder.start()
    queued: threading.Thread | None = None
    try:
        assert entered.wait(10)
        queued = threading.Thread(target=writer.call, args=(lambda _: None,))
        queued.start()
        wait_for(lambda: writer.depth == 1, timeout_s=10, what="one job queued")
        yield
    finally:
        gate.set()
        holder.join()
        if queued is not None:
            queued.join()


def all_stored(client: httpx.Client, timeout_s: float = 30) -> None:
    """Wait until the server's loader has stored every request its ingest log acknowledged."""
    wait_for(
        lambda: client.get("/healthz").json()["ingest_log"]["lag_records"] == 0,
        timeout_s=timeout_s,
        what="every acknowledged request stored",
    )


def status_message(response: httpx.Response) -> str:
    """The message of an OTLP/HTTP error answer, protobuf or JSON."""
    if response.headers["content-type"] == "application/json":
        return response.json()["message"]
    return status_pb2.Status.FromString(response.content).message
