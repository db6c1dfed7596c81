"""The ingest log: every accepted OTLP request, as received, in append-only checksummed segments on disk.

A request is acknowledged once its record is on disk (fsync); the loader (`correlate.server.loader`) reads
records behind the writer, stores them in DuckDB in large batches, and then moves the checkpoint, behind which
whole segments are deleted. On start the records past the checkpoint are read again (replay); storing is
idempotent (the store's keys), so a record stored just before a crash and replayed is stored once.

A segment is `NNNNNNNNNNNNNNNNNNNN.seg`: records of `<u32 payload length><u32 crc32 of the payload><payload>`,
the payload `<u64 append time ns><u8 signal><u8 content type><16 reserved bytes><body>`. Appends are
batched: one thread writes every record queued meanwhile and fsyncs once (group fsync); a record's body is
written as received, never copied into a frame (its header and checksum are computed beside it). A torn or corrupt
record ends what can be read of its segment: in the last segment it is cut off (it was never acknowledged:
its fsync never returned), elsewhere the bytes after it are reported as lost; either way with a warning.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from gpu_rca.schemas.errors import GpuRcaError

log = logging.getLogger("gpu_rca.serve")

_FRAME = struct.Struct("<II")
_HEAD = struct.Struct("<QBB16s")
#: Signals and content types as the record stores them.
SIGNALS = ("traces", "logs")
CONTENT_TYPES = ("application/x-protobuf", "application/json")
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_CHECKPOINT = "checkpoint"


class LogFull(GpuRcaError):
    """The log holds its maximum of bytes not yet stored: the request should be retried later (503)."""


class LogUnavailable(GpuRcaError):
    """The log cannot write (disk full, I/O error) or is closed: retry later (503)."""


@dataclass(frozen=True)
class Record:
    """One logged request, and where the next record starts (what the checkpoint moves to once it is stored)."""

    signal: str
    content_type: str
    appended_ns: int
    body: bytes
    segment: int
    end: int


@dataclass
class _Pending:
    head: bytes  # the frame and the payload's header; the body follows it on disk
    body: bytes
    future: Future[None]

    @property
    def size(self) -> int:
        return len(self.head) + len(self.body)


_RESERVED = bytes(16)


def _frame_head(signal: str, content_type: str, body: bytes) -> bytes:
    """The bytes written before `body`: length and checksum of the payload (header + body), then the header."""
    head = _HEAD.pack(time.time_ns(), SIGNALS.index(signal), CONTENT_TYPES.index(content_type), _RESERVED)
    return _FRAME.pack(len(head) + len(body), zlib.crc32(body, zlib.crc32(head))) + head


def _segment_name(number: int) -> str:
    return f"{number:020d}.seg"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IngestLog:
    """The log in `directory`, holding at most `max_bytes` of records not yet stored."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        # A sixteenth of the log per segment (64 KiB to 64 MiB): stored segments are deleted while the rest load.
        self.segment_bytes = segment_bytes or max(64 * 1024, min(DEFAULT_SEGMENT_BYTES, max_bytes // 16))
        self._lock = threading.Condition()
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._closed = False
        self.failure: str | None = None  # why the last write failed; None once a write succeeds again
        self.failed_at = float("-inf")  # time.monotonic() of the last failed write
        # Replay: what the last run left past its checkpoint.
        self.checkpoint = self._read_checkpoint()
        self.corrupt_records = 0
        self.cut_bytes = 0
        self.replayed_records = 0
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._scan()
        last = max(self._sizes, default=self.checkpoint[0])
        self._durable = (last, self._sizes.get(last, 0))
        self.replayed_bytes = self.size_bytes
        self.records_appended = 0
        self.records_loaded = 0
        self.segment = last + 1
        self._open_segment(self.segment)
        self._durable = (self.segment, 0)
        self._writer = threading.Thread(target=self._write_loop, name="gpu-rca-log", daemon=True)
        self._writer.start()

    # --- appending ------------------------------------------------------------------------------
    def append(self, signal: str, content_type: str, body: bytes) -> Future[None]:
        """Queue a record; the future resolves once it is on disk. LogFull or LogUnavailable at once when the
        log cannot take it."""
        pending = _Pending(_frame_head(signal, content_type, body), body, Future())
        with self._lock:
            if self._closed:
                raise LogUnavailable("the server is shutting down")
            if self.size_bytes + self._pending_bytes + pending.size > self.max_bytes:
                raise LogFull(
                    f"ingest log full ({self.size_bytes + self._pending_bytes} of {self.max_bytes} bytes "
                    "waiting for the store)"
                )
            pending.future.set_running_or_notify_cancel()  # a caller that goes away cannot cancel it now
            self._pending.append(pending)
            self._pending_bytes += pending.size
            self._lock.notify_all()
        return pending.future

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending:
                    return
                group, self._pending, self._pending_bytes = self._pending, [], 0
            try:
                self._write(group)
            except OSError as exc:
                self.failure = f"the ingest log cannot write: {exc.strerror or exc}"
                self.failed_at = time.monotonic()
                log.warning("gpu-rca serve: %s; requests are refused until it can", self.failure)
                for p in group:
                    p.future.set_exception(LogUnavailable(self.failure))
                continue
            self.failure = None
            with self._lock:
                self.records_appended += len(group)
                self._durable = (self.segment, self._sizes[self.segment])
                self._lock.notify_all()
            for p in group:
                p.future.set_result(None)

    def _write(self, group: list[_Pending]) -> None:
        size = sum(p.size for p in group)
        if self._sizes[self.segment] and self._sizes[self.segment] + size > self.segment_bytes:
            self._file.close()
            self._open_segment(self.segment + 1)
        start = self._sizes[self.segment]
        try:
            for pending in group:
                self._file.write(pending.head)
                self._file.write(pending.body)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            # Leave no partial record behind: the next write starts at a record boundary.
            self._file.truncate(start)
            self._file.seek(start)
            raise
        self._sizes[self.segment] = start + size

    def _open_segment(self, number: int) -> None:
        path = self.directory / _segment_name(number)
        self._file = open(path, "ab")  # noqa: SIM115 (held open while it is the segment written)
        self._sizes[number] = self._file.tell()
        self.segment = number
        _fsync_dir(self.directory)

    # --- reading (the loader) -------------------------------------------------------------------
    def read(self, position: tuple[int, int], max_bytes: int) -> list[Record]:
        """Durable records from `position` (segment, offset) on, about `max_bytes` of them at most."""
        with self._lock:
            durable = self._durable
            segments = sorted(n for n in self._sizes if n >= position[0])
        records: list[Record] = []
        total = 0
        for number in segments:
            start = position[1] if number == position[0] else 0
            end = durable[1] if number == durable[0] else self._sizes.get(number, 0)
            if number > durable[0] or start >= end:
                continue
            with open(self.directory / _segment_name(number), "rb") as handle:
                handle.seek(start)
                data = memoryview(handle.read(end - start))  # payloads are sliced without a copy
            offset = 0
            while offset + _FRAME.size <= len(data) and total < max_bytes:
                length, crc = _FRAME.unpack_from(data, offset)
                payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break  # checked on start; only a record past what was read lands here
                offset += _FRAME.size + length
                total += _FRAME.size + length
                records.append(_record(payload, number, start + offset))
            if total >= max_bytes:
                break
        return records

    def wait(self, position: tuple[int, int], timeout_s: float) -> None:
        """Return once a record past `position` is durable, or after `timeout_s`."""
        with self._lock:
            self._lock.wait_for(lambda: self._durable > position or self._closed, timeout_s)

    def next_position(self, position: tuple[int, int]) -> tuple[int, int]:
        """`position`, moved to the start of the next segment when it is at the end of a finished one."""
        with self._lock:
            if position[0] < self.segment and position[1] >= self._sizes.get(position[0], 0):
                later = [n for n in self._sizes if n > position[0]]
                return (min(later), 0) if later else position
            return position

    @property
    def durable(self) -> tuple[int, int]:
        """The end of what is on disk: (segment, offset)."""
        with self._lock:
            return self._durable

    def commit(self, position: tuple[int, int], records: int) -> None:
        """Everything before `position` is stored: write the checkpoint and delete the segments behind it."""
        path = self.directory / _CHECKPOINT
        temporary = path.with_suffix(".tmp")
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(f"{position[0]} {position[1]}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_dir(self.directory)
        with self._lock:
            self.checkpoint = position
            self.records_loaded += records
            done = [n for n in self._sizes if n < position[0]]
            for number in done:
                del self._sizes[number]
        for number in done:
            (self.directory / _segment_name(number)).unlink(missing_ok=True)

    # --- size and lag ---------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes of records on disk not yet behind the checkpoint."""
        with self._lock:
            seg, off = self.checkpoint
            return sum(size - (off if n == seg else 0) for n, size in self._sizes.items() if n >= seg)

    @property
    def free_bytes(self) -> int:
        """Bytes the log can still take: its maximum less what is on disk not yet stored and what is queued."""
        return self.max_bytes - self.size_bytes - self._pending_bytes

    def close(self) -> None:
        """Write what is queued, then stop writing; safe twice."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._writer.join()
        self._file.close()

    # --- start ----------------------------------------------------------------------------------
    def _read_checkpoint(self) -> tuple[int, int]:
        try:
            text = (self.directory / _CHECKPOINT).read_text(encoding="ascii").split()
            return int(text[0]), int(text[1])
        except (OSError, ValueError, IndexError):
            return (0, 0)

    def _scan(self) -> None:
        """Check every segment past the checkpoint record by record; cut a torn or corrupt tail."""
        numbers = sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())
        for number in numbers:
            if number < self.checkpoint[0]:
                (self.directory / _segment_name(number)).unlink(missing_ok=True)
                continue
            path = self.directory / _segment_name(number)
            data = path.read_bytes()
            skip = self.checkpoint[1] if number == self.checkpoint[0] else 0
            good, records = _good_prefix(data, skip)
            self.replayed_records += records
            if good < len(data):
                last = number == numbers[-1]
                self.corrupt_records += 1
                self.cut_bytes += len(data) - good
                log.warning(
                    "gpu-rca serve: ingest log segment %s: %s at byte %d; %d bytes after it %s",
                    path.name,
                    "a torn or corrupt final record" if last else "a corrupt record",
                    good,
                    len(data) - good,
                    "cut off (never acknowledged)" if last else "cannot be read and are lost",
                )
                with open(path, "r+b") as handle:
                    handle.truncate(good)
                    os.fsync(handle.fileno())
            self._sizes[number] = good


def _good_prefix(data: bytes, skip: int = 0) -> tuple[int, int]:
    """How many leading bytes of a segment are whole records with a matching checksum, and how many of those
    records start at or after `skip`."""
    offset = count = 0
    view = memoryview(data)
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        end = offset + _FRAME.size + length
        if length < _HEAD.size or end > len(data) or zlib.crc32(view[offset + _FRAME.size : end]) != crc:
            break
        count += offset >= skip
        offset = end
    return offset, count


def _record(payload: memoryview, segment: int, end: int) -> Record:
    appended_ns, signal, content_type, _reserved = _HEAD.unpack_from(payload)
    return Record(SIGNALS[signal], CONTENT_TYPES[content_type], appended_ns, bytes(payload[_HEAD.size :]), segment, end)


__all__ = ["CONTENT_TYPES", "SIGNALS", "IngestLog", "LogFull", "LogUnavailable", "Record"]
