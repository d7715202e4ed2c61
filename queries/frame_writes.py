"""Writing a DataFrame or Arrow table computed in Python into the warehouse.

The refresh runs every step inside one transaction. A frame named with ``con.register`` is a catalog
entry, and a dropped catalog entry (with the frame it points to) lives until the transaction commits even
after ``unregister``: every frame a step wrote that way stayed in memory for the rest of the refresh. A
relation made from the frame names it for one statement only, so the frame is freed when the caller drops
it.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa


def run_over(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame | pa.Table, sql: str) -> None:
    """Run one statement (``CREATE``/``INSERT``) that reads ``frame`` as the table ``name``.

    ``sql`` takes no parameters: the statements built on this read fixed table names only.
    """
    relation = con.from_arrow(frame) if isinstance(frame, pa.Table) else con.from_df(frame)
    relation.query(name, sql)


def store(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    """Replace a derived table with a frame; ``table`` comes from a module's fixed names."""
    run_over(con, "_derived_frame", frame, "CREATE OR REPLACE TABLE " + table + " AS SELECT * FROM _derived_frame")  # noqa: S608 - fixed name


def dictionary(codes: np.ndarray, names: Sequence[str | None] | np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Strings from codes into a short list of names (node ids, tiers), built by Arrow rather than as Python
    strings: DuckDB reads the column as VARCHAR, while Arrow stores a small integer per row."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(codes, dtype=np.int32), mask=null), pa.array(list(names), pa.string())
    )
