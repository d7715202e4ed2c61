"""The label tree as a picture: how much of the work lands on each node, and how contested it is there.

Volume is an item's label mass at a node (its share of the item's answers, or of the latent-truth
posterior), summed over items, so a node's size is "how many items' worth of labels" it holds. A node's
ambiguity is the mean of (1 - mass) over the items that put any mass on it: 0 when every item that
touches the node is unanimous about it, near 1 when the node is only ever a minority opinion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
from scipy import sparse

from queries import frame_writes, soft_labels
from queries.filters import Filters
from queries.soft_labels import Source

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

NODE_COLUMNS = ["node_id", "parent_id", "title", "depth", "is_leaf", "volume", "own", "ambiguity", "items"]
CONFUSION_COLUMNS = ["first", "second", "first_title", "second_title", "pairs", "share"]
LATEST_NODES = "(SELECT * FROM d_nodes WHERE tree_version = (SELECT max(tree_version) FROM d_nodes))"
# An answer's node row (d_answers keeps no per-answer lineage; the ancestor at depth L is n.lineage[L]).
ANSWER_NODE = "JOIN d_nodes n ON n.tree_version = a.tree_version AND n.node_id = a.node_id"


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


# Pairs between the children of one parent, with titles and each row's share; ``p`` is (first, second, pairs).
CONFUSION_TAIL = (
    "SELECT p.first, p.second, t1.title AS first_title, t2.title AS second_title, p.pairs, "
    "p.pairs / nullif(sum(p.pairs) OVER (PARTITION BY p.first), 0) AS share "
    "FROM p LEFT JOIN " + LATEST_NODES + " t1 ON t1.node_id = p.first "
    "LEFT JOIN " + LATEST_NODES + " t2 ON t2.node_id = p.second "
    "WHERE p.pairs > 0 ORDER BY t1.ordinal, t2.ordinal"
)
# The unfiltered pairs of every parent (level = the parent's depth, 0 and NULL for the top level), kept at
# refresh: the live query self-joins every item's answers, seconds at ten million answers.
CONFUSION_TABLE = "d_tree_confusion"


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
    if f.is_empty() and soft_labels.table_exists(con, CONFUSION_TABLE):
        frame = con.execute(
            "WITH p AS (SELECT first, second, CAST(pairs AS HUGEINT) AS pairs FROM " + CONFUSION_TABLE + " "  # noqa: S608 - fixed
            "WHERE level = ? AND parent IS NOT DISTINCT FROM ?) " + CONFUSION_TAIL,
            [depth, node_id],
        ).df()
        return frame[CONFUSION_COLUMNS]
    where, params = f.where("a")
    under = "TRUE" if node_id is None else "n.lineage[?] = ?"
    under_params: list[object] = [] if node_id is None else [depth, node_id]
    frame = con.execute(
        "WITH c AS (SELECT a.item_idx, n.lineage[?] AS child, count(*) AS n FROM d_answers a " + ANSWER_NODE + " "  # noqa: S608 - predicate from Filters.where, fixed fragments
        "WHERE " + where + " AND " + under + " AND a.depth > ? GROUP BY ALL), "
        "p AS (SELECT x.child AS first, y.child AS second, "
        "sum(CASE WHEN x.child = y.child THEN x.n * (x.n - 1) ELSE x.n * y.n END) AS pairs "
        "FROM c x JOIN c y USING (item_idx) GROUP BY ALL) " + CONFUSION_TAIL,
        [depth + 1, *params, *under_params, depth],
    ).df()
    return frame[CONFUSION_COLUMNS]


# Every node of every version with a dense code, and the answers per (item, node code).
NODE_CODES = (
    "SELECT row_number() OVER (ORDER BY tree_version, node_id) - 1 AS code, tree_version, node_id, lineage "
    "FROM d_nodes"
)
VOTES = (
    "SELECT v.item_idx, c.code, v.n FROM (SELECT item_idx, tree_version, node_id, count(*) AS n "  # noqa: S608 - fixed
    "FROM d_answers GROUP BY ALL) v JOIN (" + NODE_CODES + ") c USING (tree_version, node_id)"
)


def confusion_pairs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every parent's children pairs over all answers, (level, parent, first, second, pairs).

    For the children of one parent, pairs(x, y) = sum over items of n_x n_y, and n_x (n_x - 1) on the
    diagonal: the product M'M of the item x child count matrix, minus each child's answer total on the
    diagonal. One sparse product per depth answers every parent at that depth at once; a column is a
    (parent, child) pair, so a child never mixes the answers of two parents.
    """
    lineages = [list(r[0]) for r in con.execute("SELECT lineage FROM (" + NODE_CODES + ") ORDER BY code").fetchall()]  # noqa: S608 - fixed
    votes = con.execute(VOTES).fetchnumpy()
    item = np.asarray(votes["item_idx"], dtype=np.int64)
    if not lineages or item.size == 0:
        return pd.DataFrame({"level": [], "parent": [], "first": [], "second": [], "pairs": []})
    labels = np.array([*sorted({n for lin in lineages for n in lin}), None], dtype=object)
    root = labels.size - 1
    index = {name: i for i, name in enumerate(labels[:-1])}
    path = np.full((len(lineages), max(len(lin) for lin in lineages)), -1, dtype=np.int64)
    for row, lin in enumerate(lineages):
        path[row, : len(lin)] = [index[n] for n in lin]
    node = np.asarray(votes["code"], dtype=np.int64)
    count = np.asarray(votes["n"], dtype=np.int64)
    frames = []
    for level in range(path.shape[1]):
        keep = path[node, level] >= 0
        child = path[node[keep], level]
        parent = path[node[keep], level - 1] if level else np.full(child.size, root)
        pair = parent * (root + 1) + child
        present = np.bincount(pair, minlength=(root + 1) ** 2) > 0
        key = np.flatnonzero(present)
        column = (np.cumsum(present) - 1)[pair]
        m = sparse.csr_matrix((count[keep], (item[keep], column)), shape=(int(item.max()) + 1, key.size))
        gram = (m.T @ m).tocoo()
        totals = np.asarray(m.sum(axis=0)).ravel().astype(np.int64)
        first, second = gram.row, gram.col
        pairs = np.where(first == second, gram.data.astype(np.int64) - totals[first], gram.data.astype(np.int64))
        same = key[first] // (root + 1) == key[second] // (root + 1)
        first, second, pairs = key[first[same]], key[second[same]], pairs[same]
        frames.append(
            pd.DataFrame(
                {
                    "level": level,
                    "parent": labels[first // (root + 1)],
                    "first": labels[first % (root + 1)],
                    "second": labels[second % (root + 1)],
                    "pairs": pairs,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Pairs are sums over items, but one new answer changes its item's products: rebuilt in full."""
    frame = confusion_pairs(con)
    frame_writes.run_over(
        con,
        "_confusion",
        frame,
        "CREATE OR REPLACE TABLE " + CONFUSION_TABLE + " AS SELECT CAST(level AS INTEGER) AS level, "  # noqa: S608 - fixed
        "CAST(parent AS VARCHAR) AS parent, CAST(first AS VARCHAR) AS first, CAST(second AS VARCHAR) AS second, "
        "CAST(pairs AS BIGINT) AS pairs FROM _confusion ORDER BY level, parent",
    )
    return "full"


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
    under = "TRUE" if depth == 0 else "n.lineage[?] = ?"
    under_params: list[object] = [] if depth == 0 else [depth, f.branch]
    frame = con.execute(
        "WITH c AS (SELECT a.week, n.lineage[?] AS node_id, count(*) AS answers FROM d_answers a " + ANSWER_NODE + " "  # noqa: S608 - predicate from Filters.where, fixed fragments
        "WHERE " + where + " AND " + under + " AND a.depth > ? AND a.week IS NOT NULL GROUP BY ALL) "
        "SELECT strftime(c.week, '%Y-%m-%d') AS week, c.node_id, coalesce(n.title, c.node_id) AS title, c.answers, "
        "c.answers / sum(c.answers) OVER (PARTITION BY c.week) AS share "
        "FROM c LEFT JOIN " + LATEST_NODES + " n USING (node_id) ORDER BY c.week, n.ordinal",
        [depth + 1, *params, *under_params, depth],
    ).df()
    return frame[SHARE_COLUMNS]
