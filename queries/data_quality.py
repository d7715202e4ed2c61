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

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.spatial.distance import jensenshannon

from queries import answer_arrays, compiled_sums, escalation, frame_writes, item_profiles, soft_labels
from queries.filters import Filters
from queries.results import first_row

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


# Unfiltered results are materialised at refresh (medians and leakage groups are global); filtered pages
# sum the additive counts from the cells and recompute the rest from d_answers.
CELLS_TABLE = "d_dq_cells"
TABLES = ("d_dq_duplicates", "d_dq_annotators", CELLS_TABLE, "d_dq_missing")
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

# Answers per cell of Filters.cell_where (week, source, segment, the item's consensus node, tier, stage) and
# answered top-level branch, with the answers lacking each ANSWER_FIELDS field: under any filter the cells can
# express, the missing-metadata and source-divergence counts are sums over a few hundred thousand rows instead
# of passes over every answer. Counted once at the finest grain, by the item's profile (queries/item_profiles)
# and the answer's integer value_idx rather than the five strings they stand for, then named and rolled up to
# the four groupings cell_where picks from; every answer counts exactly as the live queries count it.
CELLS = (
    "CREATE OR REPLACE TABLE " + CELLS_TABLE + " AS WITH profiles AS (" + item_profiles.PROFILES + "), "  # noqa: S608 - fixed columns
    "fine AS (SELECT a.day, a.tree_version AS answer_version, p.profile, a.tier, a.stage, a.value_idx, "
    "count(*) AS answers, "
    + ", ".join("count(*) FILTER (WHERE a." + c + " IS NULL) AS no_" + c for c, _ in ANSWER_FIELDS)
    + " FROM d_answers a LEFT JOIN (" + item_profiles.of_items("profiles") + ") p USING (item_idx) GROUP BY ALL), "
    "named AS (SELECT CAST(DATE '1970-01-01' + f.day AS TIMESTAMP) AS week, p.tree_version, p.source, p.segment, "
    "p.consensus_node, f.tier, f.stage, n.lineage[1] AS top, f.answers, "
    + ", ".join("f.no_" + c for c, _ in ANSWER_FIELDS)
    + " FROM fine f LEFT JOIN profiles p USING (profile) "
    "LEFT JOIN d_nodes n ON n.tree_version = f.answer_version AND n.value_idx = f.value_idx) "
    "SELECT week, tree_version, source, segment, consensus_node, tier, stage, top, GROUPING(tier) = 0 AS by_tier, "
    "GROUPING(stage) = 0 AS by_stage, CAST(sum(answers) AS BIGINT) AS answers, "
    + ", ".join("CAST(sum(no_" + c + ") AS BIGINT) AS no_" + c for c, _ in ANSWER_FIELDS)
    + " FROM named GROUP BY GROUPING SETS ((week, tree_version, source, segment, consensus_node, top), "
    "(week, tree_version, source, segment, consensus_node, top, tier), "
    "(week, tree_version, source, segment, consensus_node, top, stage), "
    "(week, tree_version, source, segment, consensus_node, top, tier, stage))"
)


def _per_annotator(pred: str) -> str:
    """Answers, timed answers and median duration per annotator, with the population median beside them.

    The answers are read twice rather than shared: DuckDB would materialise a shared ``a`` (ten million rows
    at refresh) and scan it back, which cost three times the two narrow scans."""
    return (
        "WITH a AS NOT MATERIALIZED (SELECT a.annotator_id, a.annotator_kind, a.tier, a.duration_s FROM d_answers a "  # noqa: S608 - fixed
        "WHERE " + pred + "), "
        "pop AS (SELECT median(duration_s) AS population_median_s FROM a) "
        "SELECT annotator_id, any_value(annotator_kind) AS annotator_kind, any_value(tier) AS tier, "
        "count(*) AS answers, count(duration_s) AS timed_answers, median(duration_s) AS median_duration_s, "
        "any_value(pop.population_median_s) AS population_median_s FROM a, pop GROUP BY annotator_id"
    )


