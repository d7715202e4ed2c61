"""Cost against quality: how accuracy grows with labels per item, and which operating points are efficient.

The redundancy curve replays the crowd on gold items: each item's ``initial`` answers are put in a
seeded random order and the first k are aggregated, by plurality vote and by Dawid-Skene, for k = 1..K.
Only gold items can be scored, so only they are replayed, which keeps the refresh step cheap. An item
with fewer than k answers uses all it has, so the cost at k is what the operation would really have
paid. Refresh stores every gold item's outcome per k and method in ``d_cost_quality_items`` (and
per-annotator cost sums in ``d_cost_quality_annotators``).

Every filter chooses items, a selection of the stored rows (a filter on who answered keeps the items with
such answers). Asked with ``replay_answers``, filters on who answered (tier, annotator, stage) instead ask
"what would these answers alone buy": the replay then draws only from the answers they keep, on the spot,
which takes seconds at millions of answers (Dawid-Skene is refitted on them), so pages offer it on request.
Today's point and the escalation what-if are per-item outcomes, so any filter only chooses items for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd

from queries import frame_writes
from queries.dawid_skene import dawid_skene
from queries.escalation import ItemScope, item_scope, whatif_in_scope
from queries.filters import Filters
from queries.reliability import wilson_interval
from queries.results import arrays, first_row

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

# An item's answers in a random order fixed by the seed: hashed on what the replay reads of them, so that two
# answers in a tie are interchangeable (the same annotator, node and cost) and the order stays reproducible.
# Nodes travel as their integer value_idx: fetching and mapping half a million node id strings held up the
# Dawid-Skene fits that wait for them.
REPLAY_SQL = """
SELECT a.item_idx, a.annotator_idx, a.value_idx, coalesce(a.cost, 0) AS cost, o.gold_value,
       row_number() OVER (
           PARTITION BY a.item_idx ORDER BY hash(a.annotator_idx, a.created_at, a.node_id, a.cost, ?)
       ) AS rk
FROM d_answers a
JOIN (SELECT g.item_idx, n.value_idx AS gold_value FROM d_gold g JOIN d_nodes n USING (tree_version, node_id)) o
    USING (item_idx)
WHERE {pool}
"""
NODE_VALUES = "SELECT DISTINCT value_idx, node_id FROM d_nodes"

# The Filters fields that choose which answers the replay draws from; the rest choose items.
POOL_FIELDS = ("tiers", "annotators", "stages")
# Without a stage filter the replay draws from the crowd's first-pass answers, as the operation does.
DEFAULT_POOL = Filters(stages=("initial",))


def answer_pool(f: Filters) -> Filters:
    """The answers the replay draws from under ``f``: its tier, annotator and stage sets, first-pass by default."""
    return Filters(tiers=f.tiers, annotators=f.annotators, stages=f.stages or DEFAULT_POOL.stages)


def item_only_fields(f: Filters) -> list[str]:
    """The active fields of ``f`` on answers that the redundancy curve can only read as "items with such answers".

    Dates and tree version pick the items labelled then; the pool fields change the answers replayed instead.
    """
    return [field for field in f.answer_fields() if field not in POOL_FIELDS]

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
    con: duckdb.DuckDBPyConnection,
    methods: Sequence[str] = METHODS,
    max_k: int = MAX_K,
    seed: int = SEED,
    pool: Filters = DEFAULT_POOL,
) -> pd.DataFrame:
    """Per gold item, k and method: whether the aggregate of its first k answers is gold, and their cost.

    Only the answers ``pool`` keeps (see ``answer_pool``) are ordered, counted, paid for and fed to
    Dawid-Skene, so an item's k-th answer is the k-th of its pool answers.
    """
    return _replay_call(con, methods, max_k, seed, pool)()


def _replay_call(
    con: duckdb.DuckDBPyConnection, methods: Sequence[str], max_k: int, seed: int, pool: Filters
) -> Callable[[], pd.DataFrame]:
    """The replay as a call that needs the connection no more: its answers are read here, so refresh can run
    the fits on a thread while later steps use the connection."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods must be among {', '.join(METHODS)}")
    where, params = pool.where("a")
    answers = arrays(con, REPLAY_SQL.replace("{pool}", where), [str(seed), *params])
    if answers["item_idx"].size == 0:
        return lambda: pd.DataFrame({c: pd.Series(dtype=object if c == "method" else float) for c in ITEM_COLUMNS})
    index, n_leaves, spread = _encoding(con)
    nodes = arrays(con, NODE_VALUES)
    label_of = np.full(int(nodes["value_idx"].max()) + 1, -1, dtype=np.int64)
    label_of[nodes["value_idx"]] = [index[node] for node in nodes["node_id"]]
    item_ids, item = np.unique(answers["item_idx"], return_inverse=True)
    label = label_of[answers["value_idx"]]
    firsts = np.unique(item, return_index=True)[1]
    gold = label_of[answers["gold_value"][firsts]]
    rank = answers["rk"]
    cost = np.asarray(answers["cost"], dtype=float)
    annotator = np.asarray(answers["annotator_idx"], dtype=np.int64)
    ks = range(1, int(min(max_k, rank.max())) + 1)

    # The Dawid-Skene fits of the k are independent, and one of a few hundred thousand answers leaves a core
    # idle for much of each iteration (its passes are one or two blocks of items): two at a time fill both.
    def fit(k: int) -> npt.NDArray[np.int64]:
        keep = rank <= k
        return _dawid_skene(item[keep], annotator[keep], label[keep], item_ids.size, n_leaves, spread)

    def scored() -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        with ThreadPoolExecutor(max_workers=2) as fits:
            fitted = {k: fits.submit(fit, k) for k in ks} if "ds" in methods else {}
            rows = []
            for k in ks:
                keep = rank <= k
                spent = np.bincount(item[keep], weights=cost[keep], minlength=item_ids.size)
                for method in methods:
                    if method == "mv":
                        predicted = _plurality(item[keep], label[keep], item_ids.size, len(index), rng)
                    else:
                        predicted = fitted[k].result()
                    correct = (predicted == gold).astype(float)
                    rows.append(
                        pd.DataFrame(
                            {"item_idx": item_ids, "k": k, "method": method, "correct": correct, "cost": spent}
                        )
                    )
        return pd.concat(rows, ignore_index=True)[ITEM_COLUMNS]

    return scored


