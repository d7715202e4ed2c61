"""Checks that an applied migration kept every annotation, and the relabelling evidence that follows it.

The checks read the mapping back from storage rather than trusting the code that wrote it: counts per
node as of the new version must equal the counts as of the base version carried along the migration's
node mapping, and nothing active may still point at a deprecated node that has a replacement.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from queries.governance_versions import first_row

WILSON_Z = 1.959963984540054


def counts_as_of(con: duckdb.DuckDBPyConnection, version: int) -> pd.DataFrame:
    """Annotations per node when every annotation is read as of ``version``: node_id, annotations."""
    return con.execute(
        "SELECT m.target_node_id AS node_id, count(*) AS annotations FROM annotations a "
        "JOIN as_of_mapping(?) m ON m.tree_version = a.tree_version AND m.node_id = a.node_id "
        "GROUP BY 1 ORDER BY 1",
        [version],
    ).df()


def unmapped_annotations(con: duckdb.DuckDBPyConnection, version: int) -> int:
    """Annotations whose (version, node) has no landing place in ``version``: must be zero."""
    row = first_row(
        con.execute(
            "SELECT count(*) FROM annotations a ANTI JOIN as_of_mapping(?) m "
            "ON m.tree_version = a.tree_version AND m.node_id = a.node_id",
            [version],
        )
    )
    return int(row[0]) if row else 0


def stale_references(con: duckdb.DuckDBPyConnection, version: int) -> pd.DataFrame:
    """Active nodes, and stored mappings into ``version``, that lead to a deprecated node with a replacement."""
    return con.execute(
        """
        WITH gone AS (SELECT node_id FROM tree_nodes
                      WHERE tree_version = ? AND status = 'deprecated' AND replaced_by IS NOT NULL)
        SELECT 'node ' || n.node_id AS referrer, g.node_id AS refers_to
        FROM tree_nodes n JOIN gone g ON n.replaced_by = g.node_id OR list_contains(n.consider, g.node_id)
        WHERE n.tree_version = ? AND n.status = 'active'
        UNION ALL
        SELECT 'mapping of version ' || m.from_version || ' node ' || m.from_node, g.node_id
        FROM node_mappings m JOIN gone g ON m.to_node = g.node_id
        WHERE m.to_version = ?
        ORDER BY 1
        """,
        [version, version, version],
    ).df()


def _wilson(successes: np.ndarray, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / totals
        z2 = WILSON_Z**2
        centre = (p + z2 / (2 * totals)) / (1 + z2 / totals)
        half = WILSON_Z * np.sqrt(p * (1 - p) / totals + z2 / (4 * totals**2)) / (1 + z2 / totals)
    return centre - half, centre + half


def split_shares(con: duckdb.DuckDBPyConnection, migration_id: int) -> pd.DataFrame:
    """Estimated shares of each candidate among the queued items, from relabelled answers and from models.

    Relabelled answers are the annotations made on queued items in the new version (or later) that chose a
    candidate; model evidence is the mean predicted probability of each candidate, renormalised over the
    candidates. ``projected_items`` scales a share to the whole queue of that node.
    """
    frame = con.execute(
        """
        WITH q AS (SELECT q.item_id, q.from_node, unnest(q.candidates) AS child, m.to_version
                   FROM relabel_queue q JOIN applied_migrations m USING (migration_id) WHERE q.migration_id = ?),
             queued AS (SELECT from_node, count(DISTINCT item_id) AS queued_items FROM q GROUP BY from_node),
             relabelled AS (
                 SELECT q.from_node, q.child, count(a.annotation_id) AS n
                 FROM q LEFT JOIN annotations a
                   ON a.item_id = q.item_id AND a.node_id = q.child AND a.tree_version >= q.to_version
                 GROUP BY ALL),
             modelled AS (
                 SELECT q.from_node, q.child, count(p.item_id) AS n, avg(p.probabilities[q.child]) AS p
                 FROM q LEFT JOIN predictions p
                   ON p.item_id = q.item_id AND p.tree_version >= q.to_version
                      AND map_contains(p.probabilities, q.child)
                 GROUP BY ALL)
        SELECT r.from_node, r.child, queued.queued_items, r.n AS relabelled, m.n AS predictions, m.p AS mean_probability
        FROM relabelled r JOIN modelled m USING (from_node, child) JOIN queued USING (from_node)
        ORDER BY r.from_node, r.child
        """,
        [migration_id],
    ).df()
    if frame.empty:
        return frame
    totals = frame.groupby("from_node")["relabelled"].transform("sum").to_numpy(dtype=float)
    hits = frame["relabelled"].to_numpy(dtype=float)
    frame["relabelled_share"] = np.where(totals > 0, hits / np.where(totals > 0, totals, 1), np.nan)
    low, high = _wilson(hits, np.where(totals > 0, totals, np.nan))
    frame["share_low"], frame["share_high"] = low, high
    model_total = frame.groupby("from_node")["mean_probability"].transform("sum")
    frame["model_share"] = frame["mean_probability"] / model_total.where(model_total > 0)
    frame["projected_items"] = frame["relabelled_share"] * frame["queued_items"]
    return frame