def _source_top(answers: str) -> str:
    """Answers per source and top-level branch (grouped by node first: a list lookup per answer is slow)."""
    return (
        "SELECT c.source, n.lineage[1] AS top, sum(c.n) AS n FROM (SELECT a.source, a.tree_version, a.node_id, "  # noqa: S608 - fixed
        "count(*) AS n FROM " + answers + " AND a.source IS NOT NULL GROUP BY ALL) c "
        "JOIN d_nodes n USING (tree_version, node_id) GROUP BY ALL"
    )


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Materialise the unfiltered checks; medians and cross-split groups are global, so always in full. None
    of them reads the Dawid-Skene tables, so refresh runs this step while the model fits."""
    con.execute("CREATE OR REPLACE TABLE d_dq_duplicates AS " + DUPLICATES)
    con.execute("CREATE OR REPLACE TABLE d_dq_annotators AS " + _per_annotator("TRUE"))
    con.execute(CELLS)
    frame_writes.store(con, "d_dq_missing", _missing_computed(con, Filters()))
    return "full"


def _stored(con: duckdb.DuckDBPyConnection, f: Filters) -> bool:
    return f.is_empty() and all(soft_labels.table_exists(con, t) for t in TABLES)


def _cells(con: duckdb.DuckDBPyConnection, f: Filters) -> tuple[str, list[Any]] | None:
    """The cells' predicate for the filters, None when there are no cells or only the answers can tell."""
    return f.cell_where("c") if soft_labels.table_exists(con, CELLS_TABLE) else None


def _scope_among(con: duckdb.DuckDBPyConnection, f: Filters, candidates: str) -> tuple[str, list[Any]]:
    """The item_idx values among ``candidates`` (a fixed subquery of a few items) that the filters keep.

    The same items as soft_labels.item_scope: item-level filters read d_items; any other filter keeps the items
    with a matching answer. Where this process holds the answers (answer_arrays), those items are marked over
    them once (escalation.item_scope); elsewhere one scan of the answers probes the few candidates rather than
    collecting every item in scope.
    """
    if f.is_empty():
        return candidates, []
    if not soft_labels.item_level_only(f) and answer_arrays.holds(con):
        scope = escalation.item_scope(con, f)
        return "SELECT o.item_idx FROM (" + candidates + ") o WHERE " + scope.sql, scope.params  # noqa: S608 - fixed fragments, scope from item_scope
    if soft_labels.item_level_only(f):
        # item_scope's d_items rows, the candidates' only: its subquery ends in its WHERE predicate.
        sub, params = soft_labels.item_scope(f)
        return str(sub) + " AND x.item_idx IN (" + candidates + ")", params
    answers, params = f.answers_from()
    return "SELECT a.item_idx FROM " + answers + " AND a.item_idx IN (" + candidates + ")", params  # noqa: S608 - fixed fragments


