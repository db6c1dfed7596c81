"""Reading a request body within a size cap, inflating gzip as it streams so a gzip bomb is never inflated;
every member of a multi-member gzip body is inflated, and bytes after the last one are refused. A body whose
next bytes do not come within a timeout is dropped (408), so a sender that stops mid-body holds nothing."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

#: The OTLP spec's recommended cap on a (decompressed) request body.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_GZIP_MAGIC = b"\x1f\x8b"


class BodyError(Exception):
    """A body the server will not read: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    content_encoding: str | None,
    max_bytes: int,
    timeout_s: float | None = None,
) -> tuple[bytes, int]:
    """(decompressed body, bytes on the wire); raises BodyError for 413 (too big), 415 (encoding), 400, or 408
    when no bytes came for `timeout_s` seconds."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in {"identity", "gzip"}:
        raise BodyError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BodyError(400, f"Content-Length is not a number: {content_length[:40]!r}") from None
        if declared > max_bytes:
            raise BodyError(413, _too_big(max_bytes, f"Content-Length {declared}"))
    inflater = zlib.decompressobj(_GZIP_WBITS) if encoding == "gzip" else None
    out = bytearray()
    plain: list[bytes] = []  # an identity body's chunks, joined once at the end (one copy, not one per chunk)
    wire = 0
    iterator = aiter(chunks)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(iterator), timeout_s)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BodyError(
                408, f"the body stalled: no bytes for {timeout_s:g} s after {wire}", {"Connection": "close"}
            ) from None
        wire += len(chunk)
        if wire > max_bytes:
            raise BodyError(413, _too_big(max_bytes, "the body"))
        if inflater is None:
            plain.append(chunk)
            continue
        pending = chunk
        while pending:
            if inflater.eof:  # gzip allows several members, concatenated: each is inflated in turn
                if not _GZIP_MAGIC.startswith(pending[:2]):
                    raise BodyError(400, "body has bytes after its gzip data that are not another gzip member")
                inflater = zlib.decompressobj(_GZIP_WBITS)
            # Never inflate more than one byte past the cap: that byte is what proves the body too big.
            try:
                piece = inflater.decompress(pending, max_bytes - len(out) + 1)
            except zlib.error as exc:
                raise BodyError(400, f"body is not valid gzip: {exc}") from exc
            out += piece
            if len(out) > max_bytes:
                raise BodyError(413, _too_big(max_bytes, "the decompressed body"))
            pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if inflater is None:
        return b"".join(plain), wire
    if not inflater.eof and wire:
        raise BodyError(400, "gzip body is truncated")
    return bytes(out), wire


def _too_big(max_bytes: int, what: str) -> str:
    return f"{what} exceeds the limit of {max_bytes} bytes ({max_bytes / 1048576:g} MiB)"


__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyError", "read_body"]
