"""Cost against quality: how accuracy grows with labels per item, and which operating points are efficient.

The redundancy curve replays the crowd on gold items: each item's ``initial`` answers are put in a
seeded random order and the first k are aggregated, by plurality vote and by Dawid-Skene, for k = 1..K.
Only gold items can be scored, so only they are replayed, which keeps the refresh step cheap. An item
with fewer than k answers uses all it has, so the cost at k is what the operation would really have
paid. Refresh stores every gold item's outcome per k and method in ``d_cost_quality_items`` (and
per-annotator cost sums in ``d_cost_quality_annotators``), so any filter is a selection of stored rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd

from queries import frame_writes
from queries.dawid_skene import dawid_skene
from queries.escalation import ItemScope, item_scope, scoped_items, whatif_in_scope
from queries.filters import Filters
from queries.results import first_row

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

METHODS = ("mv", "ds")
MAX_K = 10
SEED = 0
# An annotator needs about this many answers per class to fill a confusion table; below it Dawid-Skene
# fits them with a single accuracy, which a few dozen gold-item answers can support.
ANSWERS_PER_CLASS_FOR_CONFUSION = 10
CURVE_COLUMNS = ["k", "method", "branch", "accuracy", "cost_per_item", "n_items"]
ITEM_COLUMNS = ["item_idx", "k", "method", "correct", "cost"]

REPLAY_SQL = """
SELECT a.item_idx, a.annotator_idx, a.node_id, coalesce(a.cost, 0) AS cost, o.gold_node,
       row_number() OVER (PARTITION BY a.item_idx ORDER BY hash(a.annotation_id || ?)) AS rk
FROM d_answers a JOIN (SELECT item_idx, node_id AS gold_node FROM d_gold) o USING (item_idx)
WHERE a.stage = 'initial'
"""

# Leaves are the classes; internal nodes are coarse labels spread evenly over their subtree's leaves.
# A node id keeps the shape it has in the newest tree version that contains it.
NODES_SQL = """
SELECT DISTINCT ON (node_id) node_id, is_leaf, lineage
FROM d_nodes ORDER BY node_id, tree_version DESC
"""


def _encoding(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, int], int, npt.NDArray[np.float64]]:
    """Node id -> label index (leaves first), the number of leaf classes, and the coarse spread matrix."""
    nodes = con.execute(NODES_SQL).df().sort_values(["is_leaf", "node_id"], ascending=[False, True])
    ids = nodes["node_id"].tolist()
    index = {node: i for i, node in enumerate(ids)}
    n_leaves = int(nodes["is_leaf"].sum())
    spread = np.zeros((len(ids), max(n_leaves, 1)))
    for leaf_pos, lineage in enumerate(nodes["lineage"].iloc[:n_leaves]):
        for ancestor in lineage:
            spread[index[ancestor], leaf_pos] = 1.0
    spread /= np.maximum(spread.sum(axis=1, keepdims=True), 1.0)
    return index, n_leaves, spread


def _plurality(
    item: npt.NDArray[np.int64], label: npt.NDArray[np.int64], n_items: int, n_labels: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Most frequent label per item; ties broken at random so that k=2 is not biased to tree order."""
    counts = np.bincount(item * n_labels + label, minlength=n_items * n_labels).reshape(n_items, n_labels)
    return (counts + rng.random(counts.shape) * 0.5).argmax(axis=1)


