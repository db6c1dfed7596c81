"""The store's single writer: one thread runs write jobs from a bounded queue, committing them in groups
(span batches queued together go in with one insert per table).

DuckDB lets one process write a file, and one connection is fastest written from one thread; the queue in
front of it is what turns overload into a quick 503 instead of unbounded memory. A job's result is handed
back only after the transaction holding it has committed, so an acknowledged request is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gpu_rca.correlate.otlp.rows import SpanBatch
from gpu_rca.correlate.store import Store
from gpu_rca.correlate.store.records import IngestResult
from gpu_rca.schemas.errors import GpuRcaError

T = TypeVar("T")

#: Most jobs committed in one transaction: enough to amortise a commit, few enough to answer quickly.
MAX_GROUP = 32


class QueueFull(GpuRcaError):
    """The write queue is full: the caller should retry later (HTTP 503 with Retry-After)."""


class WriterClosed(GpuRcaError):
    """The writer is shutting down and takes no new jobs."""


@dataclass
class _Job(Generic[T]):
    run: Callable[[Store], T]
    deliver: Callable[[T | None, BaseException | None], None]
    #: Set for a span batch: queued span batches are stored together with one insert per table.
    spans: SpanBatch | None = None


class Writer:
    """Runs `job(store)` callables one after another on its own thread; the only code that writes the store."""

    def __init__(self, store: Store, *, max_queue: int = 64, on_commit: Callable[[float], None] | None = None) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.store = store
        self.max_queue = max_queue
        self._queue: queue.Queue[_Job[Any] | None] = queue.Queue(maxsize=max_queue)
        self._on_commit = on_commit
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._job_s = 0.0  # moving average of the writer's time per committed job

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread (once)."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="gpu-rca-writer", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop taking jobs, run every job already queued, then stop the thread; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)  # after every queued job: FIFO, so the queue drains first
            thread.join()

    @property
    def running(self) -> bool:
        """True while the writer takes new jobs."""
        return self._thread is not None and not self._closed

    @property
    def depth(self) -> int:
        """Jobs waiting for the writer."""
        return self._queue.qsize()

    @property
    def expected_wait_s(self) -> float:
        """About how long a job queued now waits for the jobs ahead of it (queue depth × time per job)."""
        return self.depth * self._job_s

    # --- submitting ---------------------------------------------------------------------------
    def admit(self, max_wait_s: float | None = None) -> None:
        """Raise QueueFull (or WriterClosed) now if a job queued now would be refused, so a caller can refuse
        a request before the work of preparing it; `submit` checks again."""
        if self._closed or self._thread is None:
            raise WriterClosed("the server is shutting down" if self._closed else "the store writer is not running")
        if self._queue.full():
            raise QueueFull(f"ingest queue full ({self.max_queue} requests waiting for the store)")
        if max_wait_s is not None and (wait_s := self.expected_wait_s) > max_wait_s:
            raise QueueFull(f"ingest queue busy (about {wait_s:.1f} s of writes ahead, limit {max_wait_s:g} s)")

    async def submit_spans(self, batch: SpanBatch, *, max_wait_s: float | None = None) -> IngestResult:
        """`submit` storing a span batch; batches queued together are stored together (group commit)."""
        return await self.submit(lambda store: store.ingest_span_batch(batch), max_wait_s=max_wait_s, spans=batch)

    async def submit(
        self, run: Callable[[Store], T], *, max_wait_s: float | None = None, spans: SpanBatch | None = None
    ) -> T:
        """Queue `run` and wait for its result; raises QueueFull at once when the queue is full, or when the
        jobs ahead would take longer than `max_wait_s` (a sender would time out and resend meanwhile)."""
        if max_wait_s is not None and (wait_s := self.expected_wait_s) > max_wait_s:
            raise QueueFull(f"ingest queue busy (about {wait_s:.1f} s of writes ahead, limit {max_wait_s:g} s)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def deliver(result: T | None, error: BaseException | None) -> None:
            def settle() -> None:
                if future.cancelled():
                    return  # the client went away; the data is committed, its retry is a no-op
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)  # type: ignore[arg-type]

            with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown): nobody is waiting any more
                loop.call_soon_threadsafe(settle)

        self._put(_Job(run, deliver, spans), block=False)
        return await future

    def call(self, run: Callable[[Store], T], *, timeout_s: float | None = None) -> T:
        """Queue `run` from a plain thread and wait for its result (blocking while the queue is full)."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def deliver(result: T | None, error: BaseException | None) -> None:
            box["result"], box["error"] = result, error
            done.set()

        self._put(_Job(run, deliver), block=True, timeout_s=timeout_s)
        if not done.wait(timeout_s):
            raise QueueFull(f"the store writer did not finish within {timeout_s} s")
        if box["error"] is not None:
            raise box["error"]
        return box["result"]

    def _put(self, job: _Job[Any], *, block: bool, timeout_s: float | None = None) -> None:
        if self._closed or self._thread is None:
            raise WriterClosed("the server is shutting down" if self._closed else "the store writer is not running")
        try:
            self._queue.put(job, block=block, timeout=timeout_s)
        except queue.Full:
            raise QueueFull(f"ingest queue full ({self.max_queue} requests waiting for the store)") from None

    # --- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group: list[_Job[Any]] = [first]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._run_group(group)
            if stop:
                return

    def _run_group(self, group: list[_Job[Any]]) -> None:
        """Run the jobs in queue order: each run of consecutive span batches as one store call, the others
        together in one transaction."""
        for is_spans, jobs in itertools.groupby(group, key=lambda job: job.spans is not None):
            (self._run_spans if is_spans else self._run_jobs)(list(jobs))

    def _run_spans(self, group: list[_Job[Any]]) -> None:
        self._run(
            group,
            lambda: self.store.ingest_span_batches([job.spans for job in group]),  # type: ignore[misc]
            lambda job: job.run(self.store),
        )

    def _run_jobs(self, group: list[_Job[Any]]) -> None:
        def together() -> list[Any]:
            with self.store.transaction():
                return [job.run(self.store) for job in group]

        def alone(job: _Job[Any]) -> Any:
            with self.store.transaction():
                return job.run(self.store)

        self._run(group, together, alone)

    def _run(
        self, group: list[_Job[Any]], together: Callable[[], list[Any]], alone: Callable[[_Job[Any]], Any]
    ) -> None:
        """Commit `group` at once (`together`, a result per job), or, when that fails, each job `alone`."""
        started = time.perf_counter()
        if len(group) > 1:
            try:
                results = together()
            except Exception:
                pass
            else:
                self._committed(started, len(group))
                for job, result in zip(group, results):
                    job.deliver(result, None)
                return
        for job in group:
            started = time.perf_counter()
            try:
                result = alone(job)
            except Exception as exc:
                job.deliver(None, exc)
            else:
                self._committed(started, 1)
                job.deliver(result, None)

    def _committed(self, started: float, jobs: int) -> None:
        elapsed = time.perf_counter() - started
        per_job = elapsed / jobs
        self._job_s = per_job if self._job_s == 0.0 else 0.8 * self._job_s + 0.2 * per_job
        if self._on_commit is not None:
            self._on_commit(elapsed)


__all__ = ["MAX_GROUP", "QueueFull", "Writer", "WriterClosed"]
