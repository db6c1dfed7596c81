"""Reading aggregate results: the one row (or value) a query without GROUP BY always returns."""

from __future__ import annotations

from typing import Any

import duckdb


def one_row(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple[Any, ...]:
    """The row of an aggregate query (`SELECT count(*) ...`, or an INSERT's count); none is a bug, said in one line.

    The result is read to its end (`fetchall`, not `fetchone`): a result left unfinished makes DuckDB refuse
    the connection's next statement ("connection has an unfinished result"), which large inserts showed.
    """
    rows = con.execute(sql, params).fetchall()
    if not rows:
        raise RuntimeError(f"an aggregate query returned no row: {' '.join(sql.split())[:120]}")
    return tuple(rows[0])


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> Any:
    """The first value of the row of an aggregate query (`SELECT count(*) ...`)."""
    return one_row(con, sql, params)[0]
