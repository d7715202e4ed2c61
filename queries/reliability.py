"""Annotator reliability: accuracy against gold, Dawid-Skene estimates without gold, spammers, speed.

Gold accuracy is exact-match against the gold node (a coarse answer above the gold leaf counts as
wrong: it did not do the job asked), with Wilson score intervals because most annotators have few gold
items and the normal interval collapses to zero width at 0 or 100 %.

The Dawid-Skene model is fitted at refresh on every answer of the newest tree version, whatever the
page filters: it is one global model, and refitting it per filter would make an annotator's estimate
depend on which other annotators happen to be in view. Classes are that version's leaves; coarse
answers are observed labels of their own (see ``queries.dawid_skene``) and start the majority vote
spread evenly over their subtree's leaves. An annotator with fewer answers than there are leaves gets
the one-coin model (a single accuracy): some column of their full table would rest on no answer at
all. Annotators above that keep the full table however few their answers, because on the real crowd
data sets it is the better model even for them: on product matching, where 113 of 176 workers have
under 50 answers, the one-coin model below 50 answers drops accuracy against the published truth from
crowd-kit's 0.9397 to 0.9352, and shrinking sparse tables towards the one-coin table costs accuracy there
at every prior weight tried. The iteration cap and stopping rule are crowd-kit's, so that the model is
fitted as far as the reference fits it (product matching needs 80 iterations).

Gold is kept out of the fit: accuracy against gold is how the dashboard and the report judge
Dawid-Skene, and a fit that had seen the gold items would be graded on its own answers. Annotators who
answer at an expert stage (escalated or adjudication) are trusted in the start: on the items they
answered, half the starting posterior is theirs (see ``queries.dawid_skene``). They answer only items the
crowd split on, and from the crowd's majority there EM stopped at a fixed point of lower likelihood that
marked half the demo's experts wrong where the crowd's hard-pair confusion outvoted them.
``ds_accuracy`` is the expected share of an annotator's leaf answers that are the true leaf under the
fitted model (coarse answers are neither right nor wrong at leaf level), and ``estimate_used`` says
which model produced it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd

from queries import answer_arrays, compiled_sums, frame_writes
from queries.dawid_skene import DSResult, dawid_skene
from queries.filters import Filters
from queries.results import arrays, first_row

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

# Below this many answers per leaf an annotator gets the one-coin model (see the module docstring).
ONE_COIN_ANSWERS_PER_CLASS = 1
# crowd-kit's defaults. A looser 3e-5 saves a third of the iterations on the demo but stops product matching
# at 51 iterations, one correctly labelled item short of crowd-kit's fit at 80.
N_ITER = 100
TOL = 1e-5
POSTERIOR_MIN = 1e-4
CONFUSION_MIN_N = 0.05  # expected answers behind a confusion cell worth storing
Z95 = 1.959963984540054

ANNOTATOR_COLUMNS = [
    "annotator_id",
    "kind",
    "tier",
    "answers",
    "gold_answers",
    "gold_accuracy",
    "wilson_low",
    "wilson_high",
    "ds_accuracy",
    "estimate_used",
    "spammer_score",
    "median_duration_s",
    "total_cost",
    "cost_per_answer",
]


def wilson_interval(
    k: npt.ArrayLike, n: npt.ArrayLike, z: float = Z95
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Wilson score interval for k successes in n trials (NaN where n is 0), vectorised."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return centre - half, centre + half


# --- refresh -----------------------------------------------------------------------------------------

LABELS = """
CREATE OR REPLACE TEMP TABLE _ds_labels AS
WITH nodes AS (SELECT * FROM d_nodes WHERE tree_version = ?)
SELECT node_id, is_leaf,
       row_number() OVER (ORDER BY NOT is_leaf, ordinal) - 1 AS label_idx
FROM nodes
"""

# Each internal node's majority-vote share goes evenly to the leaves whose lineage contains it.
SPREAD = """
SELECT p.label_idx AS label_idx, l.label_idx AS class_idx, 1.0 / count(*) OVER (PARTITION BY p.label_idx) AS w
FROM _ds_labels p
JOIN (SELECT x.label_idx, d.lineage FROM _ds_labels x JOIN d_nodes d ON d.tree_version = ? AND d.node_id = x.node_id
      WHERE x.is_leaf) l ON list_contains(l.lineage, p.node_id)
