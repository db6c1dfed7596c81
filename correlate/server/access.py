"""In front of every route: the bearer-token check and the per-route request counter."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpu_rca.correlate.server.counters import ServeCounters
from gpu_rca.correlate.server.responses import error_response, media_type
from gpu_rca.schemas.errors import UsageError

#: Environment variable holding the bearer token (never a command-line value: argv is world-readable).
TOKEN_ENV = "GPU_RCA_TOKEN"

#: Routes that answer without the token (liveness probes cannot carry secrets).
OPEN_PATHS = frozenset({"/healthz"})
#: Pages opened in a browser may carry the token once as `?token=`; the answer sets this HttpOnly cookie,
#: which GET requests may use afterwards. Writes (POST) always need the Authorization header.
COOKIE = "gpu_rca_token"
_READ_METHODS = frozenset({"GET", "HEAD"})


class AccessMiddleware:
    """Answers 401 without reading the body when a token is set and the request lacks it; counts every answer.

    The token comes as `Authorization: Bearer …`; a GET may instead carry the `gpu_rca_token` cookie, or the
    token once as `?token=` (answered with that cookie, so a browser can open the pages from a link).
    """

    def __init__(self, app: ASGIApp, *, token: str | None, counters: ServeCounters) -> None:
        self.app = app
        self._token = token.encode("utf-8") if token else None
        self._counters = counters
        cookie = f"{COOKIE}={quote(token or '', safe='')}; HttpOnly; SameSite=Strict; Path=/"
        # The token was in the URL: no-referrer keeps it out of the Referer of whatever the page loads.
        self._grant_headers = [(b"set-cookie", cookie.encode("latin-1")), (b"referrer-policy", b"no-referrer")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        grant = self._token is not None and self._query_token_ok(scope)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if grant:
                    message["headers"] = [*message.get("headers", []), *self._grant_headers]
            await send(message)

        try:
            if (
                self._token is not None
                and scope["path"] not in OPEN_PATHS
                and not grant
                and not self._authorized(scope)
            ):
                content_type = media_type(_header(scope, b"content-type"))
                response = error_response(
                    401,
                    "missing or wrong bearer token (send Authorization: Bearer <token>)",
                    content_type,
                    headers={"WWW-Authenticate": 'Bearer realm="gpu-rca"'},
                )
                await response(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            # The route template, not the raw path: unknown paths must not grow the label set.
            label = getattr(route, "path", None) or "other"
            self._counters.requests.labels(route=label, code=str(status["code"])).inc()

    def _authorized(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization")
        if value is not None:
            scheme, _, credentials = value.strip().partition(" ")
            return scheme.lower() == "bearer" and self._matches(credentials.strip())
        if scope.get("method") in _READ_METHODS and (cookies := _header(scope, b"cookie")):
            try:
                morsel = SimpleCookie(cookies).get(COOKIE)
            except CookieError:
                return False
            return morsel is not None and self._matches(unquote(morsel.value))
        return False

    def _query_token_ok(self, scope: Scope) -> bool:
        if scope.get("method") not in _READ_METHODS or b"token=" not in scope.get("query_string", b""):
            return False
        values = parse_qs(scope["query_string"].decode("latin-1")).get("token", [])
        return len(values) == 1 and self._matches(values[0])

    def _matches(self, candidate: str) -> bool:
        # Constant time: the comparison must not tell an attacker how many leading bytes were right.
        return hmac.compare_digest(candidate.encode("utf-8"), self._token or b"")


def load_token(token_file: str | os.PathLike[str] | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token from `token_file` (first line, trimmed), else `$GPU_RCA_TOKEN`, else None."""
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read token file {token_file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"cannot read token file {token_file}: {exc}") from exc
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise UsageError(f"token file {token_file} is empty")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    return token or None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


__all__ = ["COOKIE", "OPEN_PATHS", "TOKEN_ENV", "AccessMiddleware", "load_token"]
