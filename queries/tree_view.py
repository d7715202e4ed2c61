"""The label tree as a picture: how much of the work lands on each node, and how contested it is there.

Volume is an item's label mass at a node (its share of the item's answers, or of the latent-truth
posterior), summed over items, so a node's size is "how many items' worth of labels" it holds. A node's
ambiguity is the mean of (1 - mass) over the items that put any mass on it: 0 when every item that
touches the node is unanimous about it, near 1 when the node is only ever a minority opinion.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from queries import soft_labels
from queries.filters import Filters
from queries.soft_labels import Source

NODE_COLUMNS = ["node_id", "parent_id", "title", "depth", "is_leaf", "volume", "own", "ambiguity", "items"]
CONFUSION_COLUMNS = ["first", "second", "first_title", "second_title", "pairs", "share"]
LATEST_NODES = "(SELECT * FROM d_nodes WHERE tree_version = (SELECT max(tree_version) FROM d_nodes))"


def node_volumes(con: duckdb.DuckDBPyConnection, f: Filters, source: Source = "annotations") -> pd.DataFrame:
    """One row per node of the newest tree: volume, the part not explained by its children, ambiguity.

    A shallow leaf also stands in the deeper cuts of the mass table; it is counted at its own depth only.

    ``own`` is volume minus the children's volumes (never below 0): answers that stop at an inner node.
    A sunburst drawn with "remainder" branch values then shows every node at its true volume.
    """
    rel = soft_labels.mass_relation(con, f, source)
    if rel is None:
        return soft_labels.empty_frame(NODE_COLUMNS)
    sql, params = rel
    frame = con.execute(
        "WITH m AS (SELECT node_id, depth, sum(mass) AS volume, avg(1 - mass) AS ambiguity, count(*) AS items "  # noqa: S608 - relation from soft_labels, fixed fragments
        "FROM (" + sql + ") WHERE mass > 0 GROUP BY node_id, depth), "
        "n AS (SELECT n.node_id, n.parent_id, n.title, n.depth, n.is_leaf, n.ordinal, "
        "coalesce(m.volume, 0) AS volume, m.ambiguity, coalesce(m.items, 0) AS items "
        "FROM " + LATEST_NODES + " n LEFT JOIN m USING (node_id, depth)), "
        "kids AS (SELECT parent_id AS node_id, sum(volume) AS below FROM n WHERE parent_id IS NOT NULL GROUP BY 1) "
        "SELECT n.node_id, n.parent_id, n.title, n.depth, n.is_leaf, n.volume, "
        "greatest(n.volume - coalesce(k.below, 0), 0) AS own, n.ambiguity, n.items "
        "FROM n LEFT JOIN kids k USING (node_id) ORDER BY n.ordinal",
        params,
    ).df()
    return frame[NODE_COLUMNS]


def children_confusion(con: duckdb.DuckDBPyConnection, f: Filters, node_id: str | None) -> pd.DataFrame:
    """How answers split between the children of ``node_id`` (the top level when None) on the same item.

    Counts ordered pairs of answers on one item (Krippendorff's coincidences): the diagonal is agreement,
    the rest is which children get confused with which. ``share`` is the pair count over its row's total.
    """
    if not soft_labels.table_exists(con, "d_answers"):
        return soft_labels.empty_frame(CONFUSION_COLUMNS)
    depth = 0
    if node_id is not None:
        row = con.execute("SELECT depth FROM " + LATEST_NODES + " WHERE node_id = ?", [node_id]).fetchone()  # noqa: S608 - fixed relation
        if row is None:
            return soft_labels.empty_frame(CONFUSION_COLUMNS)
        depth = int(row[0])
    where, params = f.where("a")
    under = "TRUE" if node_id is None else "a.lineage[?] = ?"
    under_params: list[object] = [] if node_id is None else [depth, node_id]
    frame = con.execute(
        "WITH c AS (SELECT a.item_idx, a.lineage[?] AS child, count(*) AS n FROM d_answers a "  # noqa: S608 - predicate from Filters.where, fixed fragments
        "WHERE " + where + " AND " + under + " AND a.depth > ? GROUP BY ALL), "
        "p AS (SELECT x.child AS first, y.child AS second, "
        "sum(CASE WHEN x.child = y.child THEN x.n * (x.n - 1) ELSE x.n * y.n END) AS pairs "
        "FROM c x JOIN c y USING (item_idx) GROUP BY ALL) "
        "SELECT p.first, p.second, t1.title AS first_title, t2.title AS second_title, p.pairs, "
        "p.pairs / nullif(sum(p.pairs) OVER (PARTITION BY p.first), 0) AS share "
        "FROM p LEFT JOIN " + LATEST_NODES + " t1 ON t1.node_id = p.first "
        "LEFT JOIN " + LATEST_NODES + " t2 ON t2.node_id = p.second "
        "WHERE p.pairs > 0 ORDER BY t1.ordinal, t2.ordinal",
        [depth + 1, *params, *under_params, depth],
    ).df()
    return frame[CONFUSION_COLUMNS]


SHARE_COLUMNS = ["week", "node_id", "title", "answers", "share"]


def weekly_shares(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per week, how the answers split among the children of the filtered branch (the top level if none).

    The label distribution over time: a planted or real shift shows as one child's share moving.
    """
    if not soft_labels.table_exists(con, "d_answers"):
        return soft_labels.empty_frame(SHARE_COLUMNS)
    depth = 0
    if f.branch is not None:
        row = con.execute("SELECT depth FROM " + LATEST_NODES + " WHERE node_id = ?", [f.branch]).fetchone()  # noqa: S608 - fixed relation
        depth = int(row[0]) if row else 0
    where, params = f.where("a")
    under = "TRUE" if depth == 0 else "a.lineage[?] = ?"
    under_params: list[object] = [] if depth == 0 else [depth, f.branch]
    frame = con.execute(
        "WITH c AS (SELECT a.week, a.lineage[?] AS node_id, count(*) AS answers FROM d_answers a "  # noqa: S608 - predicate from Filters.where, fixed fragments
        "WHERE " + where + " AND " + under + " AND a.depth > ? AND a.week IS NOT NULL GROUP BY ALL) "
        "SELECT strftime(c.week, '%Y-%m-%d') AS week, c.node_id, coalesce(n.title, c.node_id) AS title, c.answers, "
        "c.answers / sum(c.answers) OVER (PARTITION BY c.week) AS share "
        "FROM c LEFT JOIN " + LATEST_NODES + " n USING (node_id) ORDER BY c.week, n.ordinal",
        [depth + 1, *params, *under_params, depth],
    ).df()
    return frame[SHARE_COLUMNS]
