"""Data-quality checks: leakage across splits, missing metadata, implausibly fast annotators, odd sources.

Each check is a function returning the offending rows; ``check_counts`` condenses them into one table
for the overview page. The thresholds are parameters with documented defaults:

* Too fast: an annotator's median answer time below ``min_seconds`` (2 s: too short to read an item
  and pick a node from a tree), or below ``relative`` (20%) of the population median (a fixed floor
  misses spammers on tasks where everyone is slow). Only annotators with at least ``min_answers``
  timed answers are judged, so a handful of quick answers cannot flag anyone.
* Diverging source: the Jensen-Shannon distance (base 2, 0 = same, 1 = disjoint) between a source's
  top-level answer distribution and that of all sources together above ``threshold`` (0.15: about
  15% of the answers moved from one top-level branch to another, e.g. 50/30/20 against 35/45/20).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from queries import frame_writes, overview, soft_labels
from queries.filters import Filters

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

DUPLICATE_COLUMNS = ["kind", "key", "n_items", "n_splits", "items", "splits"]
MISSING_COLUMNS = ["table", "field", "missing", "total", "share", "needed_by"]
FAST_COLUMNS = [
    "annotator_id", "annotator_kind", "tier", "answers", "timed_answers", "median_duration_s",
    "population_median_s", "ratio", "reason",
]
DIVERGENCE_COLUMNS = ["source", "answers", "js_distance", "flagged", "top_node", "top_share", "overall_top_node"]
CHECK_COLUMNS = ["check", "count", "severity", "description"]

# (table alias, column, the views that need it); columns are fixed here, never taken from input.
ANSWER_FIELDS = (
    ("created_at", "trends, drift and reliability over time"),
    ("cost", "cost and cost-quality views"),
    ("duration_s", "speed checks and cost per hour"),
)
ITEM_FIELDS = (
    ("source", "per-source slices and source divergence"),
    ("segment", "per-segment slices"),
    ("split", "split leakage checks"),
)


def _scope_items(f: Filters) -> tuple[str, list[Any]]:
    """Items the filters keep, over the raw items table (items without answers only when unfiltered)."""
    pred, params = soft_labels.scoped("d.item_idx", f)
    if pred == "TRUE":
        return "SELECT item_id FROM items", []
    return "SELECT d.item_id FROM d_item_index d WHERE " + pred, params  # noqa: S608 - scope predicate


# Unfiltered results are materialised at refresh (one full pass each: medians and leakage groups are
# global); filtered pages recompute from d_answers with the same SQL.
TABLES = ("d_dq_duplicates", "d_dq_annotators", "d_dq_source_top", "d_dq_missing")
DUPLICATES = (
    "WITH i AS (SELECT DISTINCT item_id, split, content_hash FROM items WHERE split IS NOT NULL), "
    "ids AS (SELECT item_id FROM i GROUP BY item_id HAVING count(DISTINCT split) > 1), "
    "hashes AS (SELECT content_hash FROM i WHERE content_hash IS NOT NULL GROUP BY content_hash "
    "HAVING count(DISTINCT split) > 1), "
    "g AS (SELECT 'id' AS kind, item_id AS key, item_id, split FROM i WHERE item_id IN (SELECT item_id FROM ids) "
    "UNION ALL SELECT 'content', content_hash, item_id, split FROM i "
    "WHERE content_hash IN (SELECT content_hash FROM hashes)) "
    "SELECT kind, key, count(DISTINCT item_id) AS n_items, count(DISTINCT split) AS n_splits, "
    "list(DISTINCT item_id ORDER BY item_id) AS items, list(DISTINCT split ORDER BY split) AS splits "
    "FROM g GROUP BY kind, key"
)


def _per_annotator(pred: str) -> str:
    """Answers, timed answers and median duration per annotator, with the population median beside them."""
    return (
        "WITH a AS (SELECT a.annotator_id, a.annotator_kind, a.tier, a.duration_s FROM d_answers a "  # noqa: S608 - fixed
        "WHERE " + pred + "), "
        "pop AS (SELECT median(duration_s) AS population_median_s FROM a) "
        "SELECT annotator_id, any_value(annotator_kind) AS annotator_kind, any_value(tier) AS tier, "
        "count(*) AS answers, count(duration_s) AS timed_answers, median(duration_s) AS median_duration_s, "
        "any_value(pop.population_median_s) AS population_median_s FROM a, pop GROUP BY annotator_id"
    )


def _source_top(pred: str) -> str:
    """Answers per source and top-level branch (grouped by node first: a list lookup per answer is slow)."""
    return (
        "SELECT c.source, n.lineage[1] AS top, sum(c.n) AS n FROM (SELECT a.source, a.tree_version, a.node_id, "  # noqa: S608 - fixed
        "count(*) AS n FROM d_answers a WHERE a.source IS NOT NULL AND " + pred + " GROUP BY ALL) c "
        "JOIN d_nodes n USING (tree_version, node_id) GROUP BY ALL"
    )


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Materialise the unfiltered checks; medians and cross-split groups are global, so always in full.

    The overview page's own stored numbers (tiles, weekly trends) are written here too, beside its checks:
    the overview module has no step of its own, and this one runs after the Dawid-Skene and escalation
    steps that those numbers read."""
    con.execute("CREATE OR REPLACE TABLE d_dq_duplicates AS " + DUPLICATES)
    con.execute("CREATE OR REPLACE TABLE d_dq_annotators AS " + _per_annotator("TRUE"))
    con.execute("CREATE OR REPLACE TABLE d_dq_source_top AS " + _source_top("TRUE"))
    frame_writes.store(con, "d_dq_missing", _missing_computed(con, Filters()))
    overview.refresh_step(con, ctx)
    return "full"


