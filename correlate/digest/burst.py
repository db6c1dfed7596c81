"""The burst trigger: `serve` writes a digest by itself when failed inference spans pile up.

A burst is at least 20 failed inference spans that are at least 5 % of the inference spans ending in the
last 5 minutes. Time is the data's own (the newest span's end), so a replayed incident triggers like a
live one. Each GPU gets at most one burst digest per 30 minutes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import duckdb

from gpu_rca.correlate.digest.queries import FAILED
from gpu_rca.correlate.store.query import one_row

MIN_FAILED = 20
MIN_SHARE = 0.05
WINDOW_NS = 5 * 60 * 10**9
COOLDOWN_NS = 30 * 60 * 10**9


@dataclass(frozen=True)
class Burst:
    """A burst worth a digest: the GPUs it hit (not in cooldown) and its counts."""

    gpus: tuple[str, ...]
    failed: int
    total: int
    start_ns: int
    end_ns: int

    def describe(self) -> str:
        """One line for the digest's trigger."""
        return f"{self.failed} of {self.total} inference spans failed within 5 min on {len(self.gpus)} GPU(s)"


class BurstDetector:
    """Decides when a burst deserves a digest; remembers, per GPU, when the last one was made."""

    def __init__(
        self,
        *,
        min_failed: int = MIN_FAILED,
        min_share: float = MIN_SHARE,
        window_ns: int = WINDOW_NS,
        cooldown_ns: int = COOLDOWN_NS,
    ) -> None:
        self.min_failed = min_failed
        self.min_share = min_share
        self.window_ns = window_ns
        self.cooldown_ns = cooldown_ns
        self._last_ns: dict[str, int] = {}
        self._lock = threading.Lock()

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
        if failed < self.min_failed or failed < self.min_share * total:
            return None
        hit = [
            r[0]
            for r in con.execute(
                f"SELECT gpu_uuid FROM spans WHERE {FAILED} AND end_ns > ? AND gpu_uuid IS NOT NULL "
                "GROUP BY gpu_uuid ORDER BY count(*) DESC, gpu_uuid",
                [start_ns],
            ).fetchall()
        ]
        with self._lock:
            fresh = tuple(g for g in hit if end_ns - self._last_ns.get(g, -self.cooldown_ns - 1) > self.cooldown_ns)
        if not fresh:
            return None
        return Burst(fresh, int(failed), int(total), start_ns, end_ns)

    def mark(self, burst: Burst) -> None:
        """Start the cooldown of the burst's GPUs (call once its digest is stored)."""
        with self._lock:
            for gpu in burst.gpus:
                self._last_ns[gpu] = burst.end_ns
