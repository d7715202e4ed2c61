"""What is in a warehouse, for `labelgov info` and the dashboard's header."""

from __future__ import annotations

import duckdb
import pandas as pd

from queries.connection import data_version
from queries.results import first_row

COUNTED_TABLES = (
    "items",
    "annotators",
    "annotations",
    "gold_labels",
    "predictions",
    "escalations",
    "tree_versions",
    "ingest_batches",
    "quarantine",
)


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per table; table names come from the fixed tuple above."""
    counts: dict[str, int] = {}
    for table in COUNTED_TABLES:
        row = first_row(con.execute("SELECT count(*) FROM " + table))  # noqa: S608 - fixed allow-list
        counts[table] = int(row[0]) if row else 0
    return counts


def tree_versions(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        """
        SELECT v.tree_version, v.taxonomy, v.label, v.created_by, v.created_at,
               count(n.node_id) AS nodes, count(*) FILTER (WHERE n.is_leaf) AS leaves,
               max(n.depth) AS depth, left(v.content_hash, 12) AS content_hash
        FROM tree_versions v LEFT JOIN tree_nodes n USING (tree_version)
        GROUP BY ALL ORDER BY v.tree_version
        """
    ).df()


def date_range(con: duckdb.DuckDBPyConnection) -> tuple[object, object]:
    row = first_row(con.execute("SELECT min(created_at), max(created_at) FROM annotations"))
    return (row[0], row[1]) if row else (None, None)


def last_ingest(con: duckdb.DuckDBPyConnection) -> dict[str, object] | None:
    frame = con.execute(
        "SELECT batch_id, kind, file_name, rows_read, rows_accepted, rows_quarantined, ingested_by, ingested_at "
        "FROM ingest_batches ORDER BY batch_id DESC LIMIT 1"
    ).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def summary(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    first, last = date_range(con)
    return {
        "data_version": data_version(con),
        "counts": table_counts(con),
        "first_annotation": first,
        "last_annotation": last,
        "last_ingest": last_ingest(con),
    }
