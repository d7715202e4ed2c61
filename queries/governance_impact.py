"""What a proposed tree change would do to the warehouse: counts, cost history and what-if quality.

Everything is computed against the proposal's mapping, held in TEMP TABLE ``gov_map``: for every node of
every version, the node it is as of the base version (``base_node``) and the node it would become
(``new_node``, ``automatic`` false when people must relabel). Annotations are never copied: each figure is
one aggregate over a join of the fact table with that small mapping, so a report over tens of millions of
annotations takes a few scans.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from queries.alpha import alpha_from_counts
from queries.governance_versions import first_row

GOV_MAP = "gov_map"


def create_proposed_mapping(
    con: duckdb.DuckDBPyConnection, base_version: int, edge: pd.DataFrame, affected: list[str]
) -> str:
    """TEMP TABLE gov_map: the as-of-base mapping composed with the proposal's (base_node, new_node, automatic).

    Also TEMP TABLE gov_pred with the predictions the report needs: those of items with gold labels (for
    accuracy) and those that give any probability to an affected node (for the per-node counts).
    """
    con.register("_gov_edge", edge)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE gov_map AS "
            "SELECT m.tree_version, m.node_id, m.target_node_id AS base_node, e.new_node, e.automatic, "
            "       CAST(dense_rank() OVER (ORDER BY m.target_node_id) - 1 AS INTEGER) AS base_code, "
            "       CAST(dense_rank() OVER (ORDER BY e.new_node) - 1 AS INTEGER) AS new_code "
            "FROM as_of_mapping(?) m JOIN _gov_edge e ON e.base_node = m.target_node_id",
            [base_version],
        )
    finally:
        con.unregister("_gov_edge")
    _create_predicted(con, affected)
    return GOV_MAP


def _create_predicted(con: duckdb.DuckDBPyConnection, affected: list[str]) -> None:
    """TEMP TABLE gov_pred: each prediction's top node as of the base version and under the proposal.

    The top node is the argmax after summing the probabilities that land on the same node. Predictions
    that mention no node the mappings move keep their own argmax (a list expression, no unnesting); only
    the few that do are unnested and re-summed.
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE gov_pred AS
        WITH changed AS (
            SELECT tree_version, list(node_id) AS keys FROM gov_map
            WHERE node_id <> base_node OR base_node <> new_node GROUP BY tree_version
        ),
        wanted AS (
            SELECT tree_version, list(node_id) AS keys FROM gov_map WHERE list_contains(?, base_node)
            GROUP BY tree_version
        ),
        p AS (
            SELECT p.item_id, p.model, p.model_version, p.tree_version, p.probabilities,
                   coalesce(list_has_any(map_keys(p.probabilities), c.keys), false) AS moved
            FROM predictions p LEFT JOIN changed c USING (tree_version) LEFT JOIN wanted w USING (tree_version)
            WHERE p.item_id IN (SELECT item_id FROM gold_labels)
               OR coalesce(list_has_any(map_keys(p.probabilities), w.keys), false)
        ),
        kept AS (
            SELECT item_id, model, model_version,
                   map_keys(probabilities)[list_position(map_values(probabilities),
                                                         list_max(map_values(probabilities)))] AS top
            FROM p WHERE NOT moved
        ),
        entries AS (
            SELECT row_number() OVER () AS pid, item_id, model, model_version, tree_version, probabilities
            FROM p WHERE moved
        ),
        mapped AS (
            SELECT e.pid, g.base_node, g.new_node, e.v
            FROM (SELECT pid, tree_version, unnest(map_keys(probabilities)) AS k,
                         unnest(map_values(probabilities)) AS v FROM entries) e
            JOIN gov_map g ON g.tree_version = e.tree_version AND g.node_id = e.k
        ),
        b AS (SELECT pid, arg_max(base_node, s) AS before_node
              FROM (SELECT pid, base_node, sum(v) AS s FROM mapped GROUP BY ALL) GROUP BY pid),
        a AS (SELECT pid, arg_max(new_node, s) AS after_node
              FROM (SELECT pid, new_node, sum(v) AS s FROM mapped GROUP BY ALL) GROUP BY pid)
        SELECT item_id, model, model_version, top AS before_node, top AS after_node FROM kept
        UNION ALL
        SELECT e.item_id, e.model, e.model_version, b.before_node, a.after_node
        FROM entries e JOIN b USING (pid) JOIN a USING (pid)
        """,
        [affected],
    )


def drop_proposed_mapping(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS gov_map")
    con.execute("DROP TABLE IF EXISTS gov_pred")


def affected_counts(con: duckdb.DuckDBPyConnection, nodes: list[str]) -> pd.DataFrame:
    """Per affected base node: annotations, items, annotators, gold labels and escalations in flight."""
    return con.execute(
        """
        WITH ann AS (
            SELECT g.base_node, a.item_id, a.annotator_id
            FROM annotations a JOIN gov_map g ON g.tree_version = a.tree_version AND g.node_id = a.node_id
            WHERE list_contains(?, g.base_node)
        ),
        per_node AS (
            SELECT base_node, count(*) AS annotations, count(DISTINCT item_id) AS items,
                   count(DISTINCT annotator_id) AS annotators
            FROM ann GROUP BY base_node
        ),
        gold AS (
            SELECT g.base_node, count(*) AS gold_labels
            FROM gold_labels l JOIN gov_map g ON g.tree_version = l.tree_version AND g.node_id = l.node_id
            WHERE list_contains(?, g.base_node) GROUP BY g.base_node
        ),
        flight AS (
            SELECT x.base_node, count(DISTINCT x.item_id) AS escalations_in_flight
            FROM (SELECT DISTINCT base_node, item_id FROM ann) x
            JOIN escalations e ON e.item_id = x.item_id AND e.resolved_at IS NULL
            GROUP BY x.base_node
        ),
        wanted AS (SELECT unnest(?) AS base_node)
        SELECT w.base_node AS node_id, coalesce(p.annotations, 0) AS annotations, coalesce(p.items, 0) AS items,
               coalesce(p.annotators, 0) AS annotators, coalesce(gd.gold_labels, 0) AS gold_labels,
               coalesce(f.escalations_in_flight, 0) AS escalations_in_flight
        FROM wanted w LEFT JOIN per_node p USING (base_node) LEFT JOIN gold gd USING (base_node)
        LEFT JOIN flight f USING (base_node)
        ORDER BY node_id
        """,
        [nodes, nodes, nodes],
    ).df()


def prediction_counts(con: duckdb.DuckDBPyConnection, nodes: list[str]) -> pd.DataFrame:
    """Model predictions whose top node (as of the base version) is an affected node, per model version."""
    return con.execute(
        "SELECT before_node AS node_id, model, model_version, count(*) AS predictions FROM gov_pred "
        "WHERE list_contains(?, before_node) GROUP BY ALL ORDER BY node_id, model, model_version",
        [nodes],
    ).df()


def model_accuracy(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Accuracy against gold before and after the mapping, per model version (gold mapped the same way)."""
    return con.execute(
        "WITH gold AS (SELECT l.item_id, g.base_node, g.new_node FROM gold_labels l "
        "         JOIN gov_map g ON g.tree_version = l.tree_version AND g.node_id = l.node_id) "
        "SELECT p.model, p.model_version, count(*) AS pairs, "
        "       avg(CAST(p.before_node = gold.base_node AS DOUBLE)) AS accuracy_before, "
        "       avg(CAST(p.after_node = gold.new_node AS DOUBLE)) AS accuracy_after "
        "FROM gov_pred p JOIN gold USING (item_id) GROUP BY ALL ORDER BY p.model, p.model_version"
    ).df()


