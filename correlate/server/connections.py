"""Connections that cannot hold the server: a deadline for a request's head, room for many sockets, and one
line (not a traceback per attempt) when the process runs out of them.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) and `read_body` drops a body that
stalls, but nothing bounds the time a client takes to send a request's head: a client that opens a
connection, or sends half a head, and then waits would hold its socket forever. `protocol_class` gives
uvicorn's h11 protocol such a deadline, armed when the connection opens and after each answer, disarmed
once a whole head has arrived.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

log = logging.getLogger("gpu_rca.serve")
#: Seconds between two "out of sockets" lines.
_ACCEPT_WARNING_INTERVAL_S = 60.0


class _HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head within
    `head_timeout_s` of opening or of its last answer."""

    head_timeout_s = 10.0
    on_timeout: Any = None  # called with no argument when a connection is closed for its head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self._in_request():
            self._disarm()  # a whole head arrived: its body has read_body's own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _in_request(self) -> bool:
        """A request's head has arrived and it is not answered yet."""
        cycle: RequestResponseCycle | None = self.cycle  # None until the first head (uvicorn types it otherwise)
        return cycle is not None and not cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self._in_request():
            return
        if self.on_timeout is not None:
            self.on_timeout()
        self.transport.close()


def protocol_class(head_timeout_s: float, on_timeout: Any = None) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline of `head_timeout_s` for each request's head; `on_timeout()` is
    called for each connection closed for it (to count them)."""
    return type(
        "HeadDeadlineProtocol",
        (_HeadDeadlineProtocol,),
        {"head_timeout_s": head_timeout_s, "on_timeout": staticmethod(on_timeout) if on_timeout else None},
    )


def raise_open_files_limit() -> int:
    """Raise this process's limit on open files to its hard limit (sockets are files); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log running out of sockets (asyncio retries accepting a second later) as one line a minute instead of a
    traceback per attempt; every other error goes to the loop's default handler."""
    last = [float("-inf")]

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and "accept" in str(context.get("message", "")):
            now = time.monotonic()
            if now - last[0] >= _ACCEPT_WARNING_INTERVAL_S:
                last[0] = now
                log.warning("gpu-rca serve: cannot accept connections: %s (lower --max-connections)", error)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


__all__ = ["protocol_class", "quiet_accept_errors", "raise_open_files_limit"]
