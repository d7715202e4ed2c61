"""How close consensus and the model come to gold, measured along the tree rather than only exactly.

A miss between sibling leaves is a smaller error than a miss across top-level branches; hierarchical
precision and recall (Kiritchenko et al., 2005) credit the shared ancestry. With A(n) the ancestors of
n including n itself and excluding the root,

    hP = sum |A(pred) & A(true)| / sum |A(pred)|,  hR = sum |A(pred) & A(true)| / sum |A(true)|,
    hF = 2 hP hR / (hP + hR),

summed over the items that have both. The tree distance is the number of edges between the two nodes
(|A(pred)| + |A(true)| - 2 |A(pred) & A(true)|). Accuracy at depth L compares the two nodes' places on
the cut at L (see ``queries.soft_labels``: a leaf stands for itself below its depth); a coarse
prediction above L has no place there and counts as wrong, and items whose gold label is coarser than
L are not graded at L.

Methods: ``majority`` (the plurality answer; recomputed from the filtered answers when a filter
changes which answers count), ``dawid_skene`` (when its refresh step has run), and one
``model:<name>@<version>`` per model version (the argmax of its leaf probabilities, latest prediction
per item).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from queries import answer_arrays, compiled_sums, frame_writes, soft_labels
from queries.contested import MODEL_NODE
from queries.filters import Filters
from queries.results import arrays

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

BASE_COLUMNS = ["method", "n", "exact"]
SCORE_COLUMNS = ["hP", "hR", "hF", "mean_tree_distance"]

# The latest gold label per item mapped to the as-of tree version (d_gold, built with the base tables),
# with its lineage there: after a taxonomy merge gold given under the old version still compares with
# answers mapped to the new one.
GOLD_SQL = (
    "SELECT g.item_idx, g.node_id, n.lineage, n.is_leaf FROM d_gold g "
    "JOIN d_nodes n USING (tree_version, node_id)"
)
# Each model version's latest prediction for the gold items: gold is usually a small sample.
MODELS_SQL = (
    "SELECT * FROM (SELECT DISTINCT ON (p.item_id, p.model, p.model_version) "  # noqa: S608 - fixed
    "'model:' || p.model || '@' || p.model_version AS method, x.item_idx, " + MODEL_NODE + " AS node_id "
    "FROM predictions p JOIN d_item_index x USING (item_id) WHERE p.item_id IN (SELECT item_id FROM d_gold) "
    "ORDER BY p.item_id, p.model, p.model_version, p.created_at DESC NULLS LAST)"
)
# Both are small; refresh keeps them so pages join on integers instead of scanning item ids.
TABLES = {"d_hier_gold": GOLD_SQL, "d_hier_models": MODELS_SQL}


# Every method's prediction beside gold for all items, kept at refresh: item-level filters (branch,
# source, segment) then only choose rows of it instead of rebuilding the pairs from four tables.
PAIRS = "d_hier_pairs"
# The (method, predicted, gold) combinations of the pairs in scope of one page call, read by two statements.
SCORED = "_hier_scored"


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Gold, model predictions for gold items and the pairs; small tables, always rebuilt in full."""
    for table, sql in TABLES.items():
        con.execute("CREATE OR REPLACE TABLE " + table + " AS " + sql)
    con.execute("DROP TABLE IF EXISTS " + PAIRS)
    pairs, params = _pairs(con, Filters())
    con.execute("CREATE TABLE " + PAIRS + " AS " + pairs, params)
    return "full"


