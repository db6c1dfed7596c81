"""With `gpu-rca serve --retention 7d`: delete rows older than the retention, in small steps.

Each step deletes at most `retention_batch_rows` rows of one table in its own transaction on the single
writer, so ingest requests queued meanwhile are committed between steps: retention never holds the writer
for one giant delete. The GPU inventory and `schema_meta` are kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial

from starlette.applications import Starlette

from gpu_rca.correlate.server.state import ServerState
from gpu_rca.correlate.store import Store
from gpu_rca.schemas import store as s

log = logging.getLogger("gpu_rca.serve")
_NS = 1_000_000_000

#: (table, SQL for the row's time in Unix ns): a span by its end, a digest by when it was written.
RETENTION_TIMES: tuple[tuple[str, str], ...] = (
    (s.SPANS, "end_ns"),
    (s.SPAN_EVENTS, "ts_ns"),
    (s.LOGS, "ts_ns"),
    (s.METRIC_SAMPLES, "ts_ns"),
    (s.KERNEL_EVENTS, "ts_ns"),
    (s.DIGESTS, "epoch_ns(created_at)"),
)


def delete_step(store: Store, table: str, time_sql: str, cutoff_ns: int, max_rows: int) -> int:
    """Delete at most `max_rows` rows of `table` older than `cutoff_ns`; how many were deleted."""
    row = store.connection.execute(
        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {time_sql} < ? LIMIT ?)",
        [cutoff_ns, max_rows],
    ).fetchone()
    return int(row[0]) if row else 0


def trim(
    run: Callable[[Callable[[Store], int]], int], cutoff_ns: int, max_rows: int, stop: threading.Event | None = None
) -> dict[str, int]:
    """Delete everything older than `cutoff_ns`, one bounded step at a time through `run` (the writer)."""
    deleted: dict[str, int] = {}
    for table, time_sql in RETENTION_TIMES:
        while stop is None or not stop.is_set():
            count = run(partial(delete_step, table=table, time_sql=time_sql, cutoff_ns=cutoff_ns, max_rows=max_rows))
            deleted[table] = deleted.get(table, 0) + count
            if count < max_rows:
                break
    return deleted


def start_retention(app: Starlette) -> Callable[[], None]:
    """With `retention_s` set, trim every `retention_interval_s` on a thread; returns the function that stops it."""
    state: ServerState = app.state.gpu_rca
    config = state.config
    if config.retention_s is None:
        return lambda: None
    retention_ns = int(config.retention_s * _NS)
    stop = threading.Event()

    def through_writer(job: Callable[[Store], int]) -> int:
        return state.writer.call(job, timeout_s=max(60.0, config.retention_interval_s))

    def loop() -> None:
        while not stop.is_set():
            try:
                deleted = trim(through_writer, time.time_ns() - retention_ns, config.retention_batch_rows, stop)
            except Exception as exc:
                log.warning("retention: %s: %s", type(exc).__name__, exc)
            else:
                for table, count in deleted.items():
                    state.counters.retention_deleted.labels(table=table).inc(count)
            stop.wait(config.retention_interval_s)

    thread = threading.Thread(target=loop, name="gpu-rca-retention", daemon=True)
    thread.start()

    def stop_retention() -> None:
        stop.set()
        thread.join()  # a step in progress finishes before the writer closes

    return stop_retention


__all__ = ["RETENTION_TIMES", "delete_step", "start_retention", "trim"]