def mapping_totals(con: duckdb.DuckDBPyConnection, votes: pd.DataFrame) -> dict[str, int]:
    """How many annotations stay, move automatically or need people, and how many items that touches.

    Each base node lands on exactly one new node, so whether an annotation moves or needs relabelling is
    a property of its base code, read from the small mapping table rather than from the votes.
    """
    codes = con.execute(
        "SELECT DISTINCT base_code, base_node <> new_node AS moved, NOT automatic AS doubtful FROM gov_map"
    ).df()
    base = votes["base_code"].to_numpy()
    n = votes["n"].to_numpy(dtype=np.int64)
    relabel = np.isin(base, codes.loc[codes["doubtful"], "base_code"].to_numpy())
    shifted = np.isin(base, codes.loc[codes["moved"], "base_code"].to_numpy()) & ~relabel
    return {
        "annotations": int(n.sum()),
        "unchanged": int(n[~relabel & ~shifted].sum()),
        "mapped_automatically": int(n[shifted].sum()),
        "needs_relabelling": int(n[relabel].sum()),
        "items_to_relabel": int(np.unique(votes["item"].to_numpy()[relabel]).size),
    }


def labels_per_item(votes: pd.DataFrame) -> list[float | None]:
    """Quartiles of annotations per item (linear interpolation, as quantile_cont)."""
    per_item = np.bincount(votes["item"].to_numpy(dtype=np.int64), weights=votes["n"].to_numpy(dtype=np.float64))
    per_item = per_item[per_item > 0]
    return [float(q) for q in np.quantile(per_item, [0.25, 0.5, 0.75])] if per_item.size else [None, None, None]


def cost_history(con: duckdb.DuckDBPyConnection) -> dict[str, list[float | None]]:
    """Quartiles of cost and seconds per annotation, from the warehouse's history."""
    row = first_row(
        con.execute(
            "SELECT quantile_cont(cost, [0.25, 0.5, 0.75]), quantile_cont(duration_s, [0.25, 0.5, 0.75]) "
            "FROM annotations"
        )
    )
    keys = ("cost_per_annotation", "seconds_per_annotation")
    return {k: (list(v) if v is not None else [None, None, None]) for k, v in zip(keys, row or (), strict=True)}