def _relation(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The stored table when refresh has written it, else the same rows computed inline."""
    return table if soft_labels.table_exists(con, table) else "(" + TABLES[table] + ")"


def _kept_votes(f: Filters, gold: str) -> tuple[str, list[Any]]:
    """Votes per gold item and node among the answers the filters keep. ``gold`` has one row per item, so
    joining it (a hash join DuckDB pushes into the scan) keeps each answer once, and costs less than testing
    every answer for membership."""
    answers, params = f.answers_from("JOIN " + gold + " g ON g.item_idx = a.item_idx")
    return "SELECT a.item_idx, a.node_id, count(*) AS n FROM " + answers + " GROUP BY ALL", params  # noqa: S608 - fixed


# Plurality node of the kept votes, ties to the node first in tree order.
MAJORITY_FROM_KEPT = (
    "SELECT 'majority' AS method, item_idx, arg_max(node_id, [n, -ordinal]) AS node_id FROM kept "  # noqa: S608 - fixed
    "JOIN " + soft_labels.NODES + " USING (node_id) GROUP BY item_idx"
)


# The plurality node of each gold item's kept answers, found over the answers held in memory (_held_majority).
MAJORITY = "_hier_majority"
# Per value index, its node id and tree order (the latest version's, as soft_labels.NODES).
VALUE_NODES = (
    "SELECT DISTINCT ON (value_idx) value_idx, node_id, ordinal FROM d_nodes ORDER BY value_idx, tree_version DESC"
)


def _held_majority(con: duckdb.DuckDBPyConnection, f: Filters, gold: str) -> bool:
    """MAJORITY_FROM_KEPT's rows written to MAJORITY from the answers held in memory (answer_arrays), False
    where the process does not hold them. The held answers are sorted by item, so each gold item's answers
    are one slice of the filter's mask: a compiled count per slice, where SQL scanned every answer."""
    scope = answer_arrays.in_scope(con, f)
    if scope is None:
        return False
    columns, keep = scope

    def slices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The gold items and the bounds of their answers among the held ones (the same for every filter)."""
        items = arrays(con, "SELECT item_idx FROM " + gold + " ORDER BY item_idx")["item_idx"]  # noqa: S608 - fixed relation
        held = columns["item_idx"]
        wanted = items.astype(held.dtype)
        return items, np.searchsorted(held, wanted, "left"), np.searchsorted(held, wanted, "right")

    items, low, high = answer_arrays.kept(con, "hier_gold_slices", slices)
    nodes = answer_arrays.kept(con, "value_nodes", lambda: arrays(con, VALUE_NODES))
    rank = np.full(int(nodes["value_idx"].max(initial=-1)) + 1, np.iinfo(np.int64).max, dtype=np.int64)
    rank[nodes["value_idx"]] = nodes["ordinal"]
    best = compiled_sums.plurality_of(keep, columns["v"], low, high, rank)
    found = best >= 0
    names = np.full(rank.size, None, dtype=object)
    names[nodes["value_idx"]] = nodes["node_id"]
    rows = pa.table(
        {"item_idx": pa.array(items[found], pa.int32()), "node_id": pa.array(names[best[found]], pa.string())}
    )
    write = "CREATE OR REPLACE TEMP TABLE " + MAJORITY + " AS SELECT * FROM _majority_rows"  # noqa: S608 - fixed name
    frame_writes.run_over(con, "_majority_rows", rows, write)
    return True


def _predictions(con: duckdb.DuckDBPyConnection, f: Filters, gold: str) -> tuple[str, list[Any]]:
    """(method, item_idx, node_id) for every method that has results, restricted to the filtered items."""
    params: list[Any] = []
    if soft_labels.item_level_only(f):
        head = ""
        parts = ["SELECT 'majority' AS method, d.item_idx, d.consensus_node AS node_id FROM d_items d "  # noqa: S608
                 "WHERE d.item_idx IN (SELECT item_idx FROM " + gold + ")"]
        scope, scope_params = soft_labels.scoped("s.item_idx", f)
    elif _held_majority(con, f, gold):
        head = ""
        parts = ["SELECT 'majority' AS method, item_idx, node_id FROM " + MAJORITY]  # noqa: S608 - fixed name
        scope, scope_params = "s.item_idx IN (SELECT item_idx FROM " + MAJORITY + ")", []  # noqa: S608 - fixed name
    else:
        # Every row is a gold item's, so the items with a kept answer are the scope: the same scan that
        # counts the votes selects them, instead of a DISTINCT over every matching answer.
        kept, params = _kept_votes(f, gold)
        head = "WITH kept AS (" + kept + ") "
        parts = [MAJORITY_FROM_KEPT]
        scope, scope_params = "s.item_idx IN (SELECT item_idx FROM kept)", []
    if soft_labels.table_exists(con, "d_ds_items"):
        parts.append(
            "SELECT 'dawid_skene' AS method, d.item_idx, d.ds_node AS node_id FROM d_ds_items d "  # noqa: S608
            "WHERE d.item_idx IN (SELECT item_idx FROM " + gold + ")"
        )
    parts.append("SELECT * FROM " + _relation(con, "d_hier_models"))  # noqa: S608 - fixed
    union = " UNION ALL ".join(parts)
    return (
        head + "SELECT s.* FROM (" + union + ") s WHERE s.node_id IS NOT NULL AND " + scope,  # noqa: S608 - fixed
        [*params, *scope_params],
    )


def _stored(con: duckdb.DuckDBPyConnection, f: Filters) -> bool:
    """Whether the pairs in scope are a selection of the stored ones (else they are computed from the answers)."""
    return soft_labels.item_level_only(f) and soft_labels.table_exists(con, PAIRS)


def _pairs(con: duckdb.DuckDBPyConnection, f: Filters) -> tuple[str, list[Any]]:
    """(method, item_idx, pred lineage and leaf flag, gold lineage and leaf flag) for items with gold."""
    if _stored(con, f):
        scope, scope_params = soft_labels.scoped("g.item_idx", f)
        return "SELECT g.* FROM " + PAIRS + " g WHERE " + scope, scope_params  # noqa: S608 - fixed table name
    gold = _relation(con, "d_hier_gold")
    preds, params = _predictions(con, f, gold)
    return (
        "SELECT p.method, p.item_idx, p.node_id AS pred_node, pn.lineage AS pl, pn.is_leaf AS p_leaf, "  # noqa: S608 - fixed
        "g.node_id AS gold_node, g.lineage AS gl, g.is_leaf AS g_leaf FROM (" + preds + ") p "
        "JOIN " + gold + " g USING (item_idx) JOIN " + soft_labels.NODES + " pn ON pn.node_id = p.node_id"
    ), params


def hierarchical_accuracy(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """One row per method: n, exact, level_1..level_D, hP, hR, hF, mean_tree_distance."""
    depth = soft_labels.max_depth(con)
    columns = [*BASE_COLUMNS, *[f"level_{d}" for d in range(1, depth + 1)], *SCORE_COLUMNS]
    if depth == 0 or not soft_labels.table_exists(con, "d_items"):
        return soft_labels.empty_frame(columns)
    pairs, params = _pairs(con, f)
    combos = COMBOS.replace("{PAIRS}", pairs)
    if f.is_empty() and _stored(con, f):
        return _scores(con, combos, params, depth, columns)
    # Both statements of _scores read the combinations: counted from pairs computed from the answers, or
    # chosen from the stored ones by a lookup in every item's lineage, they are kept once in a temporary table
    # rather than found twice. The combinations, not the pairs: writing a lineage list per gold item and
    # method cost six times the query that finds them.
    con.execute("CREATE OR REPLACE TEMP TABLE " + SCORED + " AS " + combos, params)
    try:
        return _scores(con, "SELECT * FROM " + SCORED, [], depth, columns)  # noqa: S608 - fixed name
    finally:
        for table in (SCORED, MAJORITY):
            con.execute("DROP TABLE IF EXISTS " + table)


# Every measure of a pair depends on its predicted and gold nodes alone, so the pairs are counted per
# (method, predicted node, gold node) first and each distinct combination is scored once, weighted by its
# count: list intersections over a few thousand combinations rather than over every gold item of every method.
COMBOS = (
    "SELECT method, pred_node, gold_node, any_value(pl) AS pl, any_value(p_leaf) AS p_leaf, any_value(gl) AS gl, "
    "any_value(g_leaf) AS g_leaf, count(*) AS w, len(list_intersect(any_value(pl), any_value(gl))) AS common "
    "FROM ({PAIRS}) q GROUP BY method, pred_node, gold_node"
)


def _scores(
    con: duckdb.DuckDBPyConnection, combos: str, params: list[Any], depth: int, columns: list[str]
) -> pd.DataFrame:
    """hierarchical_accuracy's table from the query ``combos`` (COMBOS over _pairs, or a read of ``SCORED``)."""
    with_combos = "WITH w AS (" + combos + ") "
    scores = con.execute(
        with_combos + "SELECT method, CAST(sum(w) AS BIGINT) AS n, "
        "sum(w * CAST(pred_node = gold_node AS DOUBLE)) / sum(w) AS exact, "
        "sum(w * common) / sum(w * len(pl)) AS hP, "
        "sum(w * common) / sum(w * len(gl)) AS hR, "
        "sum(w * (len(pl) + len(gl) - 2 * common)) / sum(w) AS mean_tree_distance "
        "FROM w GROUP BY method",
        params,
    ).df()
    if scores.empty:
        return soft_labels.empty_frame(columns)
    levels = con.execute(
        with_combos + ", c AS (SELECT method, depth, w, "  # noqa: S608 - fixed SQL fragments
        "CASE WHEN len(pl) >= depth OR p_leaf THEN pl[least(depth, len(pl))] END AS p_cut, "
        "CASE WHEN len(gl) >= depth OR g_leaf THEN gl[least(depth, len(gl))] END AS g_cut "
        "FROM (SELECT *, unnest(range(1, ? + 1)) AS depth FROM w)) "
        "SELECT method, depth, sum(w * CAST(coalesce(p_cut = g_cut, FALSE) AS DOUBLE)) / sum(w) AS accuracy "
        "FROM c WHERE g_cut IS NOT NULL GROUP BY ALL",
        [*params, depth],
    ).df()
    wide = levels.pivot(index="method", columns="depth", values="accuracy")
    wide.columns = [f"level_{int(d)}" for d in wide.columns]
    out = scores.merge(wide, left_on="method", right_index=True, how="left")
    hp, hr = out["hP"], out["hR"]
    out["hF"] = (2 * hp * hr / (hp + hr)).where((hp + hr) > 0)
    for column in columns:
        if column not in out:
            out[column] = float("nan")
    order = {"majority": 0, "dawid_skene": 1}
    out = out.assign(_o=out["method"].map(order).fillna(2)).sort_values(["_o", "method"])
    return out[columns].reset_index(drop=True)
