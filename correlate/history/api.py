"""The ledger from a store path and the CLI's time options (what `gpu-rca gpus` and `GET /gpus` call)."""

from __future__ import annotations

import os
import time
from typing import Any

import duckdb

from gpu_rca.correlate.history.ledger import DEFAULT_SINCE, gpu_ledger
from gpu_rca.correlate.store import Store
from gpu_rca.schemas.errors import UsageError
from gpu_rca.schemas.timefmt import parse_time_ns


def period(since: str | None, until: str | None, *, prefix: str = "--") -> tuple[int, int]:
    """[since, until] in Unix ns: `since` defaults to 30 days back, `until` to now; UsageError when reversed."""
    now_ns = time.time_ns()
    since_ns = parse_time_ns(since or DEFAULT_SINCE, now_ns, what=f"{prefix}since")
    until_ns = parse_time_ns(until, now_ns, what=f"{prefix}until") if until else now_ns
    if since_ns >= until_ns:
        raise UsageError(f"{prefix}since must be before {prefix}until")
    return since_ns, until_ns


def ledger_document(
    con: duckdb.DuckDBPyConnection, since: str | None, until: str | None, prefix: str = "--"
) -> dict[str, Any]:
    """The ledger's JSON document for the period the options name."""
    since_ns, until_ns = period(since, until, prefix=prefix)
    return gpu_ledger(con, since_ns=since_ns, until_ns=until_ns).to_dict()


def gpus(db_path: str | os.PathLike[str] | None, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """`gpu-rca gpus --json`: the ledger of the store at `db_path` (read-only)."""
    since_ns, until_ns = period(since, until)
    with Store.open(db_path, read_only=True) as store:
        return gpu_ledger(store.connection, since_ns=since_ns, until_ns=until_ns).to_dict()


__all__ = ["gpus", "ledger_document", "period"]
