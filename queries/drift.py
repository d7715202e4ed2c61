"""Drift over time: label distributions, agreement, self-reported confidence, model-versus-human
disagreement and each annotator, every window compared with a reference window at the start.

Definitions:

- Reference: the answers of the first ``reference_weeks`` weeks (default 4) of the filtered data; only
  windows starting after it are compared, each against the pooled reference.
- Branch distribution (drift_matrix): for an internal node, the answers whose lineage passes through it
  and goes deeper, counted by the child on their path. Jensen-Shannon distance (base 2, so in [0, 1]);
  population stability index sum (p - q) ln(p / q) with shares floored at PSI_FLOOR so that an empty child
  does not make it infinite; chi-square test of homogeneity on the 2 x K table (window versus reference,
  children seen in either, no continuity correction).
- Node share (label_share_drift): each node's share of its parent's answers (top-level areas: of all
  answers), two-proportion z-test. A branch that grows, like one fed by a new source, is itself the
  finding there, while the branch distribution only sees the mix below it.
- Both label tests treat each item's answers in a window as one cluster, since they are not independent
  draws: each count carries its design effect, the item-clustered variance of its share over the binomial
  one, estimated from the window and the reference together (see design_effects). It differs by node: a
  small node's answers come mostly from its few true items, each answered many times, while its parent's
  also hold single stray answers on other items, so one factor per (branch, window) made small nodes' shares
  look far surer than they are. The share test scales its binomial variance by it; the chi-square is divided
  by Rao and Scott's mean design effect (first-order correction). Without either a warehouse without events
  raises alerts.
- Multiple testing: Benjamini-Hochberg (false discovery rate) over all cells of one analysis, because
  an alert list is a screening step and Holm's family-wise control would hide real weekly effects at
  demo scale.
- Alerts need both evidence and size: p_adjusted < ALERT_P and an effect at least the metric's
  threshold in ALERT_SIZE. With millions of answers tiny wobbles are significant, so the size threshold
  keeps a warehouse without planted events quiet; the values were checked on the demo (20k and 200k items)
  with and without its events (seeds 1-10 at 20k items): with events the drift branch and week come first,
  the guideline change and the degrading annotator follow, and the control raises nothing. Each (subject,
  metric) is one alert: whether it alerts is decided by these thresholds alone; it is dated at the estimated
  start of its change (_onset: the first week of a real change often misses the thresholds alone), and its
  size and p-values are those of its peak window, the alerting window of the largest size, with the number
  of alerting windows; nested branches alerting on the same kind fold into the highest one (see
  _fold_into_ancestors).
- Sizes: label_js the JS distance; label_share |ln(share / reference share)|; agreement the drop in
  nominal alpha among the items of the branch's subtree (answers at full depth, so confusions between
  siblings deep in the branch count); confidence |Cohen's d| against the reference spread; model
  disagreement the rise in the share of items whose predicted leaf (argmax of the probabilities)
  differs from the consensus; annotator the drop in the share of their answers equal to the item's
  consensus. For annotator alerts the branch column holds the annotator id.
- Order: by kind first (label drift, then agreement, model disagreement, confidence, annotators), since
  sizes of different kinds are not comparable, then by size relative to the kind's threshold.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from queries import agreement, answer_arrays, compiled_sums, frame_writes, soft_labels
from queries.connection import meta_value
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.results import arrays, first_row

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

MATRIX_COLUMNS = ["branch", "week", "js", "psi", "chi2", "p_value", "p_adjusted", "n"]
ALERT_COLUMNS = ["branch", "week", "metric", "size", "p_value", "p_adjusted", "windows"]
METRICS = ("js", "psi", "chi2")
PSI_FLOOR = 1e-4
ALERT_P = 1e-3
ALERT_SIZE = {
    "label_js": 0.1,
    "label_share": float(np.log(1.5)),
    "agreement": 0.1,
    "confidence": 0.3,
    "model_disagreement": 0.1,
    "annotator_agreement": 0.2,
}
ROOT = "(all)"  # the parent of the top-level areas, in label counts only
FAMILY = {"label_js": "label", "label_share": "label"}  # one finding, two views: folded together
KIND_ORDER = ["label", "agreement", "model_disagreement", "confidence", "annotator_agreement"]
MIN_ANSWERS = 20  # fewer answers in a window or in the reference say nothing
MIN_ITEMS = 30  # alpha from fewer items has too wide and too skewed an interval for a z-test
REFERENCE_WEEKS = 4
# Unfiltered results at the default reference, written by refresh so that pages read them.
STORED = {
    "matrix": "d_drift_matrix",
    "shares": "d_drift_shares",
    "agreement": "d_drift_agreement",
    "confidence": "d_drift_confidence",
    "model": "d_drift_model",
    "annotators": "d_drift_annotators",
    "alerts": "d_drift_alerts",
}

FIRST_WEEK = "SELECT min(a.week) FROM d_answers a WHERE {P}"
# Where refresh keeps the end of the stored frames' reference window, so that pages need not look for it.
REFERENCE_END_KEY = "drift_reference_end"


def _reference_end(con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int) -> pd.Timestamp | None:
    """The first dated week in scope plus the reference window: from the held answers' week days where a
    process holds them (a scan of every answer otherwise, the larger part of a filtered matrix question)."""
    _check_reference(reference_weeks)
    scope = answer_arrays.in_scope(con, f)
    if scope is not None:
        day = compiled_sums.masked_min(scope[1], scope[0]["day"], answer_arrays.NO_DAY)
        first = None if day == answer_arrays.NO_DAY else pd.Timestamp(day, unit="D")
    else:
        clause, params = f.where("a")
        row = first_row(con.execute(FIRST_WEEK.replace("{P}", clause), params))
        first = None if not row or row[0] is None else pd.Timestamp(row[0])
    return None if first is None else first + pd.Timedelta(weeks=reference_weeks)


def _reference_end_of(answers: agreement.Fetched, reference_weeks: int) -> pd.Timestamp | None:
    """_reference_end from answers fetched by week (which leaves out the undated ones, as min(week) does)."""
    _check_reference(reference_weeks)
    if answers.day is None or answers.day.size == 0:
        return None
    return pd.Timestamp(int(answers.day.min()), unit="D") + pd.Timedelta(weeks=reference_weeks)


def _check_reference(reference_weeks: int) -> None:
    if reference_weeks < 1:
        raise LabelgovError(f"the reference window needs at least one week, got {reference_weeks}")


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.size, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok])]
    ranked = p[order] * ok.size / np.arange(1, ok.size + 1)
    out[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    return out


def _label(value: Any) -> str:
    return pd.Timestamp(value).date().isoformat()


def _labels(values: Any) -> list[str]:
    """_label of every value of a column at once."""
    days = pd.to_datetime(pd.Series(values)).to_numpy().astype("datetime64[D]").astype(np.int64)
    return agreement.day_label(days)


def distribution_tests(
    current: np.ndarray, reference: np.ndarray, design: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """JS distance, PSI and the chi-square test for rows of counts (tests x children), vectorised.

    With ``design`` (each child's design effect, tests x children) the chi-square is Rao and Scott's
    first-order correction for clustered counts: Pearson's statistic divided by its expected value under the
    null over its degrees of freedom, sum_c (1 - P_c) d_c / (K - 1) with P_c the pooled share of child c,
    which is 1 when every design effect is 1.
    """
    current = np.asarray(current, dtype=float)
    reference = np.asarray(reference, dtype=float)
    n_cur = current.sum(axis=1, keepdims=True)
    n_ref = reference.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p, q = current / n_cur, reference / n_ref
        mid = (p + q) / 2
        kl_p = np.where(p > 0, p * np.log2(p / mid), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / mid), 0.0).sum(axis=1)
        js = np.sqrt(np.clip((kl_p + kl_q) / 2, 0.0, None))
        pf, qf = np.maximum(p, PSI_FLOOR), np.maximum(q, PSI_FLOOR)
        psi = ((pf - qf) * np.log(pf / qf)).sum(axis=1)
        col = current + reference
        total = n_cur + n_ref
        used = col > 0
        expected_cur, expected_ref = n_cur * col / total, n_ref * col / total
        chi2 = np.where(used, (current - expected_cur) ** 2 / expected_cur, 0.0).sum(axis=1) + np.where(
            used, (reference - expected_ref) ** 2 / expected_ref, 0.0
        ).sum(axis=1)
        dof = used.sum(axis=1) - 1
        if design is not None:
            chi2 = chi2 * dof / np.where(used, (1 - col / total) * design, 0.0).sum(axis=1)
        p_value = np.where(dof >= 1, stats.chi2.sf(chi2, np.maximum(dof, 1)), np.nan)
    return {"js": js, "psi": psi, "chi2": np.where(dof >= 1, chi2, np.nan), "p_value": p_value}


def drift_matrix(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    metric: str = "js",
    window: str = "week",
    reference_weeks: int = REFERENCE_WEEKS,
) -> pd.DataFrame:
    """Each branch's child distribution per window against the reference, largest ``metric`` first."""
    _check_metric(metric)
    _check_window(window)
    if window != "week":
        return by_metric(_matrix(con, f, window, reference_weeks), metric)
    if _no_window_after_reference(f, reference_weeks):
        frame = _matrix_from(None, None)
    else:
        frame = _stored_or_live(con, f, reference_weeks, "matrix", lambda: _matrix(con, f, window, reference_weeks))
    return by_metric(frame, metric)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise LabelgovError(f"unknown drift metric {metric!r}; use one of {', '.join(METRICS)}")


def _check_window(window: str) -> None:
    if window not in agreement.WINDOW_DAYS:
        raise LabelgovError(f"unknown window {window!r}; use one of {', '.join(agreement.WINDOW_DAYS)}")


def by_metric(matrix: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Largest ``metric`` first; ties (common: a measure is 0 wherever nothing moved) by branch and week, so
    that the order does not depend on the order the rows were computed in."""
    return matrix.sort_values([metric, "branch", "week"], ascending=[False, True, True], ignore_index=True)


def _no_window_after_reference(f: Filters, reference_weeks: int) -> bool:
    """True when the date filter is too short for any window to start after the reference: the reference
    starts at the week of the first answer in scope, which is no earlier than the week of ``f.start``, and
    no answer in scope is later than the week of ``f.end``; every comparison is then empty, without a scan."""
    if f.start is None or f.end is None:
        return False
    first = pd.Timestamp(f.start).to_period("W-SUN").start_time
    last = pd.Timestamp(f.end).to_period("W-SUN").start_time
    return last < first + pd.Timedelta(weeks=reference_weeks)


def _stored_or_live(
    con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int, key: str, compute: Callable[[], pd.DataFrame]
) -> pd.DataFrame:
    """The refreshed table for the unfiltered default question, otherwise computed from the answers."""
    if _refreshed_answer(con, f, reference_weeks, key):
        return con.execute("SELECT * FROM " + STORED[key]).df()  # noqa: S608 - table name from STORED
    return compute()


def _refreshed_answer(con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int, *keys: str) -> bool:
    """Whether refresh stored the frames ``keys`` for this question (no filters, the default reference)."""
    return (
        f.is_empty()
        and reference_weeks == REFERENCE_WEEKS
        and all(soft_labels.table_exists(con, STORED[key]) for key in keys)
    )


def _label_counts(con: duckdb.DuckDBPyConnection, f: Filters, window: str) -> _LabelCells:
    space = agreement.value_space(con)
    return _label_cells(agreement.scan(con, f, window), space)


COUNT_COLUMNS = ["branch", "week", "child", "n", "items", "sum_y2", "sum_ym", "sum_m2"]


@dataclass(frozen=True)
class _LabelCells:
    """label_counts' rows as arrays: branch and child as codes into ``names`` (node ids, then the root), the
    window's start in days since 1970. The tests read them as arrays: a frame of names only to take the names
    apart again cost the label views more than their tests."""

    names: np.ndarray
    branch: np.ndarray
    day: np.ndarray
    child: np.ndarray
    n: np.ndarray
    items: np.ndarray
    sum_y2: np.ndarray
    sum_ym: np.ndarray
    sum_m2: np.ndarray

    def where(self, keep: np.ndarray) -> _LabelCells:
        return _LabelCells(self.names, *(getattr(self, f)[keep] for f in _LABEL_ROWS))


_LABEL_ROWS = ("branch", "day", "child", "n", "items", "sum_y2", "sum_ym", "sum_m2")


def label_counts(answers: agreement.Answers, space: agreement.ValueSpace) -> pd.DataFrame:
    """Answers per (branch, window, child), the root included, with the per-item sums the tests' design
    effects need.

    The answers of one item are not independent draws, and how much they repeat each other differs by node: a
    small node's answers mostly come from the few items that are truly of that node, each answered nine times
    over, while its parent's count also holds single stray answers on many other items. So each (branch,
    window) cell carries, over its distinct items i with m_i answers in the branch of which y_i are on the
    child: the number of items, sum y_i^2 and sum y_i m_i per child and sum m_i^2 (see design_effects).

    The answers arrive sorted by item and window (one a row, or as runs: see Answers.runs), so each (item,
    window) unit is a run; one compiled pass (compiled_sums.label_counts) counts every unit's answers per node at
    every depth and adds its sums to the cells.
    """
    cells = _label_cells(answers, space)
    return pd.DataFrame(
        {
            "branch": cells.names[cells.branch],
            "week": pd.to_datetime(cells.day, unit="D"),
            "child": cells.names[cells.child],
            "n": cells.n,
            "items": cells.items,
            "sum_y2": cells.sum_y2,
            "sum_ym": cells.sum_ym,
            "sum_m2": cells.sum_m2,
        }
    )


def _label_cells(answers: agreement.Answers, space: agreement.ValueSpace) -> _LabelCells:
    n_values = len(space.node_ids)
    names = np.array([*space.node_ids, ROOT], dtype=object)
    if answers.day is None or answers.item.size == 0:
        none = np.zeros(0, dtype=np.int64)
        return _LabelCells(names, none, none, none, none, none, np.zeros(0), np.zeros(0), np.zeros(0))
    days, window_of_day = compiled_sums.day_windows(answers.day)
    first_day = int(days[0])
    # Each node's parent, the root (n_values) for the top-level areas.
    parent = np.full(n_values, n_values, dtype=np.int64)
    for d in range(1, space.ancestors.shape[0]):
        inner = space.ancestors[d] >= 0
        parent[space.ancestors[d, inner]] = space.ancestors[d - 1, inner]
    counts, sum_y2, sum_ym, items, sum_m2 = compiled_sums.label_counts(
        answers.item, answers.day, answers.value, answers.weight, first_day, window_of_day, space.ancestors,
        space.depth, parent, days.size,
    )
    branch, window, child = np.nonzero(counts)
    return _LabelCells(
        names,
        branch,
        days[window],
        child,
        counts[branch, window, child].astype(np.int64),
        items[branch, window].astype(np.int64),
        sum_y2[branch, window, child],
        sum_ym[branch, window, child],
        sum_m2[branch, window],
    )


def design_effects(n: np.ndarray, sum_y2: np.ndarray, sum_ym: np.ndarray, sum_m2: np.ndarray) -> np.ndarray:
    """Each child's design effect in each row of answer counts (rows x children), from label_counts' sums.

    A share p = sum y_i / sum m_i over items is a ratio estimator; its item-clustered variance is
    sum (y_i - p m_i)^2 / (sum m_i)^2 = (sum y^2 - 2 p sum y m + p^2 sum m^2) / N^2, and the design effect is
    that over the binomial p (1 - p) / N of N independent answers. It is floored at 1 (answers of one item are
    never worth more than independent draws), and NaN where p is 0 or 1, which says nothing about clustering.
    """
    total = n.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = n / total
        clustered = sum_y2 - 2 * p * sum_ym + p * p * sum_m2[:, None]
        effect = clustered / (p * (1 - p) * total)
    return np.where((p > 0) & (p < 1), np.maximum(effect, 1.0), np.nan)


@dataclass(frozen=True)
class _Aligned:
    """The label counts of every (branch, window) after the reference as rows x children, beside the same
    branch's pooled reference row, with the distinct items of both and each count's design effect.

    Each (item, window) is one cluster. The design effect is that of the window and the reference together,
    the variance the null hypothesis (the same distribution on both sides) implies: one window's own estimate
    is noisy for a small node, and lowest exactly when the node's clustered items happen to be missing, which
    is when its share drops."""

    branch: np.ndarray  # per row, the branch's name
    day: np.ndarray  # per row, the window's start in days since 1970
    children: np.ndarray  # per column, the child's name
    current: np.ndarray
    reference: np.ndarray
    design: np.ndarray
    items: tuple[np.ndarray, np.ndarray]  # per row: current, reference


def _aligned(cells: _LabelCells, end: pd.Timestamp) -> _Aligned | None:
    """Rows in (branch, week) order and children in name order, as a pivot table of the counts would give;
    built by bincounts over integer codes, since pandas' pivot tables cost more than the tests themselves."""
    early = cells.day < _day_number(end)
    if early.all() or not early.any():
        return None
    rank = _name_ranks(cells.names)
    branch, branch_ranks = pd.factorize(rank[cells.branch], sort=True)
    weeks, week_days = pd.factorize(cells.day, sort=True)
    child, child_ranks = pd.factorize(rank[cells.child], sort=True)
    n_branches, n_weeks, n_children = branch_ranks.size, week_days.size, child_ranks.size
    cell = branch * n_weeks + weeks
    rows, row_of = np.unique(cell[~early], return_inverse=True)
    row_branch = rows // n_weeks
    # Each (branch, week) cell's items and sum m^2 repeat on every child's row: any row gives them.
    per_cell = np.zeros((n_branches * n_weeks, 2))
    per_cell[cell, 0], per_cell[cell, 1] = cells.items, cells.sum_m2
    early_cells = np.unique(cell[early])
    cell_ref = np.zeros((n_branches, 2))
    np.add.at(cell_ref, early_cells // n_weeks, per_cell[early_cells])
    cell_now, cell_ref = per_cell[rows], cell_ref[row_branch]

    def table(values: np.ndarray, keep: np.ndarray, row: np.ndarray, n_rows: int) -> np.ndarray:
        code = row * n_children + child[keep]
        return np.bincount(code, weights=values[keep], minlength=n_rows * n_children).reshape(n_rows, n_children)

    sums = {"n": cells.n.astype(float), "sum_y2": cells.sum_y2, "sum_ym": cells.sum_ym}
    now = {c: table(v, ~early, row_of, rows.size) for c, v in sums.items()}
    then = {c: table(v, early, branch[early], n_branches)[row_branch] for c, v in sums.items()}
    design = design_effects(
        now["n"] + then["n"], now["sum_y2"] + then["sum_y2"], now["sum_ym"] + then["sum_ym"],
        cell_now[:, 1] + cell_ref[:, 1],
    )
    by_rank = np.argsort(rank)  # the code of each name rank
    # NaN: a child seen in neither side or the only one seen, which takes no part in a test.
    return _Aligned(
        cells.names[by_rank[branch_ranks[row_branch]]], week_days[rows % n_weeks], cells.names[by_rank[child_ranks]],
        now["n"], then["n"], np.nan_to_num(design, nan=1.0), (cell_now[:, 0], cell_ref[:, 0]),
    )


def _matrix(con: duckdb.DuckDBPyConnection, f: Filters, window: str, reference_weeks: int) -> pd.DataFrame:
    end = _reference_end(con, f, reference_weeks)
    return _matrix_from(_label_counts(con, f, window) if end is not None else None, end)


def _matrix_from(cells: _LabelCells | None, end: pd.Timestamp | None) -> pd.DataFrame:
    empty = pd.DataFrame({c: [] for c in MATRIX_COLUMNS})
    if cells is None or cells.n.size == 0 or end is None:
        return empty
    aligned = _aligned(cells.where(cells.branch != cells.names.size - 1), end)  # the root's row: shares only
    if aligned is None:
        return empty
    result = distribution_tests(aligned.current, aligned.reference, aligned.design)
    small = (aligned.items[0] < MIN_ANSWERS) | (aligned.items[1] < MIN_ANSWERS)
    result["p_value"][small] = np.nan
    return pd.DataFrame(
        {
            "branch": aligned.branch,
            "week": agreement.day_label(aligned.day),
            **result,
            "p_adjusted": bh_adjust(result["p_value"]),
            "n": aligned.current.sum(axis=1).astype(np.int64),
        }
    )[MATRIX_COLUMNS]


def _compare_rates(
    cells: _Cells, names: np.ndarray, key: str, reference_weeks_end: pd.Timestamp, success: str
) -> pd.DataFrame:
    """Per (key, week) share success/n against the key's pooled reference share: two-proportion z-test.
    Keys without reference rows are not compared. ``cells.key`` holds integer codes into ``names``; the names
    are put in only for the compared rows, which are sorted by name and week through each name's rank (an
    annotator table has tens of thousands of rows, where a pandas group-by, merge or sort of the names cost
    more than the test)."""
    code, days = cells.key.astype(np.int64), cells.day
    early = days < _day_number(reference_weeks_end)
    hits, n = cells.sums[success].astype(float), cells.n.astype(float)
    ref_hits = np.bincount(code[early], weights=hits[early], minlength=names.size)
    ref_n = np.bincount(code[early], weights=n[early], minlength=names.size)
    has_reference = np.zeros(names.size, dtype=bool)
    has_reference[code[early]] = True
    later = np.flatnonzero(~early & has_reference[code])
    later = later[_by_name_and_day(names, code[later], days[later])]
    hits, n, their = hits[later], n[later], code[later]
    rate, ref_rate = hits / n, ref_hits[their] / ref_n[their]
    pooled = (hits + ref_hits[their]) / (n + ref_n[their])
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / ref_n[their]))
        z = (rate - ref_rate) / se
    p_value = np.where(
        (n >= MIN_ANSWERS) & (ref_n[their] >= MIN_ANSWERS) & (se > 0), 2 * stats.norm.sf(np.abs(z)), np.nan
    )
    return pd.DataFrame(
        {
            key: names[their],
            "week": agreement.day_label(days[later]),
            "rate": rate,
            "reference_rate": ref_rate,
            "change": rate - ref_rate,
            "p_value": p_value,
            "p_adjusted": bh_adjust(p_value),
            "n": n.astype(np.int64),
        }
    )


