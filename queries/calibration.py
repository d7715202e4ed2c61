"""Calibration: do the model's probabilities, and the annotators' stated confidence, mean what they say?

The model gives probabilities over leaves. At tree level L the probability of a node is the sum over
its leaves, on the same cut as the soft labels (a leaf ending above L stands for itself), so "is the
model calibrated about the branch" and "about the leaf" are both answerable. Reliability is top-label:
confidence is the largest probability on the cut, a hit is that node being gold (or, against human
soft labels, the share of human answers on it). Brier is the multi-class score, the sum over nodes of
(p - y)^2, between 0 and 2.

Temperature scaling divides the log-probabilities by T and renormalises; T > 1 softens an overconfident
model. T is fitted on gold items whose gold is a leaf, by minimising the negative log-likelihood over
log T. Leaves missing from a prediction's map (sparse maps drop tiny probabilities) get ``FLOOR`` so
that a wrong, confident prediction costs a large but finite loss.

A model is one version of a classifier, keyed ``name@version`` as in ``queries.hierarchy_accuracy``:
versions of one classifier differ in accuracy and in calibration, so pooling them would score, and fit
one temperature to, a mixture that was never deployed. Pages may name a classifier without its version
when it has only one.

Refresh materialises ``d_pred_leaf`` (the newest prediction per item, classifier and version, one row
per leaf), ``d_pred_models`` (each model's key, classifier, version and how many items it scored),
``d_pred_level`` (per item, model and level: top node, confidence, hit and Brier against gold and
against soft labels) and ``d_calibration`` / ``d_temperature`` for the unfiltered view.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel
from scipy.optimize import minimize_scalar

from queries import answer_arrays, frame_writes
from queries.errors import LabelgovError
from queries.escalation import ItemScope, item_scope, scoped_items
from queries.filters import Filters
from queries.results import arrays, first_row
from queries.soft_labels import table_exists as _table_exists

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

FloatArray = npt.NDArray[np.float64]
FLOOR = 1e-6
BINS = 10
# log T is searched in this interval: temperatures from 0.05 to 20 cover any plausible miscalibration.
LOG_T_BOUNDS = (-3.0, 3.0)

NODES = "(SELECT DISTINCT ON (node_id) node_id, is_leaf, lineage FROM d_nodes ORDER BY node_id, tree_version DESC)"

# The newest prediction per item and model version is picked by row id first, so that only the chosen maps are
# unnested; dividing by the map's sum makes the sparse maps (small probabilities dropped) sum to one again.
# The item index is joined per prediction, before the maps are unnested: joined per entry, the string key
# was probed seven times as often (a third of the step's SQL on the large demo).
D_PRED_LEAF = """
CREATE OR REPLACE TABLE d_pred_leaf AS
WITH newest AS (
    SELECT max_by(rowid, (created_at, batch_id)) AS r FROM predictions GROUP BY item_id, model, model_version
), entries AS (
    SELECT x.item_idx, p.item_id, p.model, p.model_version, list_sum(map_values(p.probabilities)) AS total,
           unnest(map_keys(p.probabilities)) AS node_id, unnest(map_values(p.probabilities)) AS p
    FROM predictions p JOIN d_item_index x USING (item_id) WHERE p.rowid IN (SELECT r FROM newest)
)
SELECT e.item_idx, e.item_id, e.model, e.model_version, e.node_id, e.p / e.total AS p
FROM entries e
WHERE e.p > 0
"""

# The key is made on the small table, a row per model; the big ones keep the classifier and version as ingested.
D_PRED_MODELS = """
CREATE OR REPLACE TABLE d_pred_models AS
SELECT model_name || '@' || model_version AS model, model_name, model_version, items
FROM (SELECT model AS model_name, model_version, count(DISTINCT item_idx) AS items FROM d_pred_leaf
      GROUP BY model, model_version)
"""

# d_pred_level is computed in numpy on integer node codes, a chunk of items at a time: DuckDB's GROUP BY over
# every (item, model, level, node) row, keyed on strings and with two arg_max, took most of the step.
# Codes number every node and every id on a lineage in id order, so a tie for the top node goes to the
# smallest id; ``member`` marks the nodes (a prediction's leaf counts only when it is one).
NODE_CODES = """
SELECT c.node_id, n.node_id IS NOT NULL AS member, coalesce(n.is_leaf, false) AS is_leaf, n.lineage
FROM (SELECT node_id FROM {nodes} n UNION SELECT unnest(lineage) FROM {nodes} n) c
LEFT JOIN {nodes} n USING (node_id)
ORDER BY c.node_id
"""
# A code list, bound as two parameters: the ids and their codes.
CODE_LIST = "(SELECT unnest(?::VARCHAR[]) AS node_id, unnest(?::INTEGER[]) AS code)"
# A model's code is its place in ``models``: both sort by MODEL_ORDER.
MODEL_ORDER = "items DESC, model"
LEAF_ROWS = f"""
SELECT l.item_idx, m.code AS model, c.code AS node, l.p
FROM d_pred_leaf l
JOIN (SELECT model_name, model_version, (row_number() OVER (ORDER BY {MODEL_ORDER}) - 1)::INTEGER AS code
      FROM d_pred_models) m ON m.model_name = l.model AND m.model_version = l.model_version