def _stored(con: duckdb.DuckDBPyConnection, f: Filters) -> bool:
    return f.is_empty() and all(soft_labels.table_exists(con, t) for t in TABLES)


def cross_split_duplicates(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Item ids, and content hashes, that occur in more than one split (train/test leakage).

    A group is listed when at least one of its items is within the filters.
    """
    groups = "d_dq_duplicates" if soft_labels.table_exists(con, "d_dq_duplicates") else "(" + DUPLICATES + ")"
    if f.is_empty():
        return con.execute(
            "SELECT g.* FROM " + groups + " g ORDER BY g.kind DESC, g.n_items DESC, g.key"  # noqa: S608 - fixed SQL fragments
        ).df()[DUPLICATE_COLUMNS]
    # Unnest the groups' few items and semi-join them with the scope: comparing every group's list with a
    # list of every in-scope item costs a list search per group.
    scope, params = _scope_items(f)
    return con.execute(
        "WITH hit AS (SELECT DISTINCT u.kind, u.key FROM (SELECT kind, key, unnest(items) AS item_id FROM "  # noqa: S608 - fixed SQL fragments
        + groups + ") u WHERE u.item_id IN (" + scope + ")) "
        "SELECT g.* FROM " + groups + " g SEMI JOIN hit USING (kind, key) "
        "ORDER BY g.kind DESC, g.n_items DESC, g.key",
        params,
    ).df()[DUPLICATE_COLUMNS]


def missing_metadata(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """For each field a view needs, how many answers or items lack it."""
    if _stored(con, f):
        return con.execute("SELECT * FROM d_dq_missing").df()[MISSING_COLUMNS]
    return _missing_computed(con, f)


def _missing_computed(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    if not soft_labels.table_exists(con, "d_answers"):
        return soft_labels.empty_frame(MISSING_COLUMNS)
    pred, params = f.where("a")
    answer_counts = ", ".join("count(*) FILTER (WHERE a." + c + " IS NULL)" for c, _ in ANSWER_FIELDS)
    row = con.execute(
        "SELECT count(*), " + answer_counts + " FROM d_answers a WHERE " + pred, params  # noqa: S608 - fixed columns
    ).fetchall()[0]
    item_pred, item_params = soft_labels.scoped("d.item_idx", f)
    item_counts = ", ".join("count(*) FILTER (WHERE d." + c + " IS NULL)" for c, _ in ITEM_FIELDS)
    item_row = con.execute(
        "SELECT count(*), " + item_counts + " FROM d_items d WHERE " + item_pred, item_params  # noqa: S608 - fixed
    ).fetchall()[0]
    rows = []
    for table, fields, counts in (("annotations", ANSWER_FIELDS, row), ("items", ITEM_FIELDS, item_row)):
        total = int(counts[0]) if counts else 0
        for (field, needed_by), missing in zip(fields, counts[1:] if counts else [], strict=False):
            rows.append(
                {
                    "table": table,
                    "field": field,
                    "missing": int(missing),
                    "total": total,
                    "share": missing / total if total else float("nan"),
                    "needed_by": needed_by,
                }
            )
    return pd.DataFrame(rows, columns=MISSING_COLUMNS)


def too_fast_annotators(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    min_seconds: float = 2.0,
    relative: float = 0.2,
    min_answers: int = 10,
) -> pd.DataFrame:
    """Annotators whose median answer time is below ``min_seconds`` or ``relative`` x the population median."""
    if not soft_labels.table_exists(con, "d_answers"):
        return soft_labels.empty_frame(FAST_COLUMNS)
    if _stored(con, f):
        per, params = "d_dq_annotators", []
    else:
        pred, params = f.where("a")
        per = "(" + _per_annotator(pred) + ")"
    return con.execute(
        "SELECT p.*, p.median_duration_s / p.population_median_s AS ratio, "
        "CASE WHEN p.median_duration_s < ? THEN 'median below ' || ? || ' s' "
        "ELSE 'median below ' || CAST(round(100 * ?) AS INTEGER) || '% of the population median' END AS reason "
        "FROM " + per + " p WHERE p.timed_answers >= ? "
        "AND (p.median_duration_s < ? OR p.median_duration_s < ? * p.population_median_s) "
        "ORDER BY ratio, annotator_id",
        [min_seconds, min_seconds, relative, *params, min_answers, min_seconds, relative],
    ).df()[FAST_COLUMNS]


def source_divergence(con: duckdb.DuckDBPyConnection, f: Filters, threshold: float = 0.15) -> pd.DataFrame:
    """Per source: JS distance of its top-level answer distribution from all sources pooled."""
    if not soft_labels.table_exists(con, "d_answers"):
        return soft_labels.empty_frame(DIVERGENCE_COLUMNS)
    if _stored(con, f):
        counts = con.execute("SELECT * FROM d_dq_source_top").df()
    else:
        pred, params = f.where("a")
        counts = con.execute(_source_top(pred), params).df()
    if counts.empty:
        return soft_labels.empty_frame(DIVERGENCE_COLUMNS)
    table = counts.pivot_table(index="source", columns="top", values="n", aggfunc="sum", fill_value=0)
    matrix = table.to_numpy(dtype=float)
    overall = matrix.sum(axis=0)
    # jensenshannon normalises each vector itself; axis=1 compares every source row with the pooled row.
    distance = jensenshannon(matrix, np.broadcast_to(overall, matrix.shape), base=2, axis=1)
    tops = np.asarray(table.columns)
    out = pd.DataFrame(
        {
            "source": table.index.astype(str),
            "answers": matrix.sum(axis=1).astype(np.int64),
            "js_distance": np.nan_to_num(distance, nan=0.0),
            "top_node": tops[matrix.argmax(axis=1)],
            "top_share": matrix.max(axis=1) / matrix.sum(axis=1),
            "overall_top_node": tops[overall.argmax()],
        }
    )
    out["flagged"] = out["js_distance"] > threshold
    return out.sort_values(["js_distance", "source"], ascending=[False, True])[DIVERGENCE_COLUMNS].reset_index(
        drop=True
    )


def check_counts(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """One row per check for the overview: how many problems, and how serious ("ok" when none)."""
    duplicates = cross_split_duplicates(con, f)
    missing = missing_metadata(con, f).set_index(["table", "field"])["missing"]
    rows: list[tuple[str, int, str, str]] = [
        (
            "ids_in_several_splits",
            int((duplicates["kind"] == "id").sum()),
            "error",
            "item ids present in more than one split (train/test leakage)",
        ),
        (
            "content_in_several_splits",
            int(duplicates.loc[duplicates["kind"] == "content", "n_items"].sum()),
            "error",
            "items whose content hash also occurs in another split",
        ),
    ]
    for (table, field), count in missing.items():
        rows.append((f"{table}_without_{field}", int(count), "warning", f"{table} with no {field}"))
    rows.append(
        (
            "too_fast_annotators",
            len(too_fast_annotators(con, f)),
            "warning",
            "annotators with a median answer time under 2 s or under 20% of the population median",
        )
    )
    rows.append(
        (
            "diverging_sources",
            int(source_divergence(con, f)["flagged"].sum()),
            "info",
            "sources whose top-level label distribution differs from all sources (JS distance > 0.15)",
        )
    )
    frame = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    frame.loc[frame["count"] == 0, "severity"] = "ok"
    return frame
