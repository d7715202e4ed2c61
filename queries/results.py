"""Reading DuckDB results safely and fast."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def first_row(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row of an executed statement, reading the result to the end.

    DuckDB 2.x streams results: a result left partly read blocks the next statement on the same
    connection, so even single-row lookups fetch everything.
    """
    rows = result.fetchall()
    return rows[0] if rows else None


def arrays(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """A query's columns as plain numpy arrays, read fully.

    Through Arrow rather than fetchnumpy: at millions of rows that is several times faster (numeric columns
    without NULLs are not converted at all), and the statistics fetch millions of answers on every filtered
    page. A NULL reads as 0 (False in a boolean column, None in a text column), what plain arrays of
    fetchnumpy's masked arrays held.
    """
    table = arrow_table(con, sql, params)
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        # A column in several chunks is copied into one array: drop each column from the table once read, so
        # that at most one column exists twice (the answers of a refresh are hundreds of megabytes).
        out[name] = _plain(table.column(name))
        table = table.drop_columns([name])
    return out


def arrow_table(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any] | None = None
) -> pa.Table:
    """A query's result as one Arrow table, read fully: through a relation, where a DB-API result copies it."""
    # con.sql() refuses to run while the connection holds a result the caller left unread, where execute() closes
    # it: a trivial execute() leaves the connection as fetchnumpy's callers found it.
    con.execute("SELECT 1").fetchall()
    return con.sql(sql, params=params).to_arrow_table()


def _plain(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_decimal(column.type):  # DECIMAL and HUGEINT (sums of integers) read as floats, as in fetchnumpy
        column = column.cast(pa.float64())
    kind = column.type
    if column.null_count and (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        column = pc.fill_null(column, pa.scalar(False if pa.types.is_boolean(kind) else 0, type=kind))
    return column.to_numpy()
