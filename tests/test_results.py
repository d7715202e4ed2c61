"""queries.results.arrays: the Arrow read gives what the fetchnumpy read it replaced gave."""

from __future__ import annotations

import duckdb
import numpy as np

from queries.results import arrays

ROWS = """
SELECT * FROM (VALUES
    (1, 2.5, true, 'a', CAST(7 AS SMALLINT)),
    (NULL, NULL, NULL, NULL, NULL),
    (3, -1.0, false, 'c', CAST(-2 AS SMALLINT))
) t(i, x, b, s, small)
WHERE coalesce(i, 0) >= ?
"""


def test_arrays_equal_plain_fetchnumpy_arrays_nulls_included() -> None:
    con = duckdb.connect()
    expected = {k: np.asarray(v) for k, v in con.execute(ROWS, [0]).fetchnumpy().items()}
    got = arrays(con, ROWS, [0])
    assert list(got) == list(expected)
    for name, column in expected.items():
        assert got[name].dtype == column.dtype, name
        assert got[name].tolist() == column.tolist(), name
    assert got["i"].tolist() == [1, 0, 3] and got["s"].tolist() == ["a", None, "c"]


def test_arrays_reads_wide_sums_as_floats_and_empty_results_typed() -> None:
    con = duckdb.connect()
    got = arrays(con, "SELECT sum(i) AS total, CAST(2.25 AS DECIMAL(5, 2)) AS d FROM range(10) t(i)")
    assert got["total"].dtype == np.float64 and got["total"].tolist() == [45.0]
    assert got["d"].tolist() == [2.25]
    empty = arrays(con, "SELECT CAST(i AS INTEGER) AS i FROM range(3) t(i) WHERE i > ?", [5])
    assert empty["i"].dtype == np.int32 and empty["i"].size == 0


def test_arrays_after_a_result_the_caller_left_unread() -> None:
    con = duckdb.connect()
    con.execute("SELECT * FROM range(100000)").fetchone()  # DuckDB 2.x: the rest of the result is pending
    assert arrays(con, "SELECT 41 + 1 AS x")["x"].tolist() == [42]