def _by_name_and_day(names: np.ndarray, code: np.ndarray, day: np.ndarray) -> np.ndarray:
    """The order of rows (a code into ``names`` and a day each) by name, then day."""
    return np.lexsort((day, _name_ranks(names)[code]))


def _name_ranks(names: np.ndarray) -> np.ndarray:
    """Each code's place among ``names`` in name order: codes sort as their names through it."""
    rank = np.empty(names.size, dtype=np.int64)
    rank[np.argsort(names.astype(str), kind="stable")] = np.arange(names.size)
    return rank


def _day_number(stamp: pd.Timestamp) -> int:
    """Days since 1970, as the answers' day columns count them."""
    return int(np.datetime64(stamp, "D").astype(np.int64))


SHARE_COLUMNS = ["node", "parent", "week", "share", "reference_share", "change", "p_value", "p_adjusted", "n"]


def label_share_drift(
    con: duckdb.DuckDBPyConnection, f: Filters, window: str = "week", reference_weeks: int = REFERENCE_WEEKS
) -> pd.DataFrame:
    """Each node's share of its parent's answers per window against the reference (two-proportion z-test on
    the design-effect counts): the view in which a branch that grows or shrinks is itself the finding.
    Top-level areas have the parent "(all)"."""
    _check_window(window)
    if window != "week":
        return _shares(con, f, window, reference_weeks)
    return _stored_or_live(con, f, reference_weeks, "shares", lambda: _shares(con, f, window, reference_weeks))


