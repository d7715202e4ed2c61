"""The label tree as a picture: how much of the work lands on each node, and how contested it is there.

Volume is an item's label mass at a node (its share of the item's answers, or of the latent-truth
posterior), summed over items, so a node's size is "how many items' worth of labels" it holds. A node's
ambiguity is the mean of (1 - mass) over the items that put any mass on it: 0 when every item that
touches the node is unanimous about it, near 1 when the node is only ever a minority opinion.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from queries import frame_writes, soft_labels, tree_view_walk
from queries.filters import Filters
from queries.results import arrays, first_row
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
    cells = cell_where(f) if source == "annotations" and soft_labels.table_exists(con, VOLUME_CELLS) else None
    if cells is not None:
        where, params = cells
        per_node = (
            "SELECT x.node_id, x.depth, sum(x.volume) AS volume, sum(x.s_ambiguity) / sum(x.items) AS ambiguity, "  # noqa: S608 - predicate from cell_where, fixed table
            "CAST(sum(x.items) AS BIGINT) AS items FROM " + VOLUME_CELLS + " x WHERE " + where + " GROUP BY ALL"
        )
    else:
        rel = soft_labels.mass_relation(con, f, source)
        if rel is None:
            return soft_labels.empty_frame(NODE_COLUMNS)
        sql, params = rel
        per_node = (
            "SELECT node_id, depth, sum(mass) AS volume, avg(1 - mass) AS ambiguity, count(*) AS items "
            "FROM (" + sql + ") WHERE mass > 0 GROUP BY node_id, depth"
        )
    frame = con.execute(
        "WITH m AS (" + per_node + "), "  # noqa: S608 - fixed fragments
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
# Every parent's pairs per cell (level = the parent's depth, 0 and NULL for the top level), kept at refresh
# (see "stored cells" below): the live query self-joins every item's answers, seconds at ten million answers.
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
        row = first_row(con.execute("SELECT depth FROM " + LATEST_NODES + " WHERE node_id = ?", [node_id]))  # noqa: S608 - fixed relation
        if row is None:
            return soft_labels.empty_frame(CONFUSION_COLUMNS)
        depth = int(row[0])
    cells = cell_where(f) if soft_labels.table_exists(con, CONFUSION_TABLE) else None
    if cells is not None:
        where, params = cells
        frame = con.execute(
            "WITH p AS (SELECT x.first, x.second, CAST(sum(x.pairs) AS HUGEINT) AS pairs "  # noqa: S608 - predicate from cell_where, fixed table
            "FROM " + CONFUSION_TABLE + " x WHERE x.level = ? AND x.parent IS NOT DISTINCT FROM ? AND " + where + " "
            "GROUP BY ALL) " + CONFUSION_TAIL,
            [depth, node_id, *params],
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


# --- stored cells ------------------------------------------------------------------------------------
# Volumes and pairs are sums over items of per-item numbers, and an answer filter on one tier changes each
# item's numbers only through the item's answers of that tier. So refresh keeps, per group of items that
# every item-level filter treats alike (same consensus node, source and segment, as in soft_labels'
# summaries) and per tier (or over all tiers), the sums the pages need: a page under any mix of branch,
# source, segment and one tier adds up a few thousand rows instead of rebuilding every item's mass from ten
# million answers. Each group carries one of its items as ``item_idx``, so ``Filters.where("x")`` decides
# for the whole group. A group's source and segment are d_items', what the stored soft-label tables already
# answer item-level filters with (d_answers copies them from the same item rows).
VOLUME_CELLS = "d_tree_volume_cells"
CELL_FIELDS = frozenset({"branch", "sources", "segments", "tiers"})
# (item, tier code, place, answers): tier code 0 for answers without a tier, else the 1-based position in
# the sorted tier list bound as the parameter; a place is soft_labels' (tree_version, node_id) index. The
# answers are counted per node's integer value_idx (one node per version) and the few places joined to the
# counts: grouping ten million answers on the node id string cost half as much again.
CELL_ROWS = (
    "SELECT c.item_idx, c.tier, p.place, c.n FROM (SELECT a.item_idx, "  # noqa: S608 - fixed SQL fragments
    "CAST(coalesce(list_position(?, a.tier), 0) AS INTEGER) AS tier, a.tree_version, a.value_idx, count(*) AS n "
    "FROM d_answers a GROUP BY ALL) c JOIN (SELECT p.place, n.tree_version, n.value_idx FROM " + soft_labels.PLACES
    + " p JOIN d_nodes n USING (tree_version, node_id)) p USING (tree_version, value_idx)"
)
# Each place's depth and its rank in depth-first order (a node's subtree is a run of ranks).
PLACE_ORDER = (
    "SELECT p.place, n.depth, row_number() OVER (ORDER BY n.tree_version, n.lineage) AS rank "
    "FROM " + soft_labels.PLACES + " p JOIN d_nodes n USING (tree_version, node_id)"
)
# The volume cells (read as _cells) beside their group's representative item, source and segment.
VOLUME_ROWS = (
    "SELECT x.item_idx, d.source, d.segment, x.* EXCLUDE (item_idx) FROM _cells x "
    "JOIN (SELECT item_idx, source, segment FROM d_items) d USING (item_idx) ORDER BY x.by_tier, x.tier"
)
# The pairs likewise, summed over the chunks of items that each hold part of a cell.
PAIR_CELLS = (
    "SELECT x.item_idx, d.source, d.segment, x.tier, x.by_tier, x.level, x.parent, x.first, x.second, "
    "CAST(sum(x.pairs) AS BIGINT) AS pairs FROM _cells x "
    "JOIN (SELECT item_idx, source, segment FROM d_items) d USING (item_idx) GROUP BY ALL ORDER BY x.level, x.parent"
)


def cell_where(f: Filters) -> tuple[str, list[object]] | None:
    """A predicate over the stored cells (alias x), None when the filters need the answers.

    Items partition by their attributes, so any set of sources, segments and a branch adds up; an item
    with answers of two tiers sits in two tier cells, so at most one tier can be asked for. Dates, tree
    version, annotators and stages are not cell columns.
    """
    if set(f.model_dump(exclude_defaults=True)) - CELL_FIELDS or len(f.tiers) > 1:
        return None
    pred, params = f.where("x")
    return "x.by_tier = ? AND " + pred, [bool(f.tiers), *params]


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Volumes and pairs are sums over items, but one new answer changes its item's mass and products at
    every node: rebuilt in full, in one pass over the answers grouped by item, tier and node."""
    found = con.execute("SELECT DISTINCT tier FROM d_answers WHERE tier IS NOT NULL ORDER BY 1").fetchall()
    tiers = [r[0] for r in found]
    width = len(tiers) + 1  # tier codes per group: 0 (every tier) and one per tier
    tree = soft_labels._tree(con)
    rows = arrays(con, CELL_ROWS, [tiers])
    item = np.asarray(rows["item_idx"], dtype=np.int64)
    tier = np.asarray(rows["tier"], dtype=np.int64)
    place = np.asarray(rows["place"], dtype=np.int64)
    n = np.asarray(rows["n"], dtype=np.float64)
    del rows
    places = arrays(con, PLACE_ORDER)
    place_depth = np.zeros(tree.cut.shape[1], dtype=np.int64)
    place_depth[np.asarray(places["place"], dtype=np.int64)] = np.asarray(places["depth"], dtype=np.int64)
    place_rank = np.zeros(tree.cut.shape[1], dtype=np.int64)
    place_rank[np.asarray(places["place"], dtype=np.int64)] = np.asarray(places["rank"], dtype=np.int64)
    # Items in groups (the same consensus node, source and segment, as the soft-label sums), each group
    # represented by its first item, which carries the group's attributes and answers the item filters for it.
    group_of = soft_labels.item_groups(con).code
    order = np.argsort(group_of, kind="stable")
    firsts = soft_labels.run_starts(group_of[order])
    rep = np.zeros(int(group_of.max(initial=0)) + 1, dtype=np.int64)
    rep[group_of[order][firsts]] = order[firsts]
    # A pseudo-item is an item (tier code 0) or an item's answers of one tier; its cell is (group, tier code).
    cell_of = (group_of[:, None] * width + np.arange(width)).ravel()
    cells = rep.size * width
    siblings = tree_view_walk.sibling_pairs(tree.parent, tree.depth)
    volume, ambiguity, items = (np.zeros((cells, tree.size)) for _ in range(3))

    def walk(pseudo: np.ndarray, at: np.ndarray, answers: np.ndarray) -> tree_view_walk.PairSums:
        pairs = tree_view_walk.PairSums.empty(siblings.size, cells)
        tree_view_walk.walk(
            pseudo, at, answers, place_rank, cell_of, tree.cut, tree.depth, tree.parent, place_depth, siblings,
            volume, ambiguity, items, pairs,
        )
        return pairs

    # Every answer (tier code 0), and the answers with a tier by tier; the walk groups each by pseudo-item. The
    # two add into disjoint cells (tier code 0, the tier codes), so they run side by side (the walk releases the
    # GIL), each with its own pair table.
    tiered = np.flatnonzero(tier > 0)
    tier_rows = (item[tiered] * width + tier[tiered], place[tiered], n[tiered])
    every_row = (item * width, place, n)
    del item, tier, place, n, tiered  # only the walks' inputs are needed now (peak memory)
    with ThreadPoolExecutor(max_workers=1) as pool:
        by_tier = pool.submit(walk, *tier_rows)
        pairs = walk(*every_row).merged(by_tier.result())
    del tier_rows, every_row

    def keys(cell: np.ndarray) -> dict[str, pa.Array]:
        code = cell % width
        return {
            "item_idx": pa.array(rep[cell // width], pa.int32()),
            "tier": frame_writes.dictionary(np.maximum(code - 1, 0), tiers or [None], code == 0),
            "by_tier": pa.array(code > 0),
        }

    held = np.flatnonzero(items.ravel() > 0)
    node = held % tree.size
    volumes = pa.table({
        **keys(held // tree.size),
        "node_id": frame_writes.dictionary(node, tree.node_ids),
        "depth": pa.array(tree.depth[node], pa.int64()),
        "volume": pa.array(volume.ravel()[held]),
        "s_ambiguity": pa.array(ambiguity.ravel()[held]),
        "items": pa.array(items.ravel()[held], pa.int64()),
    })
    frame_writes.run_over(con, "_cells", volumes, "CREATE OR REPLACE TABLE " + VOLUME_CELLS + " AS " + VOLUME_ROWS)
    cell, slot = np.nonzero(pairs.table[:, : pairs.used])
    code = pairs.codes()[slot]
    first, second = siblings.first[code], siblings.second[code]
    level, parent = tree.depth[first] - 1, tree.parent[first]
    confusion = pa.table({
        **keys(cell),
        "level": pa.array(level, pa.int32()),
        "parent": frame_writes.dictionary(parent, tree.node_ids, parent == 0),
        "first": frame_writes.dictionary(first, tree.node_ids),
        "second": frame_writes.dictionary(second, tree.node_ids),
        "pairs": pa.array(pairs.table[cell, slot], pa.int64()),
    })
    frame_writes.run_over(con, "_cells", confusion, "CREATE OR REPLACE TABLE " + CONFUSION_TABLE + " AS " + PAIR_CELLS)
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
        row = first_row(con.execute("SELECT depth FROM " + LATEST_NODES + " WHERE node_id = ?", [f.branch]))  # noqa: S608 - fixed relation
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