JOIN {{codes}} c USING (node_id)
ORDER BY l.item_idx
"""  # noqa: S608 - the order is a fixed text
GOLD_ROWS = "SELECT o.item_idx, c.code AS node FROM d_item_outcomes o JOIN {codes} c ON c.node_id = o.gold_node"
# Soft shares on ids that are no node's cut still count in the item's sum of squared shares.
SOFT_ROWS = """
SELECT s.item_idx, s.depth::INTEGER AS level, coalesce(c.code, -1) AS node, s.mass AS q
FROM d_soft_mass s LEFT JOIN {codes} c USING (node_id)
WHERE s.source = 'annotations' AND s.depth BETWEEN 1 AND ?
ORDER BY s.item_idx
"""
WRITE_PRED_LEVEL = """
CREATE OR REPLACE TABLE d_pred_level AS
SELECT item_idx, CAST(model AS VARCHAR) AS model, level, CAST(top_node AS VARCHAR) AS top_node, conf,
       CAST(gold_node AS VARCHAR) AS gold_node, gold_hit, gold_brier, soft_hit, soft_brier
FROM _pred_level_frame
"""
# Cells (rows x cut nodes) of one chunk's widest matrix, 32 MB of doubles: bounds the step's numpy memory.
CHUNK_CELLS = 1 << 22

TABLE_COLUMNS = [
    "model",
    "scope",
    "name",
    "n",
    "ece",
    "brier",
    "temperature",
    "ece_after_temperature",
    "brier_after_temperature",
]
BIN_COLUMNS = ["bin", "mean_confidence", "accuracy", "n", "level"]


# --- the statistics, on arrays --------------------------------------------------------------------------


def bin_index(confidence: npt.ArrayLike, bins: int = BINS) -> npt.NDArray[np.int64]:
    """Equal-width bins on [0, 1], right-closed like scikit-learn's calibration_curve (0.1 falls in bin 0)."""
    c = np.asarray(confidence, dtype=float)
    return np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)


def expected_calibration_error(confidence: npt.ArrayLike, hit: npt.ArrayLike, bins: int = BINS) -> float:
    """Sum over bins of (bin share) x |mean hit - mean confidence|, which is sum |hits - confidences| per bin
    over all rows: one bincount, where a calibration table computes dozens of these. NaN without data."""
    c = np.asarray(confidence, dtype=float)
    if c.size == 0:
        return float("nan")
    gap = np.bincount(bin_index(c, bins), weights=np.asarray(hit, dtype=float) - c, minlength=bins)
    return float(np.abs(gap).sum() / c.size)


def brier(prob: FloatArray, target: npt.NDArray[np.int64]) -> FloatArray:
    """Per-row multi-class Brier score of probability rows against target columns."""
    rows = np.arange(prob.shape[0])
    return (prob * prob).sum(axis=1) - 2.0 * prob[rows, target] + 1.0