def cross_split_duplicates(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Item ids, and content hashes, that occur in more than one split (train/test leakage).

    A group is listed when at least one of its items is within the filters.
    """
    groups = "d_dq_duplicates" if soft_labels.table_exists(con, "d_dq_duplicates") else "(" + DUPLICATES + ")"
    if f.is_empty():
        return con.execute(
            "SELECT g.* FROM " + groups + " g ORDER BY g.kind DESC, g.n_items DESC, g.key"  # noqa: S608 - fixed SQL fragments
        ).df()[DUPLICATE_COLUMNS]
    # The groups' few items by index, then which of them are in scope.
    scope, params = _scope_among(con, f, "SELECT item_idx FROM u")
    return con.execute(
        "WITH u AS (SELECT g.kind, g.key, x.item_idx FROM (SELECT kind, key, unnest(items) AS item_id FROM "  # noqa: S608 - fixed SQL fragments
        + groups + ") g JOIN d_item_index x USING (item_id)), "
        "hit AS (SELECT DISTINCT u.kind, u.key FROM u WHERE u.item_idx IN (" + scope + ")) "
        "SELECT g.* FROM " + groups + " g SEMI JOIN hit USING (kind, key) "
        "ORDER BY g.kind DESC, g.n_items DESC, g.key",
        params,
    ).df()[DUPLICATE_COLUMNS]


def missing_metadata(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """For each field a view needs, how many answers or items lack it."""
    if _stored(con, f):
        return con.execute("SELECT * FROM d_dq_missing").df()[MISSING_COLUMNS]
    return _missing_computed(con, f)


def _answer_counts(con: duckdb.DuckDBPyConnection, f: Filters) -> list[int]:
    """Answers in scope, then those lacking each ANSWER_FIELDS field: summed from the cells when they can say."""
    cells = _cells(con, f)
    if cells is None:
        answers, params = f.answers_from()
        counts = ", ".join("count(*) FILTER (WHERE a." + c + " IS NULL)" for c, _ in ANSWER_FIELDS)
        sql = "SELECT count(*), " + counts + " FROM " + answers  # noqa: S608 - fixed columns
    else:
        where, params = cells
        sums = ", ".join("coalesce(sum(c.no_" + c + "), 0)" for c, _ in ANSWER_FIELDS)
        sql = "SELECT coalesce(sum(c.answers), 0), " + sums + " FROM " + CELLS_TABLE + " c WHERE " + where  # noqa: S608 - fixed columns
    return [int(v) for v in con.execute(sql, params).fetchall()[0]]


def _items_missing(con: duckdb.DuckDBPyConnection, f: Filters) -> list[int]:
    """Items in scope lacking each ITEM_FIELDS field: the few incomplete items, then which of them are in scope."""
    incomplete = "SELECT d.item_idx FROM d_items d WHERE " + " OR ".join("d." + c + " IS NULL" for c, _ in ITEM_FIELDS)  # noqa: S608 - fixed columns
    scope, params = _scope_among(con, f, incomplete)
    counts = ", ".join("count(*) FILTER (WHERE d." + c + " IS NULL)" for c, _ in ITEM_FIELDS)
    row = con.execute(
        "SELECT " + counts + " FROM d_items d WHERE d.item_idx IN (" + scope + ")", params  # noqa: S608 - fixed columns
    ).fetchall()[0]
    return [int(v) for v in row]


def _missing_counts(con: duckdb.DuckDBPyConnection, f: Filters) -> dict[tuple[str, str], int]:
    """missing_metadata's ``missing`` column alone: the items in scope need not be counted (an answer-level
    filter would take a pass collecting every item it keeps)."""
    if _stored(con, f) or not soft_labels.table_exists(con, "d_answers"):
        return missing_metadata(con, f).set_index(["table", "field"])["missing"].to_dict()
    answers = zip((("annotations", c) for c, _ in ANSWER_FIELDS), _answer_counts(con, f)[1:], strict=True)
    items = zip((("items", c) for c, _ in ITEM_FIELDS), _items_missing(con, f), strict=True)
    return dict([*answers, *items])


def _missing_computed(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    if not soft_labels.table_exists(con, "d_answers"):
        return soft_labels.empty_frame(MISSING_COLUMNS)
    item_pred, item_params = soft_labels.scoped("d.item_idx", f)
    items = con.execute("SELECT count(*) FROM d_items d WHERE " + item_pred, item_params).fetchall()[0]  # noqa: S608 - scope predicate
    rows = []
    for table, fields, counts in (
        ("annotations", ANSWER_FIELDS, _answer_counts(con, f)),
        ("items", ITEM_FIELDS, [int(items[0]), *_items_missing(con, f)]),
    ):
        total = counts[0]
        for (field, needed_by), missing in zip(fields, counts[1:], strict=True):
            rows.append(
                {
                    "table": table,
                    "field": field,
                    "missing": missing,
                    "total": total,
                    "share": missing / total if total else float("nan"),
                    "needed_by": needed_by,
                }
            )
    return pd.DataFrame(rows, columns=MISSING_COLUMNS)


# The first pass lists each annotator's durations below a bound guessed from the unfiltered population
# median; a filter that raises the population median by more than this factor costs a second pass.
BOUND_MARGIN = 1.5
SPEED_SCAN = (
    "SELECT GROUPING(a.annotator_idx) = 1 AS pooled, a.annotator_idx, a.duration_s, count(*) AS answers, "
    "count(a.duration_s) AS timed, list(a.duration_s) FILTER (WHERE a.duration_s < ?) AS low, "
    "min(a.duration_s) FILTER (WHERE a.duration_s >= ?) AS high, any_value(a.annotator_kind) AS kind, "
    "any_value(a.tier) AS tier FROM {answers} "
    "GROUP BY GROUPING SETS ((a.annotator_idx), (a.duration_s))"
)
# The candidates' rows from the scan's lists; each annotator has one kind and tier (derived_base takes them from
# one annotators row), so the scan's any_value is theirs, where a second pass over every answer looked them up.
FAST_ROWS = (
    "(SELECT x.annotator_id, m.annotator_kind, m.tier, m.answers, m.timed_answers, m.median_duration_s, "
    "CAST(? AS DOUBLE) AS population_median_s FROM (SELECT unnest(CAST(? AS INTEGER[])) AS annotator_idx, "
    "unnest(CAST(? AS VARCHAR[])) AS annotator_kind, unnest(CAST(? AS VARCHAR[])) AS tier, "
    "unnest(CAST(? AS BIGINT[])) AS answers, unnest(CAST(? AS BIGINT[])) AS timed_answers, "
    "unnest(CAST(? AS DOUBLE[])) AS median_duration_s) m JOIN d_annotator_index x USING (annotator_idx))"
)


def _middle(lo: float, hi: float) -> float:
    """A median from its two middle values (the same one for an odd count), as DuckDB's median computes it."""
    return (lo + hi) / 2