# Mean correctness and spend per k, method and branch, and over all branches, of the scored items in scope.
CURVE_SQL = """
SELECT o.k, o.method, CASE WHEN grouping(o.branch) = 1 THEN 'all' ELSE o.branch END AS branch,
       avg(o.correct) AS accuracy, avg(o.cost) AS cost_per_item, count(*) AS n_items
FROM {source} o
WHERE list_contains(?, o.method) AND {scope}
GROUP BY GROUPING SETS ((o.k, o.method, o.branch), (o.k, o.method))
ORDER BY o.method, branch, o.k
"""


ANNOTATOR_SQL = """
SELECT a.annotator_id, any_value(coalesce(a.tier, 'none')) AS tier, any_value(a.annotator_kind) AS kind,
       count(*) AS answers, coalesce(sum(a.cost), 0) AS cost,
       count(o.gold_node) AS gold_answers, coalesce(sum((a.node_id = o.gold_node)::INT), 0) AS correct
FROM d_answers a LEFT JOIN (SELECT item_idx, node_id AS gold_node FROM d_gold) o USING (item_idx)
WHERE {where}
GROUP BY a.annotator_id
"""


def refresh_work(con: duckdb.DuckDBPyConnection) -> Callable[[], pd.DataFrame]:
    """The stored replay as a call that needs the connection no more: its ten small Dawid-Skene fits leave
    cores partly idle, as does the soft-label step, which refresh runs beside them. Full: the replay draws a
    fresh sample over all gold items and Dawid-Skene is a global model."""
    return _replay_call(con, METHODS, MAX_K, SEED, DEFAULT_POOL)


def refresh_store(con: duckdb.DuckDBPyConnection, scored: pd.DataFrame) -> str:
    """Store the replay, with the per-annotator cost and quality."""
    _store_replay(con, scored, "d_cost_quality_items")
    con.execute("CREATE OR REPLACE TABLE d_cost_quality_annotators AS " + ANNOTATOR_SQL.replace("{where}", "TRUE"))
    return "full"


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Both halves at once; refresh itself runs the replay on a thread beside the soft labels."""
    return refresh_store(con, refresh_work(con)())


def _store_replay(con: duckdb.DuckDBPyConnection, scored: pd.DataFrame, table: str) -> None:
    """Write replayed outcomes with each item's branch and the columns an item scope reads (see _curve);
    ``table`` is the stored table or a temporary one."""
    if table not in ("d_cost_quality_items", "_replay"):
        raise ValueError(f"table {table!r} is not in the allow-list")
    kind = "TABLE " if table == "d_cost_quality_items" else "TEMP TABLE "
    frame_writes.run_over(
        con,
        "_scored",
        scored,
        "CREATE OR REPLACE " + kind + table + " AS SELECT s.*, coalesce(o.branch, 'none') AS branch, "  # noqa: S608 - table from the allow-list
        "o.lineage, o.source, o.segment FROM _scored s LEFT JOIN d_item_outcomes o USING (item_idx) "
        "ORDER BY s.item_idx",
    )


def redundancy_curve(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    methods: Sequence[str] = METHODS,
    max_k: int = MAX_K,
    seed: int = SEED,
    replay_answers: bool = False,
) -> pd.DataFrame:
    """Accuracy and cost per item as labels per item go 1..K, per branch of the items in scope.

    Filters choose which gold items are scored; with ``replay_answers`` tier, annotator and stage filters
    choose the answers replayed instead (``answer_pool``). Dawid-Skene learns from the pool's answers on
    every gold item, as it would be in operation, not only from the scored ones. The default sample is
    stored at refresh; another seed, K or pool replays on the spot.
    """
    pool = answer_pool(f) if replay_answers else DEFAULT_POOL
    return _curve(con, item_scope(con, f, gold_only=True), methods, max_k, seed, pool)


def _curve(
    con: duckdb.DuckDBPyConnection,
    scope: ItemScope,
    methods: Sequence[str],
    max_k: int,
    seed: int,
    pool: Filters = DEFAULT_POOL,
) -> pd.DataFrame:
    """redundancy_curve over items already scoped (only gold items are scored, so a gold-only scope will do)."""
    source = "d_cost_quality_items"
    if max_k != MAX_K or seed != SEED or pool != DEFAULT_POOL:
        source = "_replay"
        _store_replay(con, replay(con, methods=methods, max_k=max_k, seed=seed, pool=pool), source)
    # The replayed rows carry their item's lineage, source and segment, which is all an item scope reads: its
    # predicate applies to them directly, where a semi-join on the outcome table cost 100 ms under a source.
    sql = CURVE_SQL.replace("{source}", source).replace("{scope}", scope.sql)
    frame = con.execute(sql, [list(methods), *scope.params]).df()
    if source == "_replay":
        con.execute("DROP TABLE _replay")
    return frame[CURVE_COLUMNS].astype({"method": object, "branch": object})


def recommended_k(
    con: duckdb.DuckDBPyConnection, f: Filters, tolerance: float = 0.01, replay_answers: bool = False
) -> pd.DataFrame:
    """Per branch and method, the smallest k whose accuracy is within ``tolerance`` of the best k.

    One point of accuracy is usually inside the sampling noise of a few thousand gold items, so paying
    for more labels to chase it buys little; the tolerance is a parameter for operations that differ.
    """
    curve = redundancy_curve(con, f, replay_answers=replay_answers)
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


class CurrentPoint(NamedTuple):
    """Today's mean spend per item, the accuracy on gold of today's final labels, and the gold items scored."""

    cost_per_item: float
    accuracy: float
    n_gold: int


def current_point(con: duckdb.DuckDBPyConnection, f: Filters) -> CurrentPoint:
    """Today's operating point over the items in scope (spend counts every stage)."""
    return _current_point(con, item_scope(con, f))