def scale(prob: FloatArray, temperature: float) -> FloatArray:
    """Temperature-scaled rows: p^(1/T) renormalised, with missing leaves at FLOOR."""
    logits = np.log(np.maximum(prob, FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def nll_function(prob: FloatArray, target: npt.NDArray[np.int64]) -> Callable[[float], float]:
    """Mean NLL of ``target`` as a function of T, with the logs taken once for the whole search.

    Rows are shifted so their largest log-probability is 0; for T > 0 the shift cancels between the
    log-sum-exp and the target term, and exp never overflows.
    """
    logp = np.log(np.maximum(prob, FLOOR))
    top = logp.max(axis=1, keepdims=True)
    logp -= top
    picked = logp[np.arange(prob.shape[0]), target]
    # A model scores a few leaves of each item; the rest sit at FLOOR and share one log-probability per row, so
    # their exponentials are one per row times their number: the search's cost follows the scored leaves.
    at_floor = prob <= FLOOR
    n_floor = at_floor.sum(axis=1)
    floor_logp = np.log(FLOOR) - top[:, 0]
    row, _ = np.nonzero(~at_floor)
    scored = logp[~at_floor]

    def value(temperature: float) -> float:
        sums = np.bincount(row, weights=np.exp(scored / temperature), minlength=prob.shape[0])
        sums += n_floor * np.exp(floor_logp / temperature)
        return float(np.mean(np.log(sums) - picked / temperature))

    return value


def fit_temperature_arrays(prob: FloatArray, target: npt.NDArray[np.int64]) -> float:
    """The T minimising the NLL of ``target`` under scaled ``prob``, searched over log T."""
    loss = nll_function(prob, target)
    result = minimize_scalar(lambda log_t: loss(float(np.exp(log_t))), bounds=LOG_T_BOUNDS, method="bounded")
    return float(np.exp(result.x))


# --- the gold-item matrix ---------------------------------------------------------------------------------


class GoldMatrix(BaseModel):
    """Gold items' leaf probabilities and, per level, each leaf's cut node and each item's gold on it."""

    model_config = {"arbitrary_types_allowed": True}

    items: npt.NDArray[np.int64]  # item indices, sorted: the rows
    prob: FloatArray  # items x leaves
    branch: npt.NDArray[np.object_]
    leaf_target: npt.NDArray[np.int64]  # gold leaf column, -1 when gold is not a leaf
    deepest: npt.NDArray[np.int64]  # per item: its deepest level with a gold row
    cut: list[npt.NDArray[np.int64]]  # per level: leaf column -> cut node index
    gold_cut: list[npt.NDArray[np.int64]]  # per level: the gold's cut node index, -1 when gold is above it

    def rows(self, keep: npt.NDArray[np.bool_]) -> GoldMatrix | None:
        """The matrix of the items ``keep`` marks, as gold_matrix builds it for a scope of those items (its
        levels end at the deepest level they reach); None for no items."""
        if not keep.any():
            return None
        levels = int(self.deepest[keep].max())
        return GoldMatrix(
            items=self.items[keep],
            prob=self.prob[keep],
            branch=self.branch[keep],
            leaf_target=self.leaf_target[keep],
            deepest=self.deepest[keep],
            cut=self.cut[:levels],
            gold_cut=[g[keep] for g in self.gold_cut[:levels]],
        )


def _model_names(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(key, classifier name) of every model, in MODEL_ORDER; empty before the first refresh."""
    if not _table_exists(con, "d_pred_models"):
        return []
    return con.execute("SELECT model, model_name FROM d_pred_models ORDER BY " + MODEL_ORDER).fetchall()  # noqa: S608 - fixed text


def models(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every model as ``name@version``, the one that scored the most items first (ties by key): the first is
    what the pages show unless told otherwise, and the list is what they offer to choose from."""
    return [key for key, _ in _model_names(con)]


def gold_matrix(con: duckdb.DuckDBPyConnection, f: Filters, model: str) -> GoldMatrix | None:
    """Dense probabilities of the gold items in scope; the gold on each cut comes from ``d_pred_level``.

    A process that holds the answers in memory (answer_arrays) keeps every gold item's matrix per model and
    data version, and a filter chooses its rows: building it is strings and pandas per gold item, most of a
    filtered calibration question, and the same for every filter.
    """
    scope = item_scope(con, f, gold_only=True)
    if f.is_empty() or not answer_arrays.holds(con):
        return _gold_matrix(con, scope, model)
    every = answer_arrays.kept(con, "gold_matrix " + model, lambda: _gold_matrix(con, ItemScope("TRUE", []), model))
    if every is None:
        return None
    listed = arrays(con, "SELECT o.item_idx FROM d_item_outcomes o WHERE " + scope.sql, scope.params)["item_idx"]  # noqa: S608 - scope from item_scope
    size = int(max(every.items.max(), listed.max(initial=-1))) + 1
    return every.rows(answer_arrays.member_table(listed, size)[every.items])


def _gold_matrix(con: duckdb.DuckDBPyConnection, scope: ItemScope, model: str) -> GoldMatrix | None:
    leaves = con.execute("SELECT node_id, lineage FROM " + NODES + " n WHERE is_leaf ORDER BY node_id").df()  # noqa: S608 - fixed text
    # Each probability's leaf column found in SQL (-1: not a leaf of the tree), not by string lookups in pandas.
    rows = arrays(
        con,
        "SELECT l.item_idx, CAST(coalesce(list_position(?, l.node_id), 0) - 1 AS INTEGER) AS leaf, l.p "
        "FROM d_pred_leaf l JOIN d_item_outcomes o USING (item_idx) "
        "JOIN d_pred_models m ON m.model_name = l.model AND m.model_version = l.model_version "
        "WHERE m.model = ? AND o.gold_node IS NOT NULL AND " + scope.sql,
        [leaves["node_id"].tolist(), model, *scope.params],
    )
    if rows["item_idx"].size == 0:
        return None
    gold = con.execute(
        "SELECT p.item_idx, p.level, p.gold_node, o.gold_node AS gold_leaf, coalesce(o.branch, 'none') AS branch "
        "FROM d_pred_level p JOIN d_item_outcomes o USING (item_idx) "
        "WHERE p.model = ? AND o.gold_node IS NOT NULL AND " + scope.sql + " ORDER BY p.item_idx, p.level",
        [model, *scope.params],
    ).df()
    leaf_col = pd.Series(np.arange(len(leaves)), index=leaves["node_id"])
    items = np.unique(gold["item_idx"].to_numpy())
    prob = np.zeros((items.size, len(leaves)))
    known = rows["leaf"] >= 0
    prob[np.searchsorted(items, rows["item_idx"][known]), rows["leaf"][known]] = rows["p"][known]
    prob /= np.maximum(prob.sum(axis=1, keepdims=True), 1e-300)
    levels = int(gold["level"].max())
    cut, gold_cut = [], []
    for level in range(1, levels + 1):
        # The cut at a level: each leaf's ancestor there, or the leaf itself when it ends above the level.
        names = leaves["lineage"].map(lambda lin, lv=level: lin[min(lv, len(lin)) - 1])
        on_cut = pd.Series(np.arange(names.nunique()), index=sorted(names.unique()))
        cut.append(on_cut[names].to_numpy())
        at = gold[gold["level"] == level].set_index("item_idx")["gold_node"].reindex(items)
        gold_cut.append(at.map(on_cut).fillna(-1).to_numpy(np.int64))
    first = gold.drop_duplicates("item_idx").set_index("item_idx").reindex(items)
    return GoldMatrix(
        items=items.astype(np.int64),
        prob=prob,
        branch=first["branch"].to_numpy(object),
        leaf_target=first["gold_leaf"].map(leaf_col).fillna(-1).to_numpy(np.int64),
        deepest=gold.groupby("item_idx")["level"].max().reindex(items).to_numpy(np.int64),
        cut=cut,
        gold_cut=gold_cut,
    )


def level_probabilities(prob: FloatArray, cut: npt.NDArray[np.int64]) -> FloatArray:
    """Sum leaf columns into their cut nodes: the model's probability of each node at that level.

    Columns are grouped by node and added with ``reduceat`` rather than multiplied by a one-hot matrix:
    the matrix product goes to a multithreaded BLAS whose spinning threads doubled the CPU time of a
    filtered calibration table.
    """
    out = np.zeros((prob.shape[0], int(cut.max()) + 1))
    order = np.argsort(cut, kind="stable")
    nodes, starts = np.unique(cut[order], return_index=True)
    if nodes.size == cut.size:  # every leaf its own node (the leaf level): a copy, nothing to add
        out[:, cut] = prob
    else:
        out[:, nodes] = np.add.reduceat(prob[:, order], starts, axis=1)
    return out


def _scores(prob: FloatArray, target: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Top-label confidence, hit and Brier per row with a target (rows with target -1 dropped)."""
    keep = target >= 0
    p, t = prob[keep], target[keep]
    return p.max(axis=1), (p.argmax(axis=1) == t).astype(float), brier(p, t)


class TemperatureFit(BaseModel):
    """A fitted temperature and what it does to the log loss; ``model`` is the ``name@version`` key."""

    model: str
    temperature: float
    nll_before: float
    nll_after: float
    n: int


def _fit(m: GoldMatrix, mask: npt.NDArray[np.bool_], model: str) -> TemperatureFit | None:
    keep = mask & (m.leaf_target >= 0)
    if not keep.any():
        return None
    prob, target = m.prob[keep], m.leaf_target[keep]
    loss = nll_function(prob, target)
    t = fit_temperature_arrays(prob, target)
    return TemperatureFit(model=model, temperature=t, nll_before=loss(1.0), nll_after=loss(t), n=int(keep.sum()))


def _fits(m: GoldMatrix, model: str) -> dict[tuple[str, str], TemperatureFit | None]:
    """One temperature for all gold items in scope and one per branch."""
    fits = {("overall", "all"): _fit(m, np.ones(m.branch.size, dtype=bool), model)}
    fits.update({("branch", str(b)): _fit(m, m.branch == b, model) for b in sorted(set(m.branch))})
    return fits


def _table_rows(
    m: GoldMatrix, model: str, bins: int, fits: dict[tuple[str, str], TemperatureFit | None]
) -> list[dict[str, object]]:
    """Before/after rows for overall (the leaf cut), each level, and each branch (with its own T)."""
    every = np.ones(m.prob.shape[0], dtype=bool)
    overall = fits[("overall", "all")]
    leaf_level = len(m.cut) - 1
    scopes: list[tuple[str, str, npt.NDArray[np.bool_], int, TemperatureFit | None]] = [
        ("overall", "all", every, leaf_level, overall)
    ]
    scopes += [("level", str(lv + 1), every, lv, overall) for lv in range(len(m.cut))]
    scopes += [("branch", str(b), m.branch == b, leaf_level, fits[("branch", str(b))]) for b in sorted(set(m.branch))]
    # Every level's probabilities of all items, before and after the overall temperature, computed once: the
    # overall row is the leaf level again, and a branch's rows before temperature are a slice of the leaf level.
    at_level = {lv: level_probabilities(m.prob, m.cut[lv]) for lv in range(len(m.cut))}
    scaled_at_level: dict[int, FloatArray] = {}
    if overall is not None:
        scaled = scale(m.prob, overall.temperature)
        scaled_at_level = {lv: level_probabilities(scaled, m.cut[lv]) for lv in range(len(m.cut))}
    out = []
    for scope, name, mask, level, fit in scopes:
        target = m.gold_cut[level][mask]
        conf, hit, score = _scores(at_level[level][mask], target)
        row: dict[str, object] = {
            "model": model,
            "scope": scope,
            "name": name,
            "n": int(conf.size),
            "ece": expected_calibration_error(conf, hit, bins),
            "brier": float(score.mean()) if conf.size else None,
            "temperature": None,
            "ece_after_temperature": None,
            "brier_after_temperature": None,
        }
        if fit is not None and conf.size:
            if fit is overall:
                after = scaled_at_level[level][mask]
            else:
                after = level_probabilities(scale(m.prob[mask], fit.temperature), m.cut[level])
            conf_t, hit_t, score_t = _scores(after, target)
            row.update(
                temperature=fit.temperature,
                ece_after_temperature=expected_calibration_error(conf_t, hit_t, bins),
                brier_after_temperature=float(score_t.mean()),
            )
        out.append(row)
    return out


class NodeCodes(BaseModel):
    """Node ids by code and, per level (row 0 is level 1), the level's cut as matrix columns; -1 for none.

    A level's matrices have a column per node on its cut only, in code order, not one per code: the
    reductions over them are most of the work.
    """

    model_config = {"arbitrary_types_allowed": True}

    names: list[str]
    member: npt.NDArray[np.bool_]
    cut: npt.NDArray[np.int64]  # levels x codes: the column a leaf's probability goes to
    gold: npt.NDArray[np.int64]  # levels x codes: the gold node's code at the level when this node is gold
    place: npt.NDArray[np.int64]  # levels x codes: the code's column, -1 when it is not on the cut
    columns: list[npt.NDArray[np.int64]]  # per level: the code of each column


def node_codes(con: duckdb.DuckDBPyConnection, levels: int) -> NodeCodes:
    """The codes and, from the lineages, d_pred_level's cut and gold rules as lookup tables.

    On the cut a leaf ending above the level stands for itself; as gold only a leaf does, so an inner
    gold node has no gold at levels below it.
    """
    rows = con.execute(NODE_CODES.replace("{nodes}", NODES)).fetchall()
    code = {row[0]: i for i, row in enumerate(rows)}
    member = np.array([row[1] for row in rows], dtype=bool)
    on_cut = np.full((levels, len(rows)), -1, dtype=np.int64)
    gold = np.full((levels, len(rows)), -1, dtype=np.int64)
    for i, (_, is_member, is_leaf, lineage) in enumerate(rows):
        if not is_member:
            continue
        for lv in range(levels):
            on_cut[lv, i] = code[lineage[min(lv + 1, len(lineage)) - 1]]
            if len(lineage) > lv:
                gold[lv, i] = code[lineage[lv]]
            elif is_leaf:
                gold[lv, i] = code[lineage[-1]]
    place = np.full((levels, len(rows)), -1, dtype=np.int64)
    columns = [np.unique(on_cut[lv, member]) for lv in range(levels)]
    for lv, used in enumerate(columns):
        place[lv, used] = np.arange(used.size)
    cut = np.where(member, np.take_along_axis(place, np.maximum(on_cut, 0), axis=1), -1)
    return NodeCodes(names=[row[0] for row in rows], member=member, cut=cut, gold=gold, place=place, columns=columns)


Arrays = dict[str, npt.NDArray[np.generic]]

PRED_LEVEL_SCHEMA = pa.schema(
    [
        ("item_idx", pa.int32()),
        ("model", pa.dictionary(pa.int32(), pa.string())),
        ("level", pa.int64()),
        ("top_node", pa.dictionary(pa.int32(), pa.string())),
        ("conf", pa.float64()),
        ("gold_node", pa.dictionary(pa.int32(), pa.string())),
        ("gold_hit", pa.float64()),
        ("gold_brier", pa.float64()),
        ("soft_hit", pa.float64()),
        ("soft_brier", pa.float64()),
    ]
)


def _bounds(item_idx: npt.NDArray[np.int32], items: range) -> tuple[int, int]:
    """The slice of sorted ``item_idx`` inside ``items``; the bounds take the array's type, so that numpy
    does not convert the whole array to compare it with Python ints."""
    lo, hi = np.searchsorted(item_idx, np.array([items.start, items.stop], dtype=item_idx.dtype))
    return int(lo), int(hi)


def _level_chunk(
    leaf: Arrays, soft: Arrays, gold_of: npt.NDArray[np.int64], codes: NodeCodes, keys: pa.Array, items: range
) -> list[pa.Table]:
    """d_pred_level's rows for the items in ``items`` (leaf and soft rows sorted by item), one table per level.

    Rows are the (item, model) pairs with a prediction; the level's probabilities and the soft shares are
    dense rows x cut matrices, so top node, confidence and both Brier scores are row reductions. A gold or
    soft node off the cut meets no probability, as in a join on the node.
    """
    lo, hi = _bounds(leaf["item_idx"], items)
    pair = (leaf["item_idx"][lo:hi].astype(np.int64) - items.start) * len(keys) + leaf["model"][lo:hi]
    present = np.zeros(len(items) * len(keys), dtype=bool)
    present[pair] = True
    row = (np.cumsum(present) - 1)[pair]
    kept = np.flatnonzero(present)
    local = kept // len(keys)
    n = kept.size
    node, p = leaf["node"][lo:hi], leaf["p"][lo:hi]
    s_lo, s_hi = _bounds(soft["item_idx"], items)
    s_item = soft["item_idx"][s_lo:s_hi].astype(np.int64) - items.start
    s_level, s_node, s_q = soft["level"][s_lo:s_hi], soft["node"][s_lo:s_hi], soft["q"][s_lo:s_hi]
    gold_item = gold_of[items.start + local]
    every = np.arange(n)
    names = pa.array(codes.names, pa.string())
    tables = []
    for lv, column_code in enumerate(codes.columns):
        k = column_code.size
        prob = np.bincount(row * k + codes.cut[lv, node], weights=p, minlength=n * k).reshape(n, k)
        top = prob.argmax(axis=1)  # the first largest: columns are in code order, so the smallest id of a tie
        top_code = column_code[top]
        sum_sq = np.einsum("ij,ij->i", prob, prob)
        gold = np.where(gold_item >= 0, codes.gold[lv, np.maximum(gold_item, 0)], -1)
        gold_column = np.where(gold >= 0, codes.place[lv, np.maximum(gold, 0)], -1)
        gold_p = np.where(gold_column >= 0, prob[every, np.maximum(gold_column, 0)], 0.0)
        no_gold = gold < 0
        on = s_level == lv + 1
        s_column = np.where(s_node >= 0, codes.place[lv, np.maximum(s_node, 0)], -1)
        known = on & (s_column >= 0)
        share = np.bincount(s_item[known] * k + s_column[known], weights=s_q[known], minlength=len(items) * k)
        share = share.reshape(len(items), k)[local]
        q_sq = np.bincount(s_item[on], weights=s_q[on] ** 2, minlength=len(items))[local]
        no_soft = (np.bincount(s_item[on], minlength=len(items)) == 0)[local]
        columns = [
            pa.array((items.start + local).astype(np.int32)),
            pa.DictionaryArray.from_arrays(pa.array((kept % len(keys)).astype(np.int32)), keys),
            pa.array(np.full(n, lv + 1, dtype=np.int64)),
            pa.DictionaryArray.from_arrays(pa.array(top_code.astype(np.int32)), names),
            pa.array(prob[every, top]),
            pa.DictionaryArray.from_arrays(pa.array(gold.astype(np.int32), mask=no_gold), names),
            pa.array((top_code == gold).astype(np.float64), mask=no_gold),
            pa.array(sum_sq - 2 * gold_p + 1, mask=no_gold),
            pa.array(share[every, top], mask=no_soft),
            pa.array(sum_sq - 2 * np.einsum("ij,ij->i", prob, share) + q_sq, mask=no_soft),
        ]
        tables.append(pa.Table.from_arrays(columns, schema=PRED_LEVEL_SCHEMA))
    return tables


def _pred_level_table(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """d_pred_level from d_pred_leaf, the gold and the soft labels, in chunks of items that bound memory."""
    depth = first_row(con.execute("SELECT max(depth) FROM d_nodes"))
    levels = int(depth[0]) if depth and depth[0] is not None else 0
    codes = node_codes(con, levels)
    keys = pa.array(models(con), pa.string())
    member_codes = np.flatnonzero(codes.member)
    members: list[object] = [[codes.names[c] for c in member_codes], member_codes.tolist()]
    leaf = arrays(con, LEAF_ROWS.replace("{codes}", CODE_LIST), members)
    gold = arrays(con, GOLD_ROWS.replace("{codes}", CODE_LIST), members)
    if _table_exists(con, "d_soft_mass"):
        every_code = [codes.names, list(range(len(codes.names))), levels]
        soft = arrays(con, SOFT_ROWS.replace("{codes}", CODE_LIST), every_code)
    else:
        soft = {name: np.zeros(0, np.int32) for name in ("item_idx", "level", "node")} | {"q": np.zeros(0)}
    n_items = int(leaf["item_idx"].max()) + 1 if leaf["item_idx"].size else 0
    gold_of = np.full(n_items, -1, dtype=np.int64)
    mine = gold["item_idx"] < n_items
    gold_of[gold["item_idx"][mine]] = gold["node"][mine]
    widest = max((column_code.size for column_code in codes.columns), default=1)
    span = max(1, CHUNK_CELLS // max(widest * len(keys), 1))
    # Chunks are independent and mostly numpy, which releases the GIL for most of each: two threads share them.
    with ThreadPoolExecutor(max_workers=2) as pool:
        chunks = pool.map(
            lambda start: _level_chunk(leaf, soft, gold_of, codes, keys, range(start, min(start + span, n_items))),
            range(0, n_items, span),
        )
        tables = [table for chunk in chunks for table in chunk]
    return pa.concat_tables(tables) if tables else PRED_LEVEL_SCHEMA.empty_table()


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Full: the newest prediction per item can change with any batch and T is fitted on all gold items."""
    con.execute(D_PRED_LEAF)
    con.execute(D_PRED_MODELS)
    frame_writes.run_over(con, "_pred_level_frame", _pred_level_table(con), WRITE_PRED_LEVEL)
    rows: list[dict[str, object]] = []
    fits: list[dict[str, object]] = []
    for model in models(con):
        m = gold_matrix(con, Filters(), model)
        if m is None:
            continue
        fitted = _fits(m, model)
        rows += _table_rows(m, model, BINS, fitted)
        fits += [
            {"scope": scope, "name": name, **fit.model_dump()}
            for (scope, name), fit in fitted.items()
            if fit is not None
        ]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS).astype(
        {"temperature": float, "ece_after_temperature": float, "brier_after_temperature": float, "n": "int64"}
    )
    temps = pd.DataFrame(fits, columns=["scope", "name", "model", "temperature", "nll_before", "nll_after", "n"])
    frame_writes.store(con, "d_calibration", table)
    frame_writes.store(con, "d_temperature", temps)
    return "full"


# --- page functions ----------------------------------------------------------------------------------------


def _stored_scope(con: duckdb.DuckDBPyConnection, f: Filters) -> tuple[str, str] | None:
    """The stored (scope, name) answering ``f``: all items, or one top-level branch; None otherwise."""
    if f.is_empty():
        return "overall", "all"
    if f == Filters(branch=f.branch):
        top = first_row(con.execute("SELECT count(*) FROM d_nodes WHERE node_id = ? AND depth = 1", [f.branch]))
        if top and top[0]:
            return "branch", str(f.branch)
    return None


def _resolve_model(con: duckdb.DuckDBPyConnection, model: str | None) -> str | None:
    """The key of the model asked for: ``name@version``, or a bare name when that classifier has one version.

    None picks the first of ``models``. A bare name with several versions is refused rather than pooled or
    guessed, so the message lists the versions to choose from.
    """
    named = _model_names(con)
    if model is None:
        return named[0][0] if named else None
    if any(key == model for key, _ in named):
        return model
    versions = sorted(key for key, name in named if name == model)
    if len(versions) == 1:
        return versions[0]
    if versions:
        raise LabelgovError(f"model {model!r} has several versions; name one of {', '.join(versions)}")
    known = ", ".join(sorted(key for key, _ in named)) or "none"
    raise LabelgovError(f"no predictions from model {model!r}; models are {known}")


def fit_temperature(con: duckdb.DuckDBPyConnection, f: Filters, model: str | None = None) -> TemperatureFit | None:
    """The temperature that best calibrates the model on the gold items in scope; None without gold."""
    name = _resolve_model(con, model)
    if name is None:
        return None
    stored = _stored_scope(con, f)
    if stored is not None:
        row = first_row(
            con.execute(
                "SELECT model, temperature, nll_before, nll_after, n FROM d_temperature "
                "WHERE model = ? AND scope = ? AND name = ?",
                [name, *stored],
            )
        )
        if row is None:
            return None
        return TemperatureFit(model=row[0], temperature=row[1], nll_before=row[2], nll_after=row[3], n=row[4])
    m = gold_matrix(con, f, name)
    return None if m is None else _fit(m, np.ones(len(m.branch), dtype=bool), name)


def calibration_table(
    con: duckdb.DuckDBPyConnection, f: Filters, model: str | None = None, bins: int = BINS
) -> pd.DataFrame:
    """ECE and Brier on gold, overall (leaf level), per level and per branch, before and after temperature.

    Overall and level rows use one temperature fitted on every gold item in scope; branch rows use a
    temperature fitted on that branch alone, which is what shows a branch-specific miscalibration.
    """
    name = _resolve_model(con, model)
    if name is None:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    if f.is_empty() and bins == BINS:
        return con.execute("SELECT * FROM d_calibration WHERE model = ?", [name]).df()[TABLE_COLUMNS]
    m = gold_matrix(con, f, name)
    return pd.DataFrame(_table_rows(m, name, bins, _fits(m, name)) if m is not None else [], columns=TABLE_COLUMNS)


AGAINST = {"gold": ("gold_hit", "gold_brier"), "soft": ("soft_hit", "soft_brier")}


def reliability_bins(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    level: int | None = None,
    against: Literal["gold", "soft"] = "gold",
    bins: int = BINS,
    model: str | None = None,
) -> pd.DataFrame:
    """Reliability diagram: per confidence bin, mean confidence against the hit rate (or soft agreement).

    ``level`` None is the leaf level. Against soft labels, a bin's accuracy is the mean share of human
    answers on the model's top node: how often a random annotator would agree with the model.
    """
    if against not in AGAINST:
        raise LabelgovError("against must be 'gold' or 'soft'")
    name = _resolve_model(con, model)
    if name is None:
        return pd.DataFrame(columns=BIN_COLUMNS)
    depth_row = first_row(con.execute("SELECT max(depth) FROM d_nodes"))
    lv = int(depth_row[0]) if level is None and depth_row and depth_row[0] is not None else level
    hit = AGAINST[against][0]
    scope, params = scoped_items(item_scope(con, f), "p.item_idx")
    return con.execute(
        "SELECT " + _bin_sql("p.conf") + " AS bin, avg(p.conf) AS mean_confidence, avg(p." + hit + ") AS accuracy, "  # noqa: S608 - columns from allow-lists
        "count(*) AS n, any_value(p.level) AS level FROM d_pred_level p "
        "WHERE p.model = ? AND p.level = ? AND p." + hit + " IS NOT NULL AND " + scope + " GROUP BY bin ORDER BY bin",
        [bins, bins, name, lv, *params],
    ).df()[BIN_COLUMNS]


BY_BRANCH_COLUMNS = ["model", "branch", "level", "n_gold", "ece_gold", "brier_gold", "n_soft", "ece_soft", "brier_soft"]


def calibration_by_branch(
    con: duckdb.DuckDBPyConnection, f: Filters, model: str | None = None, bins: int = BINS
) -> pd.DataFrame:
    """ECE and Brier per tree level against gold and against the human soft labels, for every item in scope
    (branch ``all``) and per top-level branch of the consensus, before any temperature.

    Both references come from ``d_pred_level``, so the soft columns count every scored item with answers,
    not only gold items; ``calibration_table`` has the gold figures with the temperature's effect. Sums per
    branch, level and bin leave DuckDB; ``all`` adds the branches' bins, so its ECE is not a mean of theirs.
    """
    name = _resolve_model(con, model)
    if name is None:
        return pd.DataFrame(columns=BY_BRANCH_COLUMNS)
    scope, params = scoped_items(item_scope(con, f), "p.item_idx")
    per_bin = con.execute(
        "SELECT coalesce(o.branch, 'none') AS branch, p.level, " + _bin_sql("p.conf") + " AS bin, "
        "count(p.gold_hit) AS n_gold, coalesce(sum(p.gold_hit - p.conf), 0) AS gap_gold, "
        "coalesce(sum(p.gold_brier), 0) AS sq_gold, count(p.soft_hit) AS n_soft, "
        "coalesce(sum(p.soft_hit - p.conf), 0) AS gap_soft, coalesce(sum(p.soft_brier), 0) AS sq_soft "
        "FROM d_pred_level p JOIN d_item_outcomes o USING (item_idx) "
        "WHERE p.model = ? AND " + scope + " GROUP BY ALL",
        [bins, bins, name, *params],
    ).df()
    if per_bin.empty:
        return pd.DataFrame(columns=BY_BRANCH_COLUMNS)
    sums = ["n_gold", "gap_gold", "sq_gold", "n_soft", "gap_soft", "sq_soft"]
    pooled = per_bin.groupby(["level", "bin"], as_index=False)[sums].sum().assign(branch="all")
    every = pd.concat([pooled, per_bin], ignore_index=True)
    for ref in ("gold", "soft"):
        every["gap_" + ref] = every["gap_" + ref].abs()
    out = every.groupby(["branch", "level"], as_index=False, sort=False)[sums].sum()
    for ref in ("gold", "soft"):
        n = out["n_" + ref].where(out["n_" + ref] > 0)
        out["ece_" + ref] = out["gap_" + ref] / n
        out["brier_" + ref] = out["sq_" + ref] / n
    out["model"] = name
    # ``all`` first, then the branches by name; levels from the top down.
    out["_all"] = out["branch"] != "all"
    out = out.sort_values(["_all", "branch", "level"], ignore_index=True)
    return out.astype({"level": "int64", "n_gold": "int64", "n_soft": "int64"})[BY_BRANCH_COLUMNS]


def _bin_sql(column: str) -> str:
    """SQL for bin_index over ``column``; its two parameters are the number of bins, twice."""
    if column not in ("p.conf", "a.confidence"):
        raise ValueError(f"column {column!r} is not in the allow-list")
    return "greatest(least(CAST(ceil(" + column + " * ?) AS BIGINT) - 1, ? - 1), 0)"


def _annotator_bins(
    con: duckdb.DuckDBPyConnection, f: Filters, against: Literal["gold", "consensus"], bins: int
) -> pd.DataFrame:
    """Per annotator who reports confidence and per confidence bin: answers, summed confidence, summed hits
    and summed squared error of confidence against being right.

    Right means equal to gold, or (``consensus``) to the Dawid-Skene label when that model has been
    refreshed, else the plurality label. Binned in SQL (the rule of bin_index), so only a few rows per
    annotator leave DuckDB.
    """
    if against not in ("gold", "consensus"):
        raise LabelgovError("against must be 'gold' or 'consensus'")
    if against == "gold":
        reference = "(SELECT item_idx, gold_node AS ref FROM d_item_outcomes WHERE gold_node IS NOT NULL)"
    elif _table_exists(con, "d_ds_items"):
        reference = "(SELECT item_idx, ds_node AS ref FROM d_ds_items)"
    else:
        reference = "(SELECT item_idx, consensus_node AS ref FROM d_items)"
    where, params = f.where("a")
    # The reference relation is one of the fixed texts above; the predicate comes from Filters.where.
    return con.execute(
        "SELECT a.annotator_id, any_value(coalesce(a.tier, 'none')) AS tier, "
        + _bin_sql("a.confidence")
        + " AS bin, count(*) AS n, "
        "sum(a.confidence) AS conf, sum((a.node_id = r.ref)::DOUBLE) AS hit, "
        "sum((a.confidence - (a.node_id = r.ref)::DOUBLE) ^ 2) AS sq "
        "FROM d_answers a JOIN " + reference + " r USING (item_idx) "
        "WHERE a.confidence IS NOT NULL AND NOT isnan(a.confidence) AND " + where + " GROUP BY a.annotator_id, bin",
        [bins, bins, *params],
    ).df()


def annotator_confidence_calibration(
    con: duckdb.DuckDBPyConnection, f: Filters, against: Literal["gold", "consensus"] = "gold", bins: int = BINS
) -> pd.DataFrame:
    """Per annotator who reports confidence: stated confidence against being right (see ``_annotator_bins``).

    ``overconfidence`` is mean confidence minus accuracy; ``brier`` is the binary score of confidence
    against right.
    """
    per_bin = _annotator_bins(con, f, against, bins)
    columns = ["annotator_id", "tier", "n", "mean_confidence", "accuracy", "overconfidence", "ece", "brier"]
    if per_bin.empty:
        return pd.DataFrame(columns=columns)
    per_bin["gap"] = (per_bin["hit"] - per_bin["conf"]).abs()
    per = per_bin.groupby("annotator_id", as_index=False).agg(
        tier=("tier", "first"),
        n=("n", "sum"),
        conf=("conf", "sum"),
        hit=("hit", "sum"),
        sq=("sq", "sum"),
        gap=("gap", "sum"),
    )
    per["mean_confidence"] = per["conf"] / per["n"]
    per["accuracy"] = per["hit"] / per["n"]
    per["brier"] = per["sq"] / per["n"]
    per["ece"] = per["gap"] / per["n"]
    per["overconfidence"] = per["mean_confidence"] - per["accuracy"]
    return per[columns].sort_values(["overconfidence", "annotator_id"], ascending=[False, True], ignore_index=True)


CONFIDENCE_BIN_COLUMNS = ["tier", "bin", "mean_confidence", "accuracy", "n"]


def annotator_confidence_bins(
    con: duckdb.DuckDBPyConnection, f: Filters, against: Literal["gold", "consensus"] = "gold", bins: int = BINS
) -> pd.DataFrame:
    """Reliability diagram of self-reported confidence, one line per annotator tier: per bin, mean stated
    confidence against the share of answers that were right. Tiers rather than annotators, because a
    single annotator's bins are too thin to read and a tier is what a routing rule acts on."""
    per_bin = _annotator_bins(con, f, against, bins)
    if per_bin.empty:
        return pd.DataFrame(columns=CONFIDENCE_BIN_COLUMNS)
    out = per_bin.groupby(["tier", "bin"], as_index=False)[["n", "conf", "hit"]].sum()
    out["mean_confidence"] = out["conf"] / out["n"]
    out["accuracy"] = out["hit"] / out["n"]
    return out.astype({"n": "int64", "bin": "int64"})[CONFIDENCE_BIN_COLUMNS]