def _median(values: npt.NDArray[np.float64]) -> float:
    """The median of some values (at least one), from a partition rather than a sort."""
    middles = [(values.size - 1) // 2, values.size // 2]
    low, high = np.partition(values, middles)[middles]
    return _middle(float(low), float(high))


def _median_of_counts(values: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]) -> float | None:
    """The median of ``values`` each repeated ``counts`` times; None when there are none."""
    order = np.argsort(values, kind="stable")  # NaN last, where DuckDB sorts it
    values, ends = values[order], np.cumsum(counts[order])
    total = int(ends[-1]) if ends.size else 0
    if total == 0:
        return None
    lo, hi = np.searchsorted(ends, [(total - 1) // 2, total // 2], side="right")
    return _middle(float(values[lo]), float(values[hi]))


def _fast_candidates(
    con: duckdb.DuckDBPyConnection, f: Filters, min_seconds: float, relative: float
) -> tuple[str, list[Any]]:
    """_per_annotator's rows for the filters, for the annotators whose median may be below the too-fast bar.

    Medians per annotator over every answer in scope are the costly part of the check, yet only medians under
    the bar are shown, and such a median is decided by the durations under the bar. So one pass counts each
    annotator's answers, lists only their durations below a bound at or above the bar, and counts the answers
    per distinct duration for the population median (which sets the bar); the medians are then picked from
    the short lists. An annotator left out has a median at or above the bound, so none is flagged wrongly.
    """
    scope = answer_arrays.in_scope(con, f)
    if scope is not None:
        return _fast_in_memory(con, *scope, min_seconds, relative)
    answers, params = f.answers_from()
    bound = min_seconds
    if soft_labels.table_exists(con, "d_dq_annotators"):
        row = first_row(con.execute("SELECT max(population_median_s) FROM d_dq_annotators"))
        if row is not None and row[0] is not None:
            bound = max(bound, relative * float(row[0]) * BOUND_MARGIN)
    while True:
        rows = con.execute(SPEED_SCAN.replace("{answers}", answers), [bound, bound, *params]).fetchall()
        pooled = [(r[2], r[4]) for r in rows if r[0]]
        population = _median_of_counts(
            np.array([v for v, _ in pooled], dtype=float), np.array([n for _, n in pooled], dtype=np.int64)
        )
        bar = min_seconds if population is None else max(min_seconds, relative * population)
        if not bar > bound:
            break
        bound = bar  # the filters raised the population median past the guess: list up to the bar itself
    columns: dict[str, list[Any]] = {"idx": [], "kind": [], "tier": [], "answers": [], "timed": [], "median": []}
    for _, idx, _, n, timed, listed, high, kind, tier in (r for r in rows if not r[0]):
        low = np.sort(np.array(listed or [], dtype=float))
        first, second = (timed - 1) // 2, timed // 2
        if timed == 0 or first >= low.size:
            continue
        hi = low[second] if second < low.size else (float("nan") if high is None else high)
        columns["idx"].append(idx)
        columns["kind"].append(kind)
        columns["tier"].append(tier)
        columns["answers"].append(n)
        columns["timed"].append(timed)
        columns["median"].append(_middle(float(low[first]), float(hi)))
    return FAST_ROWS, [population, *columns.values()]


# Each annotator's kind and tier from the annotators row derived_base joins to their answers.
PEOPLE = (
    "SELECT x.annotator_idx, coalesce(an.kind, 'crowd'), an.tier FROM d_annotator_index x "
    "LEFT JOIN (SELECT DISTINCT ON (annotator_id) annotator_id, kind, tier FROM annotators) an USING (annotator_id) "
    "WHERE x.annotator_idx IN (SELECT unnest(CAST(? AS INTEGER[])))"
)


def _fast_in_memory(
    con: duckdb.DuckDBPyConnection, columns: dict[str, np.ndarray], keep: np.ndarray, min_seconds: float,
    relative: float,
) -> tuple[str, list[Any]]:
    """_fast_candidates over the answers held in memory (answer_arrays), where a filtered SQL scan of every
    answer cost most of the overview's wait: one compiled pass counts each annotator's answers and collects
    the durations for the population median (a partition), a second counts each annotator's durations under
    the bar, and exact medians are taken only for the annotators whose lower middle duration is under it, the
    only ones whose median can be."""
    annotator, duration = columns["annotator_idx"], columns["duration"]
    size = int(annotator.max()) + 1 if annotator.size else 0
    answers, timed, seconds = compiled_sums.timed_counts(keep, annotator, duration, size)
    population = _median(seconds) if seconds.size else None
    bar = min_seconds if population is None else max(min_seconds, relative * population)
    under = compiled_sums.under_counts(keep, annotator, duration, bar, size)
    candidates = np.flatnonzero((timed > 0) & (under > (timed - 1) // 2))
    chosen = np.zeros(size, dtype=bool)
    chosen[candidates] = True
    n = timed[candidates]
    who, seconds = compiled_sums.durations_of(keep, annotator, duration, chosen, int(n.sum()))
    order = np.argsort(who, kind="stable")  # each candidate's durations together (a radix sort on small ints)
    bounds = np.searchsorted(who[order], [*candidates, size])
    medians = [_median(seconds[order[low:high]]) for low, high in itertools.pairwise(bounds)]
    people = {r[0]: r[1:] for r in con.execute(PEOPLE, [candidates.tolist()]).fetchall()}
    found = [people.get(i, ("crowd", None)) for i in candidates.tolist()]
    return FAST_ROWS, [
        population,
        candidates.tolist(),
        [kind for kind, _ in found],
        [tier for _, tier in found],
        answers[candidates].tolist(),
        n.tolist(),
        medians,
    ]


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
        per, params = _fast_candidates(con, f, min_seconds, relative)
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
    cells = _cells(con, f)
    if cells is None:
        answers, params = f.answers_from()
        counts = con.execute(_source_top(answers), params).df()
    else:
        where, params = cells
        counts = con.execute(
            "SELECT c.source, c.top, sum(c.answers) AS n FROM " + CELLS_TABLE + " c "  # noqa: S608 - fixed columns
            "WHERE c.source IS NOT NULL AND " + where + " GROUP BY ALL",
            params,
        ).df()
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
    """One row per check for the overview: how many problems, and how serious ("ok" when none).

    The too-fast check runs on its own cursor and thread beside the others: under a filter it is mostly
    compiled passes over the answers held in memory and they are SQL, so on two cores the two overlap."""
    with ThreadPoolExecutor(max_workers=1) as pool, con.cursor() as cursor:
        fast = pool.submit(too_fast_annotators, cursor, f)
        duplicates = cross_split_duplicates(con, f)
        missing = _missing_counts(con, f)
        diverging = int(source_divergence(con, f)["flagged"].sum())
        n_fast = len(fast.result())
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
            n_fast,
            "warning",
            "annotators with a median answer time under 2 s or under 20% of the population median",
        )
    )
    rows.append(
        (
            "diverging_sources",
            diverging,
            "info",
            "sources whose top-level label distribution differs from all sources (JS distance > 0.15)",
        )
    )
    frame = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    frame.loc[frame["count"] == 0, "severity"] = "ok"
    return frame
