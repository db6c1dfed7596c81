"""The DuckDB store (`database`), how a file is opened (`open`) and the records it stores (`records`)."""

from __future__ import annotations

from gpu_rca.correlate.store.database import Store, default_db_path

__all__ = ["Store", "default_db_path"]