WHERE NOT p.is_leaf
"""

ANSWERS = """
SELECT a.item_idx, a.annotator_idx, l.label_idx
FROM d_answers a JOIN _ds_labels l USING (node_id)
WHERE a.tree_version = ?
"""

# Annotators the labelling process treats as decisive: they answer the items escalated to experts.
TRUSTED = """
SELECT DISTINCT annotator_idx FROM d_answers WHERE tree_version = ? AND stage IN ('escalated', 'adjudication')
"""

EMPTY_TABLES = """
CREATE OR REPLACE TABLE d_ds_annotators (annotator_id VARCHAR, annotator_idx INTEGER, answers BIGINT,
    ds_accuracy DOUBLE, estimate_used VARCHAR, spammer_score DOUBLE);
CREATE OR REPLACE TABLE d_ds_confusion (annotator_id VARCHAR, true_node VARCHAR, answered_node VARCHAR,
    p DOUBLE, expected_n DOUBLE);
CREATE OR REPLACE TABLE d_posterior (item_id VARCHAR, item_idx INTEGER, node_id VARCHAR, p DOUBLE);
CREATE OR REPLACE TABLE d_ds_items (item_id VARCHAR, item_idx INTEGER, ds_node VARCHAR, ds_p DOUBLE,
    majority_node VARCHAR);
