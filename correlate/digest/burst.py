"""The burst trigger: `serve` writes a digest by itself when failed or slow inference spans pile up.

A burst is at least 20 failed inference spans that are at least 5 % of the inference spans ending in the
last 5 minutes. Failed means errored or **slow**: a request of a latency incident, as the ranking's
latency detection (`correlate/ranking/latency.py`, `--slow auto`) defines it — far slower than comparable
requests were before the slowdown, while its stratum's p90 on that GPU stays several-fold above its
baseline for minutes. So a latency-only incident triggers a digest like a failure burst does. Time is the
data's own (the newest span's end), so a replayed incident triggers like a live one. Each GPU gets at
most one burst digest per 30 minutes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import duckdb

from gpu_rca.correlate.digest.queries import FAILED
from gpu_rca.correlate.ranking.latency import detect_slow
from gpu_rca.correlate.ranking.window import Filters
from gpu_rca.correlate.store.query import one_row

MIN_FAILED = 20
MIN_SHARE = 0.05
WINDOW_NS = 5 * 60 * 10**9
COOLDOWN_NS = 30 * 60 * 10**9
#: Wall-clock seconds between two latency detections (each reads the last hour of spans for its baselines).
LATENCY_EVERY_S = 15.0


@dataclass(frozen=True)
class Burst:
    """A burst worth a digest: the GPUs it hit (not in cooldown) and its counts."""

    gpus: tuple[str, ...]
    failed: int
    total: int
    start_ns: int
    end_ns: int
    #: Of the failed: the spans that did not error but were slow (a latency incident).
    slow: int = 0

    def describe(self) -> str:
        """One line for the digest's trigger."""
        where = f"within 5 min on {len(self.gpus)} GPU(s)"
        if not self.slow:
            return f"{self.failed} of {self.total} inference spans failed {where}"
        errored = self.failed - self.slow
        also = f" and {errored} errored" if errored else ""
        return (
            f"{self.slow} of {self.total} inference spans were far slower than comparable requests "
            f"(latency incident){also} {where}"
        )


class BurstDetector:
    """Decides when a burst deserves a digest; remembers, per GPU, when the last one was made."""

    def __init__(
        self,
        *,
        min_failed: int = MIN_FAILED,
        min_share: float = MIN_SHARE,
        window_ns: int = WINDOW_NS,
        cooldown_ns: int = COOLDOWN_NS,
        latency_every_s: float = LATENCY_EVERY_S,
    ) -> None:
        self.min_failed = min_failed
        self.min_share = min_share
        self.window_ns = window_ns
        self.cooldown_ns = cooldown_ns
        self.latency_every_s = latency_every_s
        self._last_ns: dict[str, int] = {}
        self._lock = threading.Lock()
        #: The newest span end and the monotonic time of the last latency detection (None: not yet run).
        self._latency_seen: tuple[int, float] | None = None

    def check(self, con: duckdb.DuckDBPyConnection) -> Burst | None:
        """The burst ending at the newest span, if one qualifies and hit a GPU not in cooldown."""
        row = con.execute("SELECT max(end_ns) FROM spans WHERE is_inference").fetchone()
        if row is None or row[0] is None:
            return None
        end_ns = int(row[0])
        start_ns = end_ns - self.window_ns
        total, failed = one_row(
            con,
            f"SELECT count(*), count(*) FILTER (WHERE {FAILED}) FROM spans WHERE is_inference AND end_ns > ?",
            [start_ns],
        )
        slow = 0
        if not self._qualifies(failed, total) and self._latency_due(end_ns):
            slow = self._slow_spans(con, start_ns, end_ns)
        if not self._qualifies(failed + slow, total):
            return None
        # Errored spans, then (when detection ran) the slow ones: each GPU by how many of its spans failed.
        failing = f"SELECT gpu_uuid FROM spans WHERE {FAILED} AND end_ns > ? AND gpu_uuid IS NOT NULL"
        if slow:
            failing += (
                " UNION ALL SELECT s.gpu_uuid FROM spans s JOIN rk_slow r USING (trace_id, span_id) "
                "WHERE s.is_inference AND s.end_ns > ? AND r.end_ns > ? AND s.gpu_uuid IS NOT NULL"
            )
        hit = [
            r[0]
            for r in con.execute(
                f"SELECT gpu_uuid FROM ({failing}) GROUP BY gpu_uuid ORDER BY count(*) DESC, gpu_uuid",
                [start_ns] * (3 if slow else 1),
            ).fetchall()
        ]
        with self._lock:
            fresh = tuple(g for g in hit if end_ns - self._last_ns.get(g, -self.cooldown_ns - 1) > self.cooldown_ns)
        if not fresh:
            return None
        return Burst(fresh, failed + slow, total, start_ns, end_ns, slow=slow)

    def _qualifies(self, failed: int, total: int) -> bool:
        return failed >= self.min_failed and failed >= self.min_share * total

    def _latency_due(self, end_ns: int) -> bool:
        """Whether to run latency detection now: new spans arrived and the last run is `latency_every_s` old."""
        now = time.monotonic()
        with self._lock:
            seen = self._latency_seen
            if seen is not None and (seen[0] == end_ns or now - seen[1] < self.latency_every_s):
                return False
            self._latency_seen = (end_ns, now)
        return True

    def _slow_spans(self, con: duckdb.DuckDBPyConnection, start_ns: int, end_ns: int) -> int:
        """How many inference spans ending in the window are slow (leaves them in the temp table `rk_slow`)."""
        if not detect_slow(con, Filters(), start_ns, end_ns):
            return 0
        row = con.execute("SELECT count(*) FROM rk_slow WHERE end_ns > ?", [start_ns]).fetchone()
        return int(row[0]) if row else 0

    def mark(self, burst: Burst) -> None:
        """Start the cooldown of the burst's GPUs (call once its digest is stored)."""
        with self._lock:
            for gpu in burst.gpus:
                self._last_ns[gpu] = burst.end_ns