def _dawid_skene(
    item: npt.NDArray[np.int64],
    annotator: npt.NDArray[np.int64],
    label: npt.NDArray[np.int64],
    n_items: int,
    n_leaves: int,
    spread: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    per_annotator = np.bincount(annotator)
    fit = dawid_skene(
        item,
        annotator,
        label,
        n_classes=n_leaves,
        spread=spread,
        one_coin=per_annotator < ANSWERS_PER_CLASS_FOR_CONFUSION * n_leaves,
    )
    out = np.full(n_items, -1, dtype=np.int64)
    out[fit.item_ids] = fit.labels
    return out


def replay(
    con: duckdb.DuckDBPyConnection, methods: Sequence[str] = METHODS, max_k: int = MAX_K, seed: int = SEED
) -> pd.DataFrame:
    """Per gold item, k and method: whether the aggregate of its first k answers is gold, and their cost."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods must be among {', '.join(METHODS)}")
    answers = con.execute(REPLAY_SQL, [str(seed)]).df()
    if answers.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "method" else float) for c in ITEM_COLUMNS})
    index, n_leaves, spread = _encoding(con)
    item_ids, item = np.unique(answers["item_idx"].to_numpy(), return_inverse=True)
    label = answers["node_id"].map(index).to_numpy(np.int64)
    firsts = np.unique(item, return_index=True)[1]
    gold = answers["gold_node"].iloc[firsts].map(index).fillna(-1).to_numpy(np.int64)
    rank = answers["rk"].to_numpy()
    cost = answers["cost"].to_numpy(float)
    annotator = answers["annotator_idx"].to_numpy(np.int64)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(1, int(min(max_k, rank.max())) + 1):
        keep = rank <= k
        spent = np.bincount(item[keep], weights=cost[keep], minlength=item_ids.size)
        for method in methods:
            if method == "mv":
                predicted = _plurality(item[keep], label[keep], item_ids.size, len(index), rng)
            else:
                predicted = _dawid_skene(item[keep], annotator[keep], label[keep], item_ids.size, n_leaves, spread)
            correct = (predicted == gold).astype(float)
            rows.append(
                pd.DataFrame({"item_idx": item_ids, "k": k, "method": method, "correct": correct, "cost": spent})
            )
    return pd.concat(rows, ignore_index=True)[ITEM_COLUMNS]


# Mean correctness and spend per k, method and branch, and over all branches, of the scored items in scope.
CURVE_SQL = """
SELECT c.k, c.method, CASE WHEN grouping(c.branch) = 1 THEN 'all' ELSE c.branch END AS branch,
       avg(c.correct) AS accuracy, avg(c.cost) AS cost_per_item, count(*) AS n_items
FROM {source} c
WHERE list_contains(?, c.method) AND {scope}
GROUP BY GROUPING SETS ((c.k, c.method, c.branch), (c.k, c.method))
ORDER BY c.method, branch, c.k
"""


ANNOTATOR_SQL = """
SELECT a.annotator_id, any_value(coalesce(a.tier, 'none')) AS tier, any_value(a.annotator_kind) AS kind,
       count(*) AS answers, coalesce(sum(a.cost), 0) AS cost,
       count(o.gold_node) AS gold_answers, coalesce(sum((a.node_id = o.gold_node)::INT), 0) AS correct
FROM d_answers a LEFT JOIN (SELECT item_idx, node_id AS gold_node FROM d_gold) o USING (item_idx)
WHERE {where}
GROUP BY a.annotator_id
"""


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Full: the replay draws a fresh sample over all gold items and Dawid-Skene is a global model."""
    _store_replay(con, replay(con), "d_cost_quality_items")
    con.execute("CREATE OR REPLACE TABLE d_cost_quality_annotators AS " + ANNOTATOR_SQL.replace("{where}", "TRUE"))
    return "full"


def _store_replay(con: duckdb.DuckDBPyConnection, scored: pd.DataFrame, table: str) -> None:
    """Write replayed outcomes with each item's branch; ``table`` is the stored table or a temporary one."""
    if table not in ("d_cost_quality_items", "_replay"):
        raise ValueError(f"table {table!r} is not in the allow-list")
    kind = "TABLE " if table == "d_cost_quality_items" else "TEMP TABLE "
    frame_writes.run_over(
        con,
        "_scored",
        scored,
        "CREATE OR REPLACE " + kind + table + " AS SELECT s.*, coalesce(o.branch, 'none') AS branch "
        "FROM _scored s LEFT JOIN d_item_outcomes o USING (item_idx) ORDER BY s.item_idx",
    )


def redundancy_curve(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    methods: Sequence[str] = METHODS,
    max_k: int = MAX_K,
    seed: int = SEED,
) -> pd.DataFrame:
    """Accuracy and cost per item as labels per item go 1..K, per branch of the items in scope.

    Filters choose which gold items are scored, not which answers the aggregators learn from: Dawid-
    Skene is fitted on every gold item, as it would be in operation. The default sample is stored at
    refresh; another seed or K replays on the spot.
    """
    return _curve(con, item_scope(con, f, gold_only=True), methods, max_k, seed)


def _curve(
    con: duckdb.DuckDBPyConnection, scope: ItemScope, methods: Sequence[str], max_k: int, seed: int
) -> pd.DataFrame:
    """redundancy_curve over items already scoped (only gold items are scored, so a gold-only scope will do)."""
    source = "d_cost_quality_items"
    if max_k != MAX_K or seed != SEED:
        source = "_replay"
        _store_replay(con, replay(con, methods=methods, max_k=max_k, seed=seed), source)
    where, params = scoped_items(scope, "c.item_idx")
    sql = CURVE_SQL.replace("{source}", source).replace("{scope}", where)
    frame = con.execute(sql, [list(methods), *params]).df()
    if source == "_replay":
        con.execute("DROP TABLE _replay")
    return frame[CURVE_COLUMNS].astype({"method": object, "branch": object})


def recommended_k(con: duckdb.DuckDBPyConnection, f: Filters, tolerance: float = 0.01) -> pd.DataFrame:
    """Per branch and method, the smallest k whose accuracy is within ``tolerance`` of the best k.

    One point of accuracy is usually inside the sampling noise of a few thousand gold items, so paying
    for more labels to chase it buys little; the tolerance is a parameter for operations that differ.
    """
    curve = redundancy_curve(con, f)
    if curve.empty:
        return pd.DataFrame(
            columns=[
                "branch",
                "method",
                "recommended_k",
                "accuracy",
                "cost_per_item",
                "best_k",
                "best_accuracy",
                "n_items",
            ]
        )
    best = curve.loc[curve.groupby(["branch", "method"])["accuracy"].idxmax()]
    best = best.rename(columns={"k": "best_k", "accuracy": "best_accuracy"})[
        ["branch", "method", "best_k", "best_accuracy"]
    ]
    joined = curve.merge(best, on=["branch", "method"])
    good = joined[joined["accuracy"] >= joined["best_accuracy"] - tolerance]
    chosen = good.loc[good.groupby(["branch", "method"])["k"].idxmin()]
    return chosen.rename(columns={"k": "recommended_k"})[
        ["branch", "method", "recommended_k", "accuracy", "cost_per_item", "best_k", "best_accuracy", "n_items"]
    ].reset_index(drop=True)


def current_point(con: duckdb.DuckDBPyConnection, f: Filters) -> tuple[float, float]:
    """Today's mean spend per item (every stage) and the accuracy on gold of today's final labels."""
    return _current_point(con, item_scope(con, f))


def _current_point(con: duckdb.DuckDBPyConnection, scope: ItemScope) -> tuple[float, float]:
    """current_point over items already scoped."""
    row = first_row(con.execute(
        "SELECT avg(o.total_cost), avg((o.final_node = o.gold_node)::INT) FILTER (WHERE o.gold_node IS NOT NULL) "
        "FROM d_item_outcomes o WHERE " + scope.sql,
        scope.params,
    ))
    return (
        (float("nan"), float("nan"))
        if row is None
        else (float("nan") if row[0] is None else float(row[0]), float("nan") if row[1] is None else float(row[1]))
    )


# Differences smaller than this share of an axis's largest value are ties: two strategies' costs are sums
# of the same numbers in different orders (DuckDB's parallel aggregates), which differ in the last bits and
# would otherwise make a point flip on and off the frontier between runs.
TIE = 1e-9


def non_dominated(cost: npt.ArrayLike, accuracy: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True where no other point costs no more and is at least as accurate, and better in one of the two
    (by more than the rounding noise TIE)."""
    c = np.asarray(cost, dtype=float)[:, None]
    a = np.asarray(accuracy, dtype=float)[:, None]
    finite = np.isfinite(c[:, 0]) & np.isfinite(a[:, 0])
    eps_c = TIE * max(1.0, float(np.max(np.abs(c[finite]), initial=0.0)))
    eps_a = TIE * max(1.0, float(np.max(np.abs(a[finite]), initial=0.0)))
    other_c, other_a = c.T, a.T  # row i compares point i with every other point j (columns)
    no_worse = (other_c <= c + eps_c) & (other_a >= a - eps_a)
    better = (other_c < c - eps_c) | (other_a > a + eps_a)
    return ~(no_worse & better).any(axis=1) & finite


def pareto_frontier(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Every strategy's operating points with the efficient ones marked, and today's point among them.

    The three parts share one scope: under a filter on who answered, finding the items costs a scan of
    every answer, which is done once.
    """
    scope = item_scope(con, f)
    curve = _curve(con, scope, METHODS, MAX_K, SEED)
    overall = curve[curve["branch"] == "all"]
    whatif = whatif_in_scope(con, scope)
    cost, accuracy = _current_point(con, scope)
    points = pd.concat(
        [
            pd.DataFrame(
                {
                    "strategy": "redundancy_" + overall["method"],
                    "parameter": overall["k"].astype(float),
                    "cost_per_item": overall["cost_per_item"],
                    "accuracy": overall["accuracy"],
                }
            ),
            pd.DataFrame(
                {
                    "strategy": "escalation_threshold",
                    "parameter": whatif["threshold"],
                    "cost_per_item": whatif["projected_cost_per_item"],
                    "accuracy": whatif["projected_accuracy"],
                }
            ),
            pd.DataFrame(
                {"strategy": ["current"], "parameter": [np.nan], "cost_per_item": [cost], "accuracy": [accuracy]}
            ),
        ],
        ignore_index=True,
    )
    points = points[np.isfinite(points["cost_per_item"]) & np.isfinite(points["accuracy"])].reset_index(drop=True)
    points["on_frontier"] = non_dominated(points["cost_per_item"], points["accuracy"])
    points["is_current"] = points["strategy"] == "current"
    return points.astype({"strategy": "object"})


# Keys cost_per_correct accepts and the column of the per-annotator sums each groups by.
COST_GROUPS = {"annotator": "annotator_id", "tier": "tier"}

COST_SQL = """
SELECT {key} AS name, any_value(tier) AS tier, sum(answers) AS answers, sum(cost) AS cost,
       sum(cost) / sum(answers) AS cost_per_answer, sum(gold_answers) AS gold_answers, sum(correct) AS correct,
       sum(correct) / nullif(sum(gold_answers), 0) AS accuracy,
       (sum(cost) / sum(answers)) / (sum(correct) / nullif(sum(gold_answers), 0)) AS cost_per_correct
FROM {source}
GROUP BY ALL
ORDER BY cost_per_correct DESC NULLS LAST, name
"""


def cost_per_correct(con: duckdb.DuckDBPyConnection, f: Filters, by: str = "annotator") -> pd.DataFrame:
    """What one correct label costs: spend per answer divided by accuracy on gold.

    Spend uses every answer in scope and accuracy only the gold items, so an annotator with little gold
    still gets a cost (and a null accuracy) rather than vanishing from the table.
    """
    if by not in COST_GROUPS:
        raise ValueError(f"by must be one of {', '.join(COST_GROUPS)}")
    if f.is_empty():
        source, params = "d_cost_quality_annotators", []
    else:
        where, params = f.where("a")
        source = "(" + ANNOTATOR_SQL.replace("{where}", where) + ")"
    sql = COST_SQL.replace("{key}", COST_GROUPS[by]).replace("{source}", source)
    frame = con.execute(sql, params).df()
    return frame.astype({"name": "object", "tier": "object"})
