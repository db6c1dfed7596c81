"""Opening a store file: refuse anything that is not a DuckDB database, and say why in one line."""

from __future__ import annotations

from pathlib import Path

import duckdb

from gpu_rca.correlate.store.errors import store_error
from gpu_rca.schemas.errors import StoreError

_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
# Never fetch extensions from the network (a SQLite file would otherwise trigger a download attempt).
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open `path`, translating DuckDB's errors into one-line StoreErrors; a foreign file is never touched."""
    if path != ":memory:":
        file = Path(path)
        if file.is_dir():
            raise StoreError(f"{path} is a directory, not a database file")
        if file.exists() and file.stat().st_size > 0:
            with file.open("rb") as handle:
                header = handle.read(12)
            if header[8:12] != _DUCKDB_MAGIC:
                raise StoreError(f"{path} is not a DuckDB database; refusing to open or overwrite it")
        elif read_only:
            raise StoreError(
                f"{path} does not exist or is empty; ingest something first (gpu-rca ingest --db {path} ...)"
            )
        elif file.exists():
            file.unlink()  # an empty file (mktemp, touch) holds nothing to lose; DuckDB refuses to open it
        if not file.parent.exists():
            raise StoreError(f"cannot create {path}: folder {file.parent} does not exist")
    try:
        return duckdb.connect(path, read_only=read_only, config=_CONFIG)
    except duckdb.Error as exc:
        raise store_error(exc, path, opening=True) from exc


__all__ = ["connect"]