def _shares(con: duckdb.DuckDBPyConnection, f: Filters, window: str, reference_weeks: int) -> pd.DataFrame:
    end = _reference_end(con, f, reference_weeks)
    return _shares_from(_label_counts(con, f, window) if end is not None else None, end)


def _shares_from(cells: _LabelCells | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """Two-proportion z-test of each node's share with the binomial variance scaled by the node's design
    effect (see _Aligned): pooled share P, se^2 = d P (1 - P) (1 / N_cur + 1 / N_ref). Nodes missing from the
    reference or from the window are not compared."""
    empty = pd.DataFrame({c: [] for c in SHARE_COLUMNS})
    aligned = None if cells is None or cells.n.size == 0 or end is None else _aligned(cells, end)
    if aligned is None:
        return empty
    current, reference = aligned.current, aligned.reference
    n_cur, n_ref = current.sum(axis=1, keepdims=True), reference.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share, reference_share = current / n_cur, reference / n_ref
        pooled = (current + reference) / (n_cur + n_ref)
        se = np.sqrt(aligned.design * pooled * (1 - pooled) * (1 / n_cur + 1 / n_ref))
        z = (share - reference_share) / se
    enough = ((aligned.items[0] >= MIN_ANSWERS) & (aligned.items[1] >= MIN_ANSWERS))[:, None] & (se > 0)
    row, column = np.nonzero((current > 0) & (reference > 0))
    out = pd.DataFrame(
        {
            "node": aligned.children[column],
            "parent": aligned.branch[row],
            "week": agreement.day_label(aligned.day[row]),
            "share": share[row, column],
            "reference_share": reference_share[row, column],
            "change": (share - reference_share)[row, column],
            "p_value": np.where(enough, 2 * stats.norm.sf(np.abs(z)), np.nan)[row, column],
            "n": current[row, column].astype(np.int64),
        }
    )
    out["p_adjusted"] = bh_adjust(out["p_value"].to_numpy())
    return out[SHARE_COLUMNS].sort_values(["node", "week"], ignore_index=True)


AGREEMENT_DRIFT_COLUMNS = ["branch", "week", "alpha", "reference_alpha", "change", "p_value", "p_adjusted", "n_items"]


def agreement_drift(
    con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int = REFERENCE_WEEKS, bootstrap: int = 0
) -> pd.DataFrame:
    """Nominal alpha per branch and week against the branch's alpha over the reference window.

    The test is a z-test on the difference with standard errors from the 95% intervals (half-width / 1.96;
    analytic unless ``bootstrap`` replicates are asked for), which is enough to rank weeks; the intervals
    themselves are in the agreement tables.
    """
    return _stored_or_live(
        con,
        f,
        reference_weeks,
        "agreement",
        lambda: _agreement_drift(con, f, _reference_end(con, f, reference_weeks), bootstrap),
    )


def _agreement_drift(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    end: pd.Timestamp | None,
    bootstrap: int,
    scanned: tuple[agreement.Answers, agreement.ValueSpace] | None = None,
) -> pd.DataFrame:
    if end is None:
        return pd.DataFrame({c: [] for c in AGREEMENT_DRIFT_COLUMNS})
    if scanned is None:
        space = agreement.value_space(con)
        answers = agreement.scan(con, f)
    else:
        answers, space = scanned
    if answers.day is None:
        raise ValueError("agreement drift needs the answers' weeks")
    # Weeks start on Mondays and the reference ends on one, so an answer is in the reference window exactly
    # when its week starts before the end. The reference is pooled into one window, the day before the end (a
    # Sunday, so no week's start; every reference day is at most that, every later one above): one grouping by
    # subtree and window then gives the reference and every later week.
    pool_day = (end - pd.Timestamp("1970-01-01")).days - 1
    windows = agreement.Answers(answers.item, answers.value, np.maximum(answers.day, pool_day), answers.weight)
    table = agreement.grouped_answers(con, windows, space, "subtree_week", bootstrap, alpha_only=True)
    # Each weekly row against its branch's pooled row, by positions (a pandas merge cost more than the test).
    branch, week = table["branch"].to_numpy(dtype=object), table["week"].to_numpy(dtype=object)
    pooled = week == agreement.day_label(np.array([pool_day]))[0]
    code, names = pd.factorize(branch)
    reference_row = np.full(names.size, -1)
    reference_row[code[pooled]] = np.flatnonzero(pooled)
    rows = np.flatnonzero(~pooled & (reference_row[code] >= 0))
    ref = reference_row[code[rows]]
    alpha, n_items = table["alpha_nominal"].to_numpy(), table["n_items"].to_numpy()
    width = (table["ci_high"] - table["ci_low"]).to_numpy()
    change = alpha[rows] - alpha[ref]
    se = np.hypot(width[rows], width[ref]) / (2 * agreement.Z95)
    with np.errstate(divide="ignore", invalid="ignore"):
        enough = (n_items[rows] >= MIN_ITEMS) & (n_items[ref] >= MIN_ITEMS) & (se > 0)
        p_value = np.where(enough, 2 * stats.norm.sf(np.abs(change / se)), np.nan)
    out = pd.DataFrame(
        {
            "branch": branch[rows],
            "week": week[rows],
            "alpha": alpha[rows],
            "reference_alpha": alpha[ref],
            "change": change,
            "p_value": p_value,
            "p_adjusted": bh_adjust(p_value),
            "n_items": n_items[rows],
        }
    )
    return out.sort_values(["branch", "week"], ignore_index=True)


CONFIDENCE_COLUMNS = ["branch", "week", "mean", "reference_mean", "change", "effect_size", "p_value", "p_adjusted", "n"]


def confidence_drift(
    con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int = REFERENCE_WEEKS
) -> pd.DataFrame:
    """Mean self-reported confidence per top-level branch and week against the reference: Welch's t-test,
    effect size as Cohen's d against the reference standard deviation."""
    def compute() -> pd.DataFrame:
        fetched = agreement.fetch(con, f, confidence=True)
        tables = _week_tables(con, (fetched, agreement.value_space(con)))
        return _confidence(tables, _reference_end_of(fetched, reference_weeks))

    return _stored_or_live(con, f, reference_weeks, "confidence", compute)


@dataclass(frozen=True)
class _Cells:
    """Sums per (key, window) cell with rows, as a GROUP BY (key, week) would give them, as arrays: an integer
    key, the window's start (days since 1970), the rows ``n`` and each of ``sums``. Arrays rather than a frame:
    the tests on them are a few dozen vectorised steps, and pandas spent more on each than numpy on all."""

    key: np.ndarray
    day: np.ndarray
    n: np.ndarray
    sums: dict[str, np.ndarray]


def _cells(n: np.ndarray, sums: dict[str, np.ndarray], days: np.ndarray) -> _Cells:
    """The cells of (key x window) tables that have rows, key-major."""
    key, window = np.nonzero(n)
    return _Cells(key, days[window], n[key, window], {name: cells[key, window] for name, cells in sums.items()})


@dataclass
class _WeekTables:
    """The answer-level sums per (key, week) that confidence and annotator drift test, with the items that
    have an answer (a boolean table by item index), from one compiled pass over the fetched answers
    (compiled_sums.answer_week_sums). Keys are integer codes: confidence's index ``branches``, annotators'
    are annotator indices."""

    confidence: _Cells | None  # sums sum and sum_sq; None when not fetched with confidences
    annotators: _Cells | None  # sum agree; None when not fetched with annotators
    branches: np.ndarray
    items: np.ndarray


def _week_tables(
    con: duckdb.DuckDBPyConnection, fetched: tuple[agreement.Fetched, agreement.ValueSpace] | None
) -> _WeekTables | None:
    if fetched is None or fetched[0].day is None:
        return None
    answers, space = fetched
    consensus = (
        np.zeros(0, dtype=np.int64)
        if answers.annotator is None
        else agreement.consensus_by_item(con, space.node_ids, int(answers.item.max(initial=-1)) + 1)
    )
    top = space.ancestors[0] if space.ancestors.size else np.zeros(0, dtype=np.int64)
    days, stated, agreed, items = compiled_sums.answer_week_sums(
        answers.item, answers.value, answers.day, answers.annotator, answers.confidence, top, consensus,
        answers.confidence_levels,
    )
    return _WeekTables(
        None
        if answers.confidence is None
        else _cells(stated[..., 0], {"sum": stated[..., 1], "sum_sq": stated[..., 2]}, days),
        None if answers.annotator is None else _cells(agreed[..., 0], {"agree": agreed[..., 1]}, days),
        np.asarray(space.node_ids, dtype=object),
        items,
    )


def _confidence(tables: _WeekTables | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """From the sums per top-level branch (by the answer's value) and week of the stated confidences: where
    SQL grouped ten million rows and joined the node table to them. Welch's t-test of each week against the
    branch's reference weeks pooled exactly (their counts, sums of values and of squared deviations)."""
    empty = pd.DataFrame({c: [] for c in CONFIDENCE_COLUMNS})
    if end is None or tables is None or tables.confidence is None or tables.confidence.key.size == 0:
        return empty
    cells = tables.confidence
    key, n, total = cells.key, cells.n, cells.sums["sum"]
    # The variance of a single answer is 0; sums of squares lose nothing that matters for values in [0, 1].
    mean = total / n
    var = np.where(n > 1, np.maximum(cells.sums["sum_sq"] - total**2 / n, 0) / np.maximum(n - 1, 1), 0.0)
    early = cells.day < _day_number(end)
    size = tables.branches.size
    ref_n, ref_sum, ref_squares = (
        np.bincount(key[early], weights=w[early], minlength=size) for w in (n, n * mean, (n - 1) * var + n * mean**2)
    )
    has_reference = np.zeros(size, dtype=bool)
    has_reference[key[early]] = True
    later = np.flatnonzero(~early & has_reference[key])
    later = later[_by_name_and_day(tables.branches, key[later], cells.day[later])]
    their = key[later]
    n, mean, var = n[later], mean[later], var[later]
    with np.errstate(divide="ignore", invalid="ignore"):
        n_ref = ref_n[their]
        mean_ref = ref_sum[their] / n_ref
        var_ref = (ref_squares[their] - n_ref * mean_ref**2) / (n_ref - 1)
        se = np.sqrt(var / n + var_ref / n_ref)
        t = (mean - mean_ref) / se
        nu = se**4 / ((var / n) ** 2 / (n - 1) + (var_ref / n_ref) ** 2 / (n_ref - 1))
        enough = (n >= MIN_ANSWERS) & (n_ref >= MIN_ANSWERS) & (se > 0)
        p_value = np.where(enough, 2 * stats.t.sf(np.abs(t), nu), np.nan)
        effect = (mean - mean_ref) / np.sqrt(var_ref)
    return pd.DataFrame(
        {
            "branch": tables.branches[their],
            "week": agreement.day_label(cells.day[later]),
            "mean": mean,
            "reference_mean": mean_ref,
            "change": mean - mean_ref,
            "effect_size": effect,
            "p_value": p_value,
            "p_adjusted": bh_adjust(p_value),
            "n": n.astype(np.int64),
        }
    )[CONFIDENCE_COLUMNS]


# Every dated prediction with its item's consensus: written at refresh (d_drift_predictions, half a million rows
# at demo scale), so that a filtered view only picks the rows of its items instead of taking the argmax of
# every probability map and joining on item ids again.
PREDICTION_ROWS = """
WITH p AS (
    SELECT item_id, date_trunc('week', created_at) AS week,
           map_keys(probabilities)[list_position(map_values(probabilities), list_max(map_values(probabilities)))]
               AS predicted
    FROM predictions
    WHERE created_at IS NOT NULL
)
SELECT i.item_idx, CAST(date_diff('day', DATE '1970-01-01', p.week) AS INTEGER) AS day,
       i.consensus_lineage[1] AS branch, CAST(p.predicted <> i.consensus_node AS INTEGER) AS disagree
FROM p JOIN d_items i USING (item_id)
"""
PREDICTIONS_TABLE = "d_drift_predictions"
RATE_COLUMNS = ["week", "rate", "reference_rate", "change", "p_value", "p_adjusted", "n"]


def model_disagreement_drift(
    con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int = REFERENCE_WEEKS
) -> pd.DataFrame:
    """Share of predictions whose argmax leaf differs from the human consensus, per top-level branch of the
    consensus and prediction week, against the reference share (two-proportion z-test)."""
    return _stored_or_live(
        con, f, reference_weeks, "model", lambda: _model(con, f, _reference_end(con, f, reference_weeks))
    )


def _in_scope(con: duckdb.DuckDBPyConnection, f: Filters) -> np.ndarray | None:
    """Which item indices the filters keep, as a boolean mask (None: every item)."""
    scope, params = soft_labels.item_scope(f)
    if scope is None:
        return None
    items = arrays(con, "SELECT item_idx FROM (" + scope + ")", params)["item_idx"]  # noqa: S608 - scope from item_scope
    return _items_table(items)


def _items_table(items: np.ndarray) -> np.ndarray:
    """A boolean array indexed by item index, True for ``items``."""
    return answer_arrays.member_table(items, int(items.max()) + 1 if items.size else 0)


def _model(
    con: duckdb.DuckDBPyConnection, f: Filters, end: pd.Timestamp | None, in_scope: np.ndarray | None = None
) -> pd.DataFrame:
    """``in_scope``: the mask of the filters' items when the caller already has their answers."""
    empty = pd.DataFrame({c: [] for c in ["branch", *RATE_COLUMNS]})
    if end is None:
        return empty
    rows = answer_arrays.kept(con, PREDICTIONS_TABLE, lambda: _predictions(con))
    item = rows["item_idx"]
    mask = in_scope if in_scope is not None else _in_scope(con, f)
    keep = np.ones(item.size, dtype=bool) if mask is None else item < mask.size
    if mask is not None:
        keep[keep] = mask[item[keep]]
    cells = _sums_by_week(rows["branch"][keep], rows["day"][keep], rows["disagree"][keep])
    if cells.key.size == 0:
        return empty
    return _compare_rates(cells, rows["names"], "branch", end, "sum")[["branch", *RATE_COLUMNS]]


def _predictions(con: duckdb.DuckDBPyConnection) -> dict[str, np.ndarray]:
    """The dated predictions with their branch as an integer code into ``names``."""
    if soft_labels.table_exists(con, PREDICTIONS_TABLE):
        rows = arrays(con, "SELECT * FROM " + PREDICTIONS_TABLE)  # noqa: S608 - fixed name
    else:
        rows = arrays(con, PREDICTION_ROWS)
    branch, names = pd.factorize(np.asarray(rows["branch"], dtype=object))
    return {
        "item_idx": np.asarray(rows["item_idx"], dtype=np.int64),
        "day": np.asarray(rows["day"]),
        "disagree": np.asarray(rows["disagree"]),
        "branch": branch,
        "names": np.asarray(names, dtype=object),
    }


def _sums_by_week(key: np.ndarray, day: np.ndarray, x: np.ndarray) -> _Cells:
    """Rows per (integer key, week) as ``n``, with the sum and the sum of squares of x, rows whose x is NaN
    left out, from week-start days: the cells a GROUP BY (key, week) would give, in one compiled pass
    (compiled_sums.window_sums)."""
    if key.size == 0:
        return _Cells(*(np.zeros(0, dtype=np.int64) for _ in range(3)), {"sum": np.zeros(0), "sum_sq": np.zeros(0)})
    days, window_of_day = compiled_sums.day_windows(day)
    first = int(days[0])
    n_keys = int(key.max()) + 1
    n, total, squares = compiled_sums.window_sums(key, day, x, first, window_of_day, days.size, n_keys)
    shape = (n_keys, days.size)
    return _cells(n.reshape(shape), {"sum": total.reshape(shape), "sum_sq": squares.reshape(shape)}, days)


def annotator_drift(con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int = REFERENCE_WEEKS) -> pd.DataFrame:
    """Each annotator's share of answers equal to the item's consensus, per week, against their own share in
    the reference window (two-proportion z-test); annotators without reference answers are not compared."""
    return _stored_or_live(
        con, f, reference_weeks, "annotators", lambda: _annotators(con, f, _reference_end(con, f, reference_weeks))
    )


def _annotators(
    con: duckdb.DuckDBPyConnection, f: Filters, end: pd.Timestamp | None, tables: _WeekTables | None = None
) -> pd.DataFrame:
    """Counted from the answers' arrays (``tables``: their sums, when the caller has them): the consensus is
    looked up per item by indexing, where SQL would join every answer to its item."""
    empty = pd.DataFrame({c: [] for c in ["annotator_id", *RATE_COLUMNS]})
    if end is None:
        return empty
    if tables is None:
        tables = _week_tables(con, (agreement.fetch(con, f, annotator=True), agreement.value_space(con)))
    if tables is None or tables.annotators is None or tables.annotators.key.size == 0:
        return empty
    names = answer_arrays.kept(con, "annotator_names", lambda: _annotator_names(con))
    return _compare_rates(tables.annotators, names, "annotator_id", end, "agree")[["annotator_id", *RATE_COLUMNS]]


def _annotator_names(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Annotator ids by annotator index (None where an index has none)."""
    index = arrays(con, "SELECT annotator_idx, annotator_id FROM d_annotator_index")
    names = np.empty(int(np.max(index["annotator_idx"], initial=-1)) + 1, dtype=object)
    names[np.asarray(index["annotator_idx"])] = np.asarray(index["annotator_id"], dtype=object)
    names.flags.writeable = False
    return names


TREE_CHANGES = """
WITH first_use AS (SELECT tree_version, min(week) AS week FROM d_answers GROUP BY 1)
SELECT v.tree_version, coalesce(u.week, date_trunc('week', v.created_at)) AS week, v.label
FROM tree_versions v LEFT JOIN first_use u USING (tree_version)
ORDER BY v.tree_version
"""


def tree_version_changes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Weeks in which a new tree version came into use (first answer under it, else its creation week),
    for marking charts; the first version is the baseline and is not a change."""
    frame = con.execute(TREE_CHANGES).df().iloc[1:]
    frame["week"] = _labels(frame["week"])
    return frame.reset_index(drop=True)[["tree_version", "week", "label"]]


def _no_alerts() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ALERT_COLUMNS})


def _onsets(frame: pd.DataFrame, subject: str, metric: str, size: pd.Series, change: pd.Series | None) -> pd.DataFrame:
    """One alert per (subject, metric) with an alerting window: its onset (see _onset), the size, p-value and
    adjusted p-value of its peak window (the alerting window of the largest size, the earliest of equals) and
    the number of alerting windows. ``change`` gives each window's direction (None: the metric has none)."""
    sizes, p_adjusted = size.to_numpy(dtype=float), frame["p_adjusted"].to_numpy(dtype=float)
    alerting = (p_adjusted < ALERT_P) & (sizes >= ALERT_SIZE[metric])
    if not alerting.any():  # the usual case, and an annotator view has tens of thousands of windows
        return _no_alerts()
    p_value = frame["p_value"].to_numpy(dtype=float)
    names, weeks = frame[subject].to_numpy(dtype=object), frame["week"].to_numpy()
    # The windows of subjects with an alerting window, by subject and week. Arrays, not a pandas groupby: an
    # annotator view has hundreds of subjects, and a frame operation per subject cost a filtered page more
    # than all of its statistics.
    rows_in = np.flatnonzero(np.isin(names, np.unique(names[alerting])) & np.isfinite(p_value))
    rows_in = rows_in[np.lexsort((weeks[rows_in], names[rows_in]))]
    # Each window's evidence as a z-score, signed by the direction of its change.
    # p-values that underflow to 0 (millions of answers) are read at the smallest double: finite, and far above
    # any real window's evidence.
    evidence = np.full(p_value.size, np.nan)
    tail = np.clip(p_value[rows_in] / 2, np.finfo(float).tiny, 1.0)
    direction = 1.0 if change is None else np.sign(change.to_numpy(dtype=float)[rows_in])
    evidence[rows_in] = stats.norm.isf(tail) * direction
    rows_in = rows_in[np.isfinite(evidence[rows_in])]
    starts = np.flatnonzero(np.r_[True, names[rows_in][1:] != names[rows_in][:-1]])
    rows = []
    for window_rows in np.split(rows_in, starts[1:]):
        hits = window_rows[alerting[window_rows]]
        if hits.size == 0:
            continue
        peak = hits[np.argmax(sizes[hits])]  # the earliest of equal sizes
        sign = 1.0 if change is None else np.sign(evidence[peak])
        week = _onset(evidence[window_rows] * sign, alerting[window_rows])
        rows.append(
            (names[peak], weeks[window_rows[week]], metric, sizes[peak], p_value[peak], p_adjusted[peak], hits.size)
        )
    return pd.DataFrame(rows, columns=ALERT_COLUMNS) if rows else _no_alerts()


def _onset(evidence: np.ndarray, alerting: np.ndarray) -> int:
    """The window a change began in: the maximum-likelihood start of a step from the reference level.

    An alert says a change exists; a steward then asks when it began, and the first window that passes the
    size and adjusted-p thresholds is often a week or more late, since the first week of a real change is
    tested alone against every cell of the analysis. With each window's evidence as a z-score in the alert's
    direction (0 on average at the reference level, a step of unknown height after the onset), the likelihood
    of a step starting at window s and lasting to the last alerting window L grows with
    sum_{t=s..L} z_t / sqrt(L - s + 1); the onset is the s that maximises it, no later than the first alerting
    window. A window joins the change when its evidence is above about half the change's average, so a first
    week somewhat below the thresholds counts and a quiet week before it does not. Only the date moves:
    whether there is an alert is decided by the thresholds alone, so this adds no alerts.
    """
    hits = np.flatnonzero(alerting)
    first, last = int(hits[0]), int(hits[-1])
    tail = np.cumsum(evidence[: last + 1][::-1])[::-1][: first + 1]  # sum from each start to the last hit
    return int(np.argmax(tail / np.sqrt(last + 1 - np.arange(first + 1))))


def _fold_into_ancestors(alerts: pd.DataFrame, lineage: dict[str, list[str]]) -> pd.DataFrame:
    """A shift inside a subtree shows in several nested branches, and in both label views, at once; report it
    once, at the highest alerting branch, with the earliest onset (and the peak window of the largest size of
    its own metric: its size and p-values)."""
    keep = np.ones(len(alerts), dtype=bool)
    rows = alerts.reset_index(drop=True)
    family = [FAMILY.get(m, m) for m in rows["metric"]]
    at: dict[tuple[str, str], int] = {}
    for i, key in enumerate(zip(rows["branch"], family, strict=True)):
        at.setdefault(key, i)
    for i, (branch, kind) in enumerate(zip(rows["branch"], family, strict=True)):
        chain = [*lineage.get(branch, [])[:-1], branch]
        top = next((at[(a, kind)] for a in chain if (a, kind) in at and at[(a, kind)] != i), None)
        if top is None:
            continue
        keep[i] = False
        rows.loc[top, "week"] = min(rows.loc[top, "week"], rows.loc[i, "week"])
        if rows.loc[top, "metric"] == rows.loc[i, "metric"] and rows.loc[i, "size"] > rows.loc[top, "size"]:
            peak = [c for c in ("size", "p_value", "p_adjusted") if c in rows]  # one window's, kept together
            rows.loc[top, peak] = rows.loc[i, peak]
    return rows[keep]


def drift_alerts(
    con: duckdb.DuckDBPyConnection, f: Filters, limit: int = 20, reference_weeks: int = REFERENCE_WEEKS
) -> pd.DataFrame:
    """Every alerting drift in ranked order (see the module notes), at most ``limit``."""
    if _no_window_after_reference(f, reference_weeks):
        return _no_alerts()
    def live() -> pd.DataFrame:
        with answer_arrays.pinned(con):
            return _alerts(con, _frames(con, f, reference_weeks, parallel=True)[1])

    alerts = _stored_or_live(con, f, reference_weeks, "alerts", live)
    return alerts[ALERT_COLUMNS].head(limit).reset_index(drop=True)


@dataclass(frozen=True)
class DriftReport:
    """Every drift analysis of one filter, as the page functions above return them.

    A filtered view computes all of them from one scan of the answers (the alerts need every other frame
    anyway), so a page showing several of them, or two pages showing the alerts, pay for that scan once.
    """

    matrix: pd.DataFrame
    shares: pd.DataFrame
    agreement: pd.DataFrame
    confidence: pd.DataFrame
    model: pd.DataFrame
    annotators: pd.DataFrame
    alerts: pd.DataFrame
    # First and last day of the pooled reference weeks; None when the filters leave no dated answer or their
    # dates no room for a week after the reference. Carried rather than read back from the first compared
    # week, which is later when the week right after the reference has no answers.
    reference: tuple[date, date] | None = None

    def matrix_by(self, metric: str) -> pd.DataFrame:
        """drift_matrix(con, f, metric) of the same filter."""
        _check_metric(metric)
        return by_metric(self.matrix, metric)

    @property
    def compared_any_week(self) -> bool:
        """Whether some week after the reference has answers in the filters."""
        return any(not f.empty for f in (self.matrix, self.agreement, self.confidence, self.model, self.annotators))

    def top_alerts(self, limit: int = 20) -> pd.DataFrame:
        """drift_alerts(con, f, limit) of the same filter."""
        return self.alerts[ALERT_COLUMNS].head(limit).reset_index(drop=True)


def drift_report(con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int = REFERENCE_WEEKS) -> DriftReport:
    """All drift frames of ``f``: the refreshed tables for the unfiltered default question, else live."""
    if _refreshed_answer(con, f, reference_weeks, *STORED):
        stored = {key: con.execute("SELECT * FROM " + table).df() for key, table in STORED.items()}  # noqa: S608 - table names from STORED
        return DriftReport(**stored, reference=_window(_stored_reference_end(con), reference_weeks))
    with answer_arrays.pinned(con):
        end, frames = _frames(con, f, reference_weeks, parallel=True)
        alerts = _alerts(con, frames)
    return DriftReport(**frames, alerts=alerts, reference=_window(end, reference_weeks))


def _stored_reference_end(con: duckdb.DuckDBPyConnection) -> pd.Timestamp | None:
    """The reference end refresh kept ('' when there was none); looked up for a warehouse refreshed before
    refresh kept it."""
    stamp = meta_value(con, REFERENCE_END_KEY)
    if stamp is None:
        return _reference_end(con, Filters(), REFERENCE_WEEKS)
    return pd.Timestamp(stamp) if stamp else None


def _window(end: pd.Timestamp | None, reference_weeks: int) -> tuple[date, date] | None:
    if end is None:
        return None
    return (end - pd.Timedelta(weeks=reference_weeks)).date(), (end - pd.Timedelta(days=1)).date()


def _frames(
    con: duckdb.DuckDBPyConnection, f: Filters, reference_weeks: int, parallel: bool = False
) -> tuple[pd.Timestamp | None, dict[str, pd.DataFrame]]:
    """The end of the reference window, and every analysis the alerts read computed live from that window and
    one scan of the answers: the label views and agreement drift are different groupings of the same arrays,
    so asking each page function in turn would find the reference and scan the answers three times over.

    Both groupings walk the answers as runs of equal item, week and value (Answers.runs), found once here.
    With ``parallel`` the item sort and then the label views and agreement drift (its own cursor) run on
    threads beside the smaller analyses: all are mostly numpy sorts and reductions, which release the GIL,
    so on two cores a filtered drift page waits for the CPU time, not the sum of the steps. Refresh leaves it
    off: it runs unfiltered, where several analyses' arrays at once would cost its memory budget more than the
    seconds are worth."""
    end = None
    fetched: tuple[agreement.Fetched, agreement.ValueSpace] | None = None
    if not _no_window_after_reference(f, reference_weeks):
        fetched = (agreement.fetch(con, f, annotator=True, confidence=True), agreement.value_space(con))
        end = _reference_end_of(fetched[0], reference_weeks)

    def ordered() -> tuple[agreement.Answers, agreement.ValueSpace] | None:
        return None if fetched is None else (fetched[0].runs(), fetched[1])

    def label_views(scanned: tuple[agreement.Answers, agreement.ValueSpace] | None) -> dict[str, pd.DataFrame]:
        counts = _label_cells(*scanned) if scanned is not None else None
        # Ordered as drift_matrix returns it: alert ties keep the order of their rows.
        return {"matrix": by_metric(_matrix_from(counts, end), "js"), "shares": _shares_from(counts, end)}

    def agreement_on(
        cursor: duckdb.DuckDBPyConnection, scanned: tuple[agreement.Answers, agreement.ValueSpace] | None
    ) -> dict[str, pd.DataFrame]:
        return {"agreement": _agreement_drift(cursor, f, end, 0, scanned)}

    def the_others() -> dict[str, pd.DataFrame]:
        tables = _week_tables(con, fetched)
        # The items with an answer in scope are the items the filters keep (see soft_labels.item_scope).
        in_scope = None if f.is_empty() or tables is None else tables.items
        return {
            "confidence": _confidence(tables, end),
            "model": _model(con, f, end, in_scope),
            "annotators": _annotators(con, f, end, tables),
        }

    if not parallel or end is None:
        scanned = ordered()
        return end, {**label_views(scanned), **agreement_on(con, scanned), **the_others()}
    with ThreadPoolExecutor(max_workers=3) as pool, con.cursor() as cursor:
        answers = pool.submit(ordered)
        labels = pool.submit(lambda: label_views(answers.result()))
        # In a copy of this context: the agreement's lookups of kept tables see the caller's pinned version.
        agree = pool.submit(contextvars.copy_context().run, lambda: agreement_on(cursor, answers.result()))
        return end, {**the_others(), **labels.result(), **agree.result()}


def _alerts(con: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    labels, shares, agree = frames["matrix"], frames["shares"], frames["agreement"]
    confidence, model, people = frames["confidence"], frames["model"], frames["annotators"]
    floor = PSI_FLOOR
    share_size = np.abs(np.log(np.maximum(shares["share"], floor) / np.maximum(shares["reference_share"], floor)))
    parts = [
        _onsets(labels, "branch", "label_js", labels["js"], None),
        _onsets(shares, "node", "label_share", share_size, shares["change"]),
        _onsets(agree, "branch", "agreement", -agree["change"], agree["change"]),
        _onsets(confidence, "branch", "confidence", confidence["effect_size"].abs(), confidence["change"]),
        _onsets(model, "branch", "model_disagreement", model["change"], model["change"]),
        _onsets(people, "annotator_id", "annotator_agreement", -people["change"], people["change"]),
    ]
    found = [p for p in parts if not p.empty]
    if not found:
        return parts[0][ALERT_COLUMNS]
    space = agreement.value_space(con)
    names = np.array(space.node_ids, dtype=object)
    lineage = {node: names[space.ancestors[:, v][space.ancestors[:, v] >= 0]].tolist() for v, node in enumerate(names)}
    alerts = _fold_into_ancestors(pd.concat(found, ignore_index=True), lineage)
    relative = alerts["size"] / alerts["metric"].map(ALERT_SIZE)
    kind = alerts["metric"].map(lambda m: KIND_ORDER.index(FAMILY.get(m, m)))
    order = np.lexsort((alerts["week"].to_numpy(), -relative.to_numpy(), kind.to_numpy()))
    return alerts.iloc[order][ALERT_COLUMNS].reset_index(drop=True)


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Drift compares every week with a global reference, so it is recomputed in full; the label views and
    agreement drift share one scan of the answers."""
    con.execute("CREATE OR REPLACE TABLE " + PREDICTIONS_TABLE + " AS " + PREDICTION_ROWS)
    end, frames = _frames(con, Filters(), REFERENCE_WEEKS)
    stamp = "" if end is None else end.isoformat()
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [REFERENCE_END_KEY, stamp])
    frames["alerts"] = _alerts(con, frames)
    for key, frame in frames.items():
        frame_writes.store(con, STORED[key], frame)
    return "full"
