"""Tree versions for front ends: the list, one version's nodes, diffs and "as of version V" mappings.

Versions are immutable; a new one only comes from applying an approved proposal, so the chain of parent
versions is linear and every step has a stored mapping. Reading history as of any version is a join on
``as_of_mapping(V)``; the functions here hand the same data to the command line and the dashboard.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from queries import governance_versions as gv
from queries.taxonomy import Tree, latest_version, load_tree


def versions(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every version with parent, hash, author, and the proposal and migration that produced it."""
    return gv.version_list(con)


def show(con: duckdb.DuckDBPyConnection, version: int | None = None) -> Tree:
    return load_tree(con, version)


def diff(con: duckdb.DuckDBPyConnection, old: int, new: int | None = None) -> pd.DataFrame:
    """Changed attributes per node from ``old`` to ``new`` (the latest when None): node_id, change, before, after."""
    target = new if new is not None else latest_version(con)
    return gv.diff_versions(con, old, int(target) if target is not None else old)


def mapping_to_version(con: duckdb.DuckDBPyConnection, target_version: int) -> pd.DataFrame:
    """[tree_version, node_id, target_node_id, automatic]: where every node of every version lands in V."""
    return gv.mapping_to_version(con, target_version)
