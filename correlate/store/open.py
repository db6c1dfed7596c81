"""Opening a store file: refuse anything that is not a DuckDB database, and say why in one line.

A file is taken as it is: a foreign file is never opened, an empty one (0 bytes) is turned into a store only
when asked to (`init`, the `--init` of `ingest` and `serve`), and a read-only file or folder is opened for
reading only, and refused for writing with a line that says it is read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from gpu_rca.correlate.store.errors import store_error
from gpu_rca.schemas.errors import StoreError

_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
# Never fetch extensions from the network (a SQLite file would otherwise trigger a download attempt).
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


class ReadOnlyStore(StoreError):
    """The store file, or the folder it is in, is read-only: it can be read, not written."""


def read_only_reason(path: str) -> str | None:
    """Why `path` cannot be written (its file's or its folder's permissions, a read-only mount), or None.

    A file or folder without write permission bits counts as read-only even for root, who could write it
    anyway: someone made it read-only on purpose. DuckDB writes a `.wal` file beside the store, so the
    folder must be writable too.
    """
    file = Path(path)
    folder = file.parent
    if file.exists() and not _writable(file):
        return "the file is read-only"
    if folder.exists() and not _writable(folder):
        return f"its folder {folder} is read-only"
    return None


def _writable(path: Path) -> bool:
    # os.access sees a read-only mount even for root; the mode bits say what the owner meant.
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def connect(path: str, read_only: bool, *, init: bool = False) -> duckdb.DuckDBPyConnection:
    """Open `path`, translating DuckDB's errors into one-line StoreErrors; a foreign file is never touched.

    `init` allows an empty (0-byte) file to become a new store; without it such a file is refused.
    """
    if path != ":memory:":
        file = Path(path)
        if file.is_dir():
            raise StoreError(f"{path} is a directory, not a database file")
        if not read_only and (reason := read_only_reason(path)):
            raise ReadOnlyStore(
                f"{path} is read-only ({reason}); analyze, explain and digest can read it, writing needs it writable"
            )
        if file.exists() and file.stat().st_size > 0:
            with file.open("rb") as handle:
                header = handle.read(12)
            if header[8:12] != _DUCKDB_MAGIC:
                raise StoreError(f"{path} is not a DuckDB database; refusing to open or overwrite it")
        elif file.exists() and not init:
            raise StoreError(
                f"{path} is an empty file (0 bytes), not a gpu-rca store; refusing to use it "
                "(pass --init to ingest or serve to create a store there)"
            )
        elif read_only:
            raise StoreError(
                f"{path} does not exist or is empty; ingest something first (gpu-rca ingest --db {path} ...)"
            )
        elif file.exists():
            file.unlink()  # --init: the empty file holds nothing to lose, and DuckDB refuses to open it
        if not file.parent.exists():
            raise StoreError(f"cannot create {path}: folder {file.parent} does not exist")
    try:
        return duckdb.connect(path, read_only=read_only, config=_CONFIG)
    except duckdb.Error as exc:
        raise store_error(exc, path, opening=True) from exc


__all__ = ["ReadOnlyStore", "connect", "read_only_reason"]
