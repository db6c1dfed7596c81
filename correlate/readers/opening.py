"""Opening telemetry files: gzip and zstd recognised by their magic bytes, decompressed as a capped stream."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from gpu_rca.schemas.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Default cap on the bytes one file may decompress to: a guard against compression bombs.
DEFAULT_MAX_BYTES = 16 * 1024**3
UTF8_BOM = b"\xef\xbb\xbf"
#: Bytes read ahead for format detection.
HEAD_BYTES = 64 * 1024


class _Capped(io.RawIOBase):
    """Reads through `inner`, failing once more than `limit` bytes came out; reports raw progress."""

    def __init__(self, inner: Any, limit: int, label: str) -> None:
        self._inner = inner
        self._limit = limit
        self._label = label
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        self.total += n
        if self.total > self._limit:
            raise InputError(
                f"{self._label} decompresses to more than {self._limit} bytes (raise --max-bytes if it is real)"
            )
        buffer[:n] = data
        return n


class _Progress(io.RawIOBase):
    """A raw file that calls `on_bytes(n)` for every n bytes read from disk."""

    def __init__(self, raw: io.RawIOBase | io.BufferedIOBase, on_bytes: Callable[[int], object] | None) -> None:
        self._raw = raw
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n and self._on_bytes is not None:
            self._on_bytes(n)
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Prefixed(io.RawIOBase):
    """Serves `prefix` and then the rest of `inner`: detection reads the head once, parsers read it again."""

    def __init__(self, prefix: bytes, inner: io.RawIOBase) -> None:
        self._prefix = memoryview(prefix)
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._inner.readinto(buffer)


class Opened:
    """A telemetry file opened for reading: `stream` yields decompressed bytes; close it when done."""

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, on_bytes: Callable[[int], object] | None = None
    ) -> None:
        self.path = path
        raw = io.BufferedReader(_Progress(path.open("rb"), on_bytes), buffer_size=1 << 20)
        magic = raw.peek(4)[:4]
        self.compression: str | None = None
        inner: Any = raw
        if magic[:2] == GZIP_MAGIC:
            self.compression, inner = "gzip", gzip.GzipFile(fileobj=raw, mode="rb")
        elif magic == ZSTD_MAGIC:
            import zstandard

            self.compression = "zstd"
            inner = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        self._raw = raw
        self._inner = inner
        capped = _Capped(inner, max_bytes, str(path))
        head = bytearray()
        while len(head) < HEAD_BYTES:
            chunk = capped.read(HEAD_BYTES - len(head))
            if not chunk:
                break
            head += chunk
        # A UTF-8 byte-order mark (files saved on Windows) is not content: JSON parsers reject it.
        if head.startswith(UTF8_BOM):
            del head[:3]
        #: The leading (decompressed) bytes, for detection; `stream` still starts at byte 0.
        self.head = bytes(head)
        self.stream = io.BufferedReader(_Prefixed(self.head, capped), buffer_size=1 << 20)

    def close(self) -> None:
        """Close every layer."""
        for layer in (self.stream, self._inner, self._raw):
            with contextlib.suppress(Exception):
                layer.close()

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def text_lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) over a UTF-8 stream; bad UTF-8 is an InputError."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield number, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise InputError(f"line {number} is not UTF-8 text ({exc.reason})") from exc


def json_documents(
    stream: BinaryIO, warnings: list[str] | None = None, *, strict: bool = False
) -> Iterator[tuple[int, Any]]:
    """(line number, document) per JSON line; a file that is one pretty-printed document is read whole.

    A last line that is cut off (invalid JSON and no final newline, as a writer that died mid-line leaves
    it) ends the file with a warning appended to `warnings`; with `strict`, or without `warnings`, it is an
    InputError like any other malformed line.
    """
    lines = iter(stream)
    number = 0
    for raw in lines:
        number += 1
        if raw.strip():
            break
    else:
        return
    try:
        yield number, json.loads(raw)
    except json.JSONDecodeError as first_error:
        rest = b"".join(lines)
        try:
            document = json.loads(raw + rest)
        except json.JSONDecodeError:
            if not rest and _cut_last_line(raw, number, warnings, strict):
                return
            raise InputError(f"line {number}: invalid JSON ({first_error.msg} at column {first_error.colno})") from None
        yield number, document
        return
    except UnicodeDecodeError as exc:
        raise InputError(f"line {number} is not UTF-8 text ({exc.reason})") from exc
    for raw in lines:
        number += 1
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as exc:
            if _cut_last_line(raw, number, warnings, strict):
                return
            raise InputError(
                f"line {number}: invalid JSON ({exc.msg} at column {exc.colno}); truncated file?"
            ) from None
        except UnicodeDecodeError as exc:
            raise InputError(f"line {number} is not UTF-8 text ({exc.reason})") from exc


def _cut_last_line(raw: bytes, number: int, warnings: list[str] | None, strict: bool) -> bool:
    """True (and a warning) when `raw`, which did not parse, is a last line cut off mid-write."""
    if raw.endswith(b"\n"):
        return False  # a complete line that is malformed: the file is broken, not cut
    if warnings is None:
        return False
    if strict:
        raise InputError(
            f"line {number} is cut off (no final newline, as a writer that stopped mid-line leaves it); --strict refuses the file"
        )
    warnings.append(
        f"line {number} is cut off (no final newline, as a writer that stopped mid-line leaves it): not stored, the lines before it are"
    )
    return True


__all__ = ["DEFAULT_MAX_BYTES", "GZIP_MAGIC", "ZSTD_MAGIC", "Opened", "json_documents", "text_lines"]
