"""DuckDB's errors as the project's: the one place that reads DuckDB's exceptions and messages."""

from __future__ import annotations

import duckdb

from gpu_rca.schemas.errors import StoreError, StoreLockedError

#: Phrases of DuckDB's message when another process holds the file's lock (they differ by platform and version).
_LOCK_PHRASES = ("could not set lock", "conflicting lock")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (DuckDB appends context lines), or its type's name."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def is_key_conflict(exc: duckdb.Error) -> bool:
    """Whether `exc` is a primary key or unique constraint refusing a row that is stored already."""
    return isinstance(exc, duckdb.ConstraintException)


def store_error(exc: duckdb.Error, path: str, *, opening: bool = False) -> StoreError:
    """The StoreError a user reads for DuckDB's `exc` on the store at `path`, in one line.

    A lock held by another process says what to do about it; while `opening` (connecting, or the first
    reads that check the schema) anything else means the file is damaged or not readable; later, the
    statement's own first line follows the store's path.
    """
    message = first_line(exc)
    if any(phrase in message.lower() for phrase in _LOCK_PHRASES):
        # What to do about it depends on the verb: the CLI adds its advice (`--server URL` to the readers).
        return StoreLockedError(f"database {path} is locked by another process (is `gpu-rca serve` running?)")
    if opening:
        return StoreError(f"cannot open {path}: it looks corrupted or unreadable ({message})")
    return StoreError(f"store {path}: {message}")


__all__ = ["first_line", "is_key_conflict", "store_error"]
