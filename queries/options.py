"""The values a filter can take, for the dashboard's sidebar."""

from __future__ import annotations

from datetime import date

import duckdb
from pydantic import BaseModel

from queries.derived_base import as_of_version
from queries.results import first_row


class FilterOptions(BaseModel):
    first_day: date | None
    last_day: date | None
    tree_versions: list[int]
    as_of_version: int | None  # the tree version every answer is shown in
    branches: list[tuple[str, str, int]]  # (node_id, title, depth) of internal nodes, in tree order
    sources: list[str]
    segments: list[str]
    tiers: list[str]
    stages: list[str]
    annotators: list[str]


def _values(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [str(r[0]) for r in con.execute(sql).fetchall() if r[0] is not None]


def filter_options(con: duckdb.DuckDBPyConnection) -> FilterOptions:
    span = first_row(con.execute("SELECT min(created_at)::DATE, max(created_at)::DATE FROM annotations"))
    versions = [int(r[0]) for r in con.execute("SELECT tree_version FROM tree_versions ORDER BY 1").fetchall()]
    branches = [
        (str(r[0]), str(r[1]), int(r[2]))
        for r in con.execute(
            "SELECT node_id, title, depth FROM tree_nodes "
            "WHERE tree_version = (SELECT max(tree_version) FROM tree_versions) AND NOT is_leaf ORDER BY ordinal"
        ).fetchall()
    ]
    return FilterOptions(
        first_day=span[0] if span else None,
        last_day=span[1] if span else None,
        tree_versions=versions,
        as_of_version=as_of_version(con),
        branches=branches,
        sources=_values(con, "SELECT DISTINCT source FROM items ORDER BY 1"),
        segments=_values(con, "SELECT DISTINCT segment FROM items ORDER BY 1"),
        tiers=_values(con, "SELECT DISTINCT tier FROM annotators ORDER BY 1"),
        stages=_values(con, "SELECT DISTINCT stage FROM annotations ORDER BY 1"),
        annotators=_values(con, "SELECT annotator_id FROM annotators ORDER BY 1"),
    )