def vote_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per item, base node and new node (as codes, see :func:`node_names`): how many annotations.

    Items are numbered without sorting: alpha does not depend on the numbering, and the report rounds
    its figures so that summation order cannot change its hash.
    """
    return con.execute(
        """
        WITH per AS (
            SELECT a.item_id, g.base_code, g.new_code, count(*) AS n
            FROM annotations a JOIN gov_map g ON g.tree_version = a.tree_version AND g.node_id = a.node_id
            GROUP BY ALL
        ),
        ids AS (SELECT item_id, CAST(row_number() OVER () - 1 AS BIGINT) AS item
                FROM (SELECT DISTINCT item_id FROM per))
        SELECT ids.item, per.base_code, per.new_code, per.n FROM per JOIN ids USING (item_id)
        """
    ).df()


def node_names(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    """The node ids behind base_code and new_code, indexed by code."""
    base = con.execute("SELECT DISTINCT base_code, base_node FROM gov_map ORDER BY base_code").fetchall()
    new = con.execute("SELECT DISTINCT new_code, new_node FROM gov_map ORDER BY new_code").fetchall()
    return [str(r[1]) for r in base], [str(r[1]) for r in new]


def merge_conflicts(con: duckdb.DuckDBPyConnection, sample: int = 10) -> pd.DataFrame:
    """Items where annotators chose two or more nodes that the proposal makes one: disagreement it erases."""
    return con.execute(
        """
        WITH per_item AS (
            SELECT a.item_id, g.new_node, list(DISTINCT g.base_node ORDER BY g.base_node) AS chosen
            FROM annotations a JOIN gov_map g ON g.tree_version = a.tree_version AND g.node_id = a.node_id
            WHERE g.new_node IN (SELECT new_node FROM gov_map GROUP BY new_node HAVING count(DISTINCT base_node) > 1)
            GROUP BY a.item_id, g.new_node
            HAVING len(chosen) > 1
        )
        SELECT new_node, count(*) AS items, list(item_id ORDER BY item_id)[1:?] AS sample_items
        FROM per_item GROUP BY new_node ORDER BY new_node
        """,
        [sample],
    ).df()


def sample_changes(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """Row-level examples of annotations whose node would change or need relabelling."""
    return con.execute(
        """
        SELECT a.annotation_id, a.item_id, a.annotator_id, a.tree_version, a.node_id, g.base_node, g.new_node,
               g.automatic
        FROM annotations a JOIN gov_map g ON g.tree_version = a.tree_version AND g.node_id = a.node_id
        WHERE g.new_node <> g.base_node OR NOT g.automatic
        ORDER BY a.annotation_id LIMIT ?
        """,
        [limit],
    ).df()


def shared_codes(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """New codes that several base nodes land on: only there can one item hold a value twice."""
    rows = con.execute("SELECT new_code FROM gov_map GROUP BY new_code HAVING count(DISTINCT base_code) > 1")
    return np.array([r[0] for r in rows.fetchall()], dtype=np.int64)


def alpha_of(
    votes: pd.DataFrame, column: str, mask: np.ndarray | None = None, shared: np.ndarray | None = None
) -> float:
    """Nominal Krippendorff's alpha with values taken from ``column`` (base_code or new_code).

    Rows are unique per (item, base node), so values need summing per item only where several base
    nodes share a value (``shared``, see :func:`shared_codes`); only those rows are regrouped.
    """
    item = votes["item"].to_numpy(dtype=np.int64)
    code = votes[column].to_numpy(dtype=np.int64)
    n = votes["n"].to_numpy(dtype=np.float64)
    if mask is not None:
        item, code, n = item[mask], code[mask], n[mask]
    if item.size == 0:
        return float("nan")
    width = int(code.max()) + 1
    if shared is not None and shared.size:
        merge = np.isin(code, shared)
        keys, inverse = np.unique(item[merge] * width + code[merge], return_inverse=True)
        item = np.concatenate([item[~merge], keys // width])
        code = np.concatenate([code[~merge], keys % width])
        n = np.concatenate([n[~merge], np.bincount(inverse, weights=n[merge])])
    return alpha_from_counts(item, code, n, width)


def _totals(votes: pd.DataFrame, column: str, mask: np.ndarray | None) -> np.ndarray:
    code = votes[column].to_numpy(dtype=np.int64)
    n = votes["n"].to_numpy(dtype=np.float64)
    if mask is not None:
        code, n = code[mask], n[mask]
    return np.bincount(code, weights=n)


def entropy_bits(votes: pd.DataFrame, column: str, mask: np.ndarray | None = None) -> float:
    """Shannon entropy (bits) of the label distribution: how much a branch's labels still discriminate."""
    totals = _totals(votes, column, mask)
    if totals.sum() == 0:
        return float("nan")
    share = totals[totals > 0] / totals.sum()
    return float(-(share * np.log2(share)).sum())


def distribution(votes: pd.DataFrame, column: str, names: list[str]) -> dict[str, int]:
    totals = _totals(votes, column, None)
    return {names[k]: int(v) for k, v in enumerate(totals) if v > 0}
