"""Reading aggregate results: the one row (or value) a query without GROUP BY always returns."""

from __future__ import annotations

from typing import Any

import duckdb


def one_row(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple[Any, ...]:
    """The row of an aggregate query (`SELECT count(*) ...`); none at all is a bug, said in one line."""
    row = con.execute(sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"an aggregate query returned no row: {' '.join(sql.split())[:120]}")
    return row


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> Any:
    """The first value of the row of an aggregate query (`SELECT count(*) ...`)."""
    return one_row(con, sql, params)[0]
