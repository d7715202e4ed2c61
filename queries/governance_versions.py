"""Tree versions read side by side: listing, diffs and the "as of version V" node mapping.

Annotations keep the (tree_version, node_id) they were made with. To read history against a chosen
version V, analytics join on a mapping that says for every node of every version where it lands
in V, through the table macro ``as_of_mapping(V)`` defined by migration 003: earlier versions through the
mapping closure that each applied migration stored, V itself as is (a deprecated node with a replacement
lands on the replacement), and later versions back onto the same node id or, for nodes V does not know
yet, onto their nearest ancestor V knows (marked not automatic). Analytics join it directly:
``JOIN as_of_mapping(?) m ON m.tree_version = a.tree_version AND m.node_id = a.node_id``.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from queries.errors import LabelgovError
from queries.results import first_row


def require_version(con: duckdb.DuckDBPyConnection, version: int) -> str:
    """The content hash of ``version``; a clear refusal when it does not exist."""
    row = first_row(con.execute("SELECT content_hash FROM tree_versions WHERE tree_version = ?", [version]))
    if row is None:
        raise LabelgovError(f"tree version {version} does not exist; `labelgov tree versions` lists them")
    return str(row[0])


def version_list(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every version with its lineage and the migration (if any) that created it."""
    return con.execute(
        """
        SELECT v.tree_version, v.parent_version, v.taxonomy, v.label, v.content_hash, v.created_by, v.created_at,
               m.proposal_id, m.migration_id, m.checksum,
               (SELECT count(*) FROM tree_nodes n WHERE n.tree_version = v.tree_version) AS nodes,
               (SELECT count(*) FROM tree_nodes n WHERE n.tree_version = v.tree_version
                    AND n.status = 'active') AS active_nodes
        FROM tree_versions v LEFT JOIN applied_migrations m ON m.to_version = v.tree_version
        ORDER BY v.tree_version
        """
    ).df()


def tree_frame(con: duckdb.DuckDBPyConnection, version: int) -> pd.DataFrame:
    require_version(con, version)
    return con.execute(
        "SELECT * EXCLUDE (tree_version) FROM tree_nodes WHERE tree_version = ? ORDER BY ordinal", [version]
    ).df()


def diff_versions(con: duckdb.DuckDBPyConnection, old: int, new: int) -> pd.DataFrame:
    """One row per changed attribute of a node between two versions: node_id, change, before, after."""
    require_version(con, old)
    require_version(con, new)
    return con.execute(
        """
        WITH a AS (SELECT * FROM tree_nodes WHERE tree_version = ?),
             b AS (SELECT * FROM tree_nodes WHERE tree_version = ?),
             j AS (SELECT coalesce(b.node_id, a.node_id) AS node_id, coalesce(b.ordinal, a.ordinal) AS ordinal,
                          a.node_id IS NULL AS added, b.node_id IS NULL AS missing,
                          a.title AS a_title, b.title AS b_title,
                          -- every compared field once, as (change, before, after), lists joined with commas
                          [{'change': 'title', 'before': a.title, 'after': b.title},
                           {'change': 'parent', 'before': a.parent_id, 'after': b.parent_id},
                           {'change': 'status', 'before': a.status, 'after': b.status},
                           {'change': 'codes', 'before': array_to_string(a.codes, ','),
                            'after': array_to_string(b.codes, ',')},
                           {'change': 'guideline', 'before': a.guideline, 'after': b.guideline},
                           {'change': 'description', 'before': a.description, 'after': b.description},
                           {'change': 'replaced_by', 'before': a.replaced_by, 'after': b.replaced_by},
                           {'change': 'consider', 'before': array_to_string(a.consider, ','),
                            'after': array_to_string(b.consider, ',')}] AS fields
                   FROM a FULL OUTER JOIN b USING (node_id)),
             changes AS (
                 SELECT node_id, ordinal, 'added' AS change, NULL AS before, b_title AS after FROM j WHERE added
                 UNION ALL SELECT node_id, ordinal, 'missing', a_title, NULL FROM j WHERE missing
                 UNION ALL SELECT node_id, ordinal, f.change, f.before, f.after
                     FROM (SELECT node_id, ordinal, unnest(fields) AS f FROM j WHERE NOT added AND NOT missing)
                     WHERE f.before IS DISTINCT FROM f.after)
        SELECT node_id, change, before, after FROM changes ORDER BY ordinal, node_id, change
        """,
        [old, new],
    ).df()


def mapping_to_version(con: duckdb.DuckDBPyConnection, target_version: int) -> pd.DataFrame:
    """[tree_version, node_id, target_node_id, automatic] for every node of every version, landing in V."""
    require_version(con, target_version)
    return con.execute("SELECT * FROM as_of_mapping(?) ORDER BY tree_version, node_id", [target_version]).df()


def store_closure(
    con: duckdb.DuckDBPyConnection, migration_id: int, base_version: int, new_version: int, edge: pd.DataFrame
) -> int:
    """Compose base's as-of mapping with the migration's edge (base_node, new_node, automatic) and store it.

    Storing the closure, not only the edge, keeps "as of V" a single join however long the chain grows.
    """
    con.register("_gov_edge", edge)
    try:
        con.execute(
            "INSERT INTO node_mappings "
            "SELECT ?, m.tree_version, m.node_id, e.new_node, m.automatic AND e.automatic, ? "
            "FROM as_of_mapping(?) m JOIN _gov_edge e ON e.base_node = m.target_node_id "
            "WHERE m.tree_version <= ?",
            [new_version, migration_id, base_version, base_version],
        )
    finally:
        con.unregister("_gov_edge")
    row = first_row(con.execute("SELECT count(*) FROM node_mappings WHERE migration_id = ?", [migration_id]))
    return int(row[0]) if row else 0