"""


def _fit_call(con: duckdb.DuckDBPyConnection, version: int) -> Callable[[], DSResult] | None:
    """The fit of ``version``'s answers as a call that needs the connection no more: its inputs are read here,
    so refresh can run the call on a thread while later steps use the connection."""
    con.execute(LABELS, [version])
    row = first_row(con.execute("SELECT count(*) FILTER (WHERE is_leaf), count(*) FROM _ds_labels"))
    n_classes, n_labels = (int(row[0]), int(row[1])) if row else (0, 0)
    answers = arrays(con, ANSWERS, [version])
    if n_classes == 0 or answers["item_idx"].size == 0:
        return None
    spread = np.eye(n_labels, n_classes)
    cells = arrays(con, SPREAD, [version])
    spread[cells["label_idx"], cells["class_idx"]] = cells["w"]
    ann = np.asarray(answers["annotator_idx"], dtype=np.int64)
    counts = np.bincount(ann)
    trusted = np.zeros(counts.size, dtype=bool)
    trusted[np.asarray(arrays(con, TRUSTED, [version])["annotator_idx"], dtype=np.int64)] = True
    return functools.partial(
        dawid_skene,
        answers["item_idx"],
        ann,
        answers["label_idx"],
        n_classes=n_classes,
        n_iter=N_ITER,
        tol=TOL,
        one_coin=counts < ONE_COIN_ANSWERS_PER_CLASS * n_classes,
        spread=spread,
        trusted=trusted,
    )


def _write(con: duckdb.DuckDBPyConnection, res: DSResult) -> None:
    ann = pd.DataFrame(
        {
            "annotator_idx": res.annotator_ids,
            "answers": res.answers,
            "ds_accuracy": res.accuracy,
            "estimate_used": np.where(res.one_coin, "one_coin", "confusion_matrix"),
            "spammer_score": res.spammer_score,
        }
    )
    k = res.posteriors.shape[1]
    # A one-coin annotator's coarse answers are outside their model (probability 1 under every class).
    modelled = ~(res.one_coin[res.response_annotator] & (res.response_label >= k))
    keep = ((res.expected_counts >= CONFUSION_MIN_N) & modelled[:, None]).ravel()
    conf = pd.DataFrame(
        {
            "annotator_idx": np.repeat(res.annotator_ids[res.response_annotator], k)[keep],
            "true_idx": np.tile(np.arange(k), res.response_label.size)[keep],
            "answered_idx": np.repeat(res.response_label, k)[keep],
            "p": res.confusion.ravel()[keep],
            "expected_n": res.expected_counts.ravel()[keep],
        }
    )
    rows, cols = np.nonzero(res.posteriors > POSTERIOR_MIN)
    post = pd.DataFrame(
        {"item_idx": res.item_ids[rows], "class_idx": cols, "p": res.posteriors[rows, cols].astype(np.float64)}
    )
    best = res.labels
    items = pd.DataFrame(
        {
            "item_idx": res.item_ids,
            "class_idx": best,
            "p": res.posteriors[np.arange(best.size), best].astype(np.float64),
        }
    )
    # d_items is joined on the integer index (one row per item, as per id): the id string cost four times as much.
    statements = {
        "_ds_ann": (
            ann,
            """
            CREATE OR REPLACE TABLE d_ds_annotators AS
            SELECT x.annotator_id, a.annotator_idx::INTEGER AS annotator_idx, a.answers::BIGINT AS answers,
                   a.ds_accuracy, a.estimate_used, a.spammer_score
            FROM _ds_ann a JOIN d_annotator_index x USING (annotator_idx)
            """,
        ),
        "_ds_conf": (
            conf,
            """
            CREATE OR REPLACE TABLE d_ds_confusion AS
            SELECT x.annotator_id, t.node_id AS true_node, o.node_id AS answered_node, c.p, c.expected_n
            FROM _ds_conf c JOIN d_annotator_index x USING (annotator_idx)
            JOIN _ds_labels t ON t.label_idx = c.true_idx JOIN _ds_labels o ON o.label_idx = c.answered_idx
            """,
        ),
        "_ds_post": (
            post,
            """
            CREATE OR REPLACE TABLE d_posterior AS
            SELECT x.item_id, p.item_idx::INTEGER AS item_idx, l.node_id, p.p
            FROM _ds_post p JOIN d_item_index x USING (item_idx) JOIN _ds_labels l ON l.label_idx = p.class_idx
            ORDER BY p.item_idx, p.p DESC
            """,
        ),
        "_ds_items": (
            items,
            """
            CREATE OR REPLACE TABLE d_ds_items AS
            SELECT x.item_id, i.item_idx::INTEGER AS item_idx, l.node_id AS ds_node, i.p AS ds_p,
                   d.consensus_node AS majority_node
            FROM _ds_items i JOIN d_item_index x USING (item_idx) JOIN _ds_labels l ON l.label_idx = i.class_idx
            LEFT JOIN d_items d ON d.item_idx = i.item_idx
            ORDER BY i.item_idx
            """,
        ),
    }
    for name, (frame, sql) in statements.items():
        frame_writes.run_over(con, name, frame, sql)


def refresh_work(con: duckdb.DuckDBPyConnection) -> Callable[[], DSResult | None]:
    """The global model's fit of the newest tree version's answers, as a call that needs the connection no more.

    The fit is compiled passes and numpy that release the GIL, and it leaves a core partly idle (its M-step
    and model build run on one): refresh runs it on a thread beside the steps that read none of its tables,
    and then refresh_store writes them."""
    row = first_row(con.execute("SELECT max(tree_version) FROM d_answers"))
    call = _fit_call(con, int(row[0])) if row and row[0] is not None else None
    return call if call is not None else lambda: None


def refresh_store(con: duckdb.DuckDBPyConnection, res: DSResult | None) -> str:
    """Store the model's tables and the per-annotator views."""
    if res is None:
        con.execute(EMPTY_TABLES)
    else:
        _write(con, res)
    con.execute("DROP TABLE IF EXISTS _ds_labels")
    # The unfiltered page views read these instead of scanning every answer.
    con.execute("CREATE OR REPLACE TABLE d_annotator_reliability AS " + _annotator_rows(Filters())[0])
    con.execute("CREATE OR REPLACE TABLE d_reliability_weekly AS " + OVER_TIME_HEAD + "TRUE AND TRUE" + OVER_TIME_TAIL)
    return "full"


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Refit the global model on the newest tree version's answers; always a full recomputation. Refresh
    itself runs the fit on a thread, with other steps beside it."""
    return refresh_store(con, refresh_work(con)())


# --- page functions ----------------------------------------------------------------------------------

# Gold mapped to the version the analytics are computed in (see derived_base).
GOLD = """(SELECT item_id, tree_version, node_id AS gold_node FROM d_gold)"""

# Gold joins on the integer item index alone (d_gold has one row per item) with its version compared after the
# join: a two-column join key costs twice the single integer one on ten million answers. The gold counts are
# summed apart, over the answers on gold items only: a left join carried every answer through it for the few
# on gold items, and cost more than the rest of the table.
ANNOTATOR_GOLD = "JOIN d_gold g ON g.item_idx = a.item_idx"


def _annotator_rows(f: Filters) -> tuple[str, list[Any]]:
    """Per annotator over the answers in ``f``, and the parameters: grouped by the integer index, the ids and
    model estimates joined to the two thousand groups afterwards."""
    every, params = f.answers_from()
    on_gold, _ = f.answers_from(ANNOTATOR_GOLD)
    sql = (
        "WITH p AS (SELECT a.annotator_idx, any_value(a.annotator_kind) AS kind, any_value(a.tier) AS tier, "  # noqa: S608 - fixed fragments around Filters.answers_from
        "count(*) AS answers, median(a.duration_s) AS median_duration_s, "
        "sum(a.cost) AS total_cost, "
        "avg(a.cost) AS cost_per_answer FROM " + every + " GROUP BY a.annotator_idx), "
        "g AS (SELECT a.annotator_idx, count(*) FILTER (WHERE g.tree_version = a.tree_version) AS gold_answers, "
        "count(*) FILTER (WHERE g.tree_version = a.tree_version AND a.node_id = g.node_id) AS gold_correct "
        "FROM " + on_gold + " GROUP BY a.annotator_idx) "
        "SELECT x.annotator_id, p.kind, p.tier, p.answers, coalesce(g.gold_answers, 0) AS gold_answers, "
        "coalesce(g.gold_correct, 0) AS gold_correct, g.gold_correct / nullif(g.gold_answers, 0) AS gold_accuracy, "
        "s.ds_accuracy, s.estimate_used, s.spammer_score, p.median_duration_s, p.total_cost, p.cost_per_answer, "
        "p.annotator_idx "
        "FROM p LEFT JOIN g USING (annotator_idx) JOIN d_annotator_index x USING (annotator_idx) "
        "LEFT JOIN d_ds_annotators s USING (annotator_id) ORDER BY x.annotator_id"
    )
    return sql, [*params, *params]


# Fields that keep or drop every answer of an annotator: each annotator has one tier (derived_base takes it
# from one annotators row), so under these filters an annotator's row is the unfiltered one.
ANNOTATOR_LEVEL = frozenset({"tiers", "annotators"})


CONFUSION_HEAD = """
WITH observed AS (
    SELECT i.ds_node AS true_node, a.node_id AS answered_node, count(*) AS n
    FROM d_answers a JOIN d_ds_items i USING (item_idx)
    WHERE a.annotator_id = ? AND """
CONFUSION_TAIL = """
    GROUP BY ALL
), model AS (
    SELECT true_node, answered_node, p FROM d_ds_confusion WHERE annotator_id = ?
)
SELECT true_node, answered_node, coalesce(m.p, 0.0) AS p, coalesce(o.n, 0) AS n
FROM model m FULL JOIN observed o USING (true_node, answered_node)
ORDER BY true_node, answered_node
"""

OVER_TIME_HEAD = (
    """
