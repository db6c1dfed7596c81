"""Root-cause ranking: window, drivers, per-GPU signals, cause hypotheses, and the competition between them."""

from __future__ import annotations

from gpu_rca.correlate.ranking.run import DEFAULT_LOOKBACK_NS, analyze_connection

__all__ = ["DEFAULT_LOOKBACK_NS", "analyze_connection"]