def _current_point(con: duckdb.DuckDBPyConnection, scope: ItemScope) -> CurrentPoint:
    """current_point over items already scoped."""
    row = first_row(con.execute(
        "SELECT avg(o.total_cost), avg((o.final_node = o.gold_node)::INT) FILTER (WHERE o.gold_node IS NOT NULL), "  # noqa: S608 - scope from item_scope
        "count(o.gold_node) FROM d_item_outcomes o WHERE " + scope.sql,
        scope.params,
    ))
    if row is None:
        return CurrentPoint(float("nan"), float("nan"), 0)
    cost, accuracy = (float("nan") if v is None else float(v) for v in row[:2])
    return CurrentPoint(cost, accuracy, int(row[2]))


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


def pareto_frontier(con: duckdb.DuckDBPyConnection, f: Filters, replay_answers: bool = False) -> pd.DataFrame:
    """Every strategy's operating points with the efficient ones marked, and today's point among them.

    ``n_gold`` is the number of gold items a point is measured on. Measured accuracies (the redundancy
    replay and today's labels) carry a 95% Wilson interval; a what-if projection mixes measured crowd
    accuracy with the experts' estimated accuracy, so it has none. The three parts share one scope:
    under a filter on who answered, finding the items costs a scan of every answer, which is done once.
    """
    scope = item_scope(con, f)
    curve = _curve(con, scope, METHODS, MAX_K, SEED, answer_pool(f) if replay_answers else DEFAULT_POOL)
    overall = curve[curve["branch"] == "all"]
    whatif = whatif_in_scope(con, scope)
    now = _current_point(con, scope)
    points = pd.concat(
        [
            pd.DataFrame(
                {
                    "strategy": "redundancy_" + overall["method"],
                    "parameter": overall["k"].astype(float),
                    "cost_per_item": overall["cost_per_item"],
                    "accuracy": overall["accuracy"],
                    "n_gold": overall["n_items"],
                    "measured": True,
                }
            ),
            pd.DataFrame(
                {
                    "strategy": "escalation_threshold",
                    "parameter": whatif["threshold"],
                    "cost_per_item": whatif["projected_cost_per_item"],
                    "accuracy": whatif["projected_accuracy"],
                    "n_gold": whatif["n_gold"],
                    "measured": False,
                }
            ),
            pd.DataFrame(
                {
                    "strategy": ["current"],
                    "parameter": [np.nan],
                    "cost_per_item": [now.cost_per_item],
                    "accuracy": [now.accuracy],
                    "n_gold": [now.n_gold],
                    "measured": [True],
                }
            ),
        ],
        ignore_index=True,
    )
    points = points[np.isfinite(points["cost_per_item"]) & np.isfinite(points["accuracy"])].reset_index(drop=True)
    n = points["n_gold"].to_numpy(float)
    low, high = wilson_interval(points["accuracy"].to_numpy(float) * n, n)
    measured = points.pop("measured").to_numpy(bool)
    points["accuracy_low"] = np.where(measured, low, np.nan)
    points["accuracy_high"] = np.where(measured, high, np.nan)
    points["n_gold"] = points["n_gold"].astype("int64")
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