SELECT a.annotator_id, a.week, count(*) AS answers,
       count(g.gold_node) AS gold_answers, count(*) FILTER (WHERE a.node_id = g.gold_node) AS gold_correct,
       gold_correct / nullif(gold_answers, 0) AS gold_accuracy,
       avg((a.node_id = i.ds_node)::INTEGER) AS ds_agreement
FROM d_answers a
LEFT JOIN """
    + GOLD
    + """ g USING (item_id, tree_version)
LEFT JOIN d_ds_items i USING (item_idx)
WHERE a.week IS NOT NULL AND """
)
OVER_TIME_TAIL = " GROUP BY ALL ORDER BY a.annotator_id, a.week"


def _with_wilson(frame: pd.DataFrame) -> pd.DataFrame:
    low, high = wilson_interval(
        frame["gold_correct"].to_numpy(dtype=float), frame["gold_answers"].to_numpy(dtype=float)
    )
    return frame.assign(wilson_low=low, wilson_high=high)


def annotator_table(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """One row per annotator: volume, gold accuracy with its interval, model estimates, speed and cost."""
    if set(f.model_dump(exclude_defaults=True)) <= ANNOTATOR_LEVEL:
        where, params = f.where("x")
        sql = "SELECT * FROM d_annotator_reliability x WHERE " + where + " ORDER BY annotator_id"  # noqa: S608 - predicate from Filters.where
        frame = con.execute(sql, params).df()
    else:
        scope = answer_arrays.in_scope(con, f)
        if scope is None:
            sql, params = _annotator_rows(f)
            frame = con.execute(sql, params).df()
        else:
            frame = _held_annotator_rows(con, *scope)
    return _with_wilson(frame)[ANNOTATOR_COLUMNS]


# Each annotator's own attributes and model estimates (the same under every filter), and each gold item's value
# index (-1: none): what the held answers' per-annotator sums are joined to. Gold and answers are both in the
# as-of tree version, so the version test of ANNOTATOR_GOLD always holds here.
ANNOTATOR_ATTRIBUTES = (
    "SELECT r.annotator_id, r.kind, r.tier, r.ds_accuracy, r.estimate_used, r.spammer_score, x.annotator_idx "
    "FROM d_annotator_reliability r JOIN d_annotator_index x USING (annotator_id) ORDER BY r.annotator_id"
)
GOLD_VALUES = "SELECT g.item_idx, n.value_idx FROM d_gold g JOIN d_nodes n USING (tree_version, node_id)"


def _held_annotator_rows(
    con: duckdb.DuckDBPyConnection, columns: dict[str, np.ndarray], keep: np.ndarray
) -> pd.DataFrame:
    """_annotator_rows' table from the held answers (answer_arrays.in_scope): counts, gold hits and cost sums
    in one compiled pass and the exact medians on a thread beside it, where SQL scanned every answer."""

    def gold_values() -> np.ndarray:
        rows = arrays(con, GOLD_VALUES)
        out = np.full(int(rows["item_idx"].max(initial=-1)) + 1, -1, dtype=np.int64)
        out[np.asarray(rows["item_idx"], dtype=np.int64)] = rows["value_idx"]
        return out

    people = answer_arrays.kept(con, "annotator_attributes", lambda: con.execute(ANNOTATOR_ATTRIBUTES).df())
    gold = answer_arrays.kept(con, "gold_values", gold_values)
    who = columns["annotator_idx"]
    size = max(int(who.max(initial=0)), int(people["annotator_idx"].max()) if len(people) else 0) + 1
    with ThreadPoolExecutor(max_workers=1) as pool:
        medians = pool.submit(compiled_sums.medians_by, keep, who, columns["duration"], size)
        answers, on_gold, correct, cost, costed = compiled_sums.annotator_sums(
            keep, who, columns["item_idx"], columns["v"], columns["cost"], gold, size
        )
        median = medians.result()
    at = people["annotator_idx"].to_numpy(dtype=np.int64)
    seen = answers[at] > 0
    at = at[seen]
    # DuckDB gives an empty result object columns where it gives others strings: the same frame as the SQL's.
    rows = people[seen].reset_index(drop=True) if at.size else con.execute(ANNOTATOR_ATTRIBUTES + " LIMIT 0").df()
    with np.errstate(divide="ignore", invalid="ignore"):
        return rows.assign(
            answers=answers[at],
            gold_answers=on_gold[at],
            gold_correct=correct[at],
            gold_accuracy=np.where(on_gold[at] > 0, correct[at] / on_gold[at], np.nan),
            median_duration_s=median[at],
            total_cost=np.where(costed[at] > 0, cost[at], np.nan),
            cost_per_answer=np.where(costed[at] > 0, cost[at] / costed[at], np.nan),
        )


def confusion_matrix(con: duckdb.DuckDBPyConnection, f: Filters, annotator_id: str) -> pd.DataFrame:
    """The model's P(answered | true) cells for one annotator beside n, their filtered answers per cell.

    ``n`` counts the annotator's answers (under the filters) by answered node and the item's
    Dawid-Skene node, so a reader sees both what the model believes and how much evidence is in view.
    """
    where, params = f.where("a")
    sql = CONFUSION_HEAD + where + CONFUSION_TAIL  # fixed fragments around the Filters predicate; values are bound
    return con.execute(sql, [annotator_id, *params, annotator_id]).df()


def reliability_over_time(con: duckdb.DuckDBPyConnection, f: Filters, annotator_id: str | None = None) -> pd.DataFrame:
    """Weekly gold accuracy (with Wilson bounds) and agreement with the Dawid-Skene consensus."""
    if f.is_empty():
        frame = con.execute(
            "SELECT * FROM d_reliability_weekly WHERE ? IS NULL OR annotator_id = ? ORDER BY annotator_id, week",
            [annotator_id, annotator_id],
        ).df()
    else:
        where, params = f.where("a")
        only = "TRUE" if annotator_id is None else "a.annotator_id = ?"
        sql = OVER_TIME_HEAD + only + " AND " + where + OVER_TIME_TAIL  # fixed fragments; values are bound
        frame = con.execute(sql, ([annotator_id] if annotator_id is not None else []) + params).df()
    return _with_wilson(frame)[
        [
            "annotator_id",
            "week",
            "answers",
            "gold_answers",
            "gold_accuracy",
            "wilson_low",
            "wilson_high",
            "ds_agreement",
        ]
    ]


def speed_vs_accuracy(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per annotator median seconds per answer against gold accuracy and the model's accuracy."""
    table = annotator_table(con, f)
    return table[
        ["annotator_id", "kind", "tier", "answers", "median_duration_s", "gold_answers", "gold_accuracy", "ds_accuracy"]
    ].reset_index(drop=True)
