"""Reading DuckDB results safely."""

from __future__ import annotations

from typing import Any

import duckdb


def first_row(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row of an executed statement, reading the result to the end.

    DuckDB 2.x streams results: a result left partly read blocks the next statement on the same
    connection, so even single-row lookups fetch everything.
    """
    rows = result.fetchall()
    return rows[0] if rows else None
