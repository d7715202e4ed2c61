"""Inter-annotator agreement: Krippendorff's alpha (nominal and tree distance), Fleiss' kappa, Cohen's kappa
and percent agreement, overall and per branch, tree level and week, with bootstrap confidence intervals.

DuckDB scans the answers in item order as small integers (value index, week); the groupings and every
statistic are numpy on those arrays, because alpha only needs per-unit value counts (see
queries/alpha.py) and a hash aggregate over millions of (item, value) groups costs more than the scan.

Definitions:

- Tree distance. delta(c, k) = path length between c and k in the tree / (2 * the tree's depth), so
  two leaves under different top-level branches are 1, cousins 2/3 and siblings 1/3 on a three-level
  tree, and an answer at a parent is half as far from its child as a sibling. A node id keeps the
  lineage of the newest tree version it appears in. Alpha is unchanged by rescaling delta, so the
  normalisation only makes the matrix readable.
- Level L. Every answer is replaced by its ancestor at depth L; a leaf above L stands for itself (it is as
  fine as its branch goes: the soft labels' cut at L), and internal nodes above L, too coarse to place at L,
  drop out.
- Branch B (an internal node). The items whose consensus lies under B (the Filters branch semantics);
  answers inside B are coarsened to B's child on their path, answers outside B keep their own node
  (so they still count as disagreement), and answers at B or above it, too coarse to choose a child,
  drop out.
- Week. Answers grouped by the week they were given; the unit is then an (item, week).
- Units with fewer than two answers are not pairable and drop out everywhere; ``n_items`` and
  ``n_answers`` count pairable units and their answers.
- Fleiss' kappa needs the same number of answers per unit, so it uses only the units with the modal
  count in the group (ties go to the smaller count); NaN when fewer than two units have it.
- Percent agreement: the mean over units of the share of agreeing answer pairs.
- Confidence intervals: by default the normal interval alpha +- 1.96 se, where se is the standard error a
  bootstrap over units converges to, in closed form: alpha is a smooth function of per-unit sums, so
  its bootstrap variance is, to first order, the variance of the per-unit influence values (delta method /
  infinitesimal jackknife), sum_u IF_u^2 - (sum_u IF_u)^2 / n per group. It costs a second pass over the
  units instead of hundreds of replicates (summed_table: two compiled walks over the sorted answers, every
  depth or level of a grouping in the same walk), which is what lets every table at ten million answers be
  computed in seconds. ``bootstrap=R`` (R > 0) asks for the percentile bootstrap instead: a replicate
  draws, within each group, as many units as the group has, with replacement; the draw counts
  (multinomial) become unit weights, so no data is copied. Units with identical value counts are kept
  once with their multiplicity, which makes the draw a multinomial over distinct patterns (exactly the
  same distribution). Replicates use a fixed seed so the same question always gets the same interval.
  The interval is for nominal alpha in tables and for the requested metric in alpha().
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel
from scipy import sparse

from queries import answer_arrays, compiled_sums, frame_writes
from queries.alpha import observed_by_item
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.results import arrays
from queries.soft_labels import table_exists

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

METRICS = ("nominal", "tree")
GROUPINGS = ("overall", "branch", "level", "week")
TABLE_COLUMNS = [
    "group",
    "alpha_nominal",
    "alpha_tree",
    "ci_low",
    "ci_high",
    "fleiss_kappa",
    "percent_agreement",
    "n_items",
    "n_answers",
]
PAIR_COLUMNS = ["annotator_a", "annotator_b", "kappa", "n_items"]
Z95 = 1.959963984540054
SEED = 20260105
STORED = {by: "d_agreement_" + by for by in GROUPINGS}
STORED_PAIRS = "d_agreement_pairs"
STORED_TOP = 15
BRANCH_WEEK_STRIDE = 1_000_000  # days since 1970 stay far below this
# Groupings that never read an answer's day: the scan skips the column, and keeps answers without a timestamp.
DAYLESS = ("overall", "level", "branch", "subtree")

# Node ids in a fixed order: values are indexed by it in SQL (d_nodes.value_idx, list_position) and in numpy.
# Each node's path in the version the answers are mapped to (the as-of version), else its newest one.
LINEAGES = (
    "SELECT node_id, arg_max(lineage, [CAST(tree_version = (SELECT max(tree_version) FROM d_answers) AS INTEGER), "
    "tree_version]), bool_or(NOT is_leaf) FROM d_nodes GROUP BY node_id ORDER BY node_id"
)
# One row per answer, no GROUP BY: the answers are sorted by item in numpy after the scan (d_answers is
# written unordered; a DuckDB ORDER BY here holds the sorted rows and the fetched copy at once, which costs
# more memory than the numpy argsort), so every grouping is array indexing in numpy. The day column comes from
# a fixed allow-list of windows (WINDOW_DAYS): each answer's window start in days since 1970, stored at refresh
# for weeks.
RAW_VALUES = "SELECT a.item_idx, a.value_idx AS v"
RAW_ANNOTATOR = ", a.annotator_idx"
RAW_CONFIDENCE = ", CAST(coalesce(a.confidence, 'NaN') AS DOUBLE) AS confidence"
RAW_FROM = " FROM d_answers a WHERE {P}"
# Per window: the day column, and the condition that leaves out answers without a timestamp, which belong to no
# window (read as day 0 they would all land in one week of 1970, inside any reference window).
WINDOW_DAYS = {
    "week": (", a.day", " AND a.day IS NOT NULL"),
    "month": (
        ", CAST(date_diff('day', DATE '1970-01-01', date_trunc('month', a.created_at)) AS INTEGER) AS day",
        " AND a.created_at IS NOT NULL",
    ),
}
CONSENSUS = "SELECT item_idx, CAST(coalesce(list_position(?, consensus_node), 0) - 1 AS SMALLINT) AS c FROM d_items"


class AgreementResult(BaseModel):
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n_items: int
    n_answers: int


@dataclass
class ValueSpace:
    """Every node id with its index, its ancestors by depth and the tree distance between any two."""

    node_ids: list[str]
    delta2: npt.NDArray[np.float64]
    ancestors: npt.NDArray[np.int64]  # [depth - 1, value]: index of the ancestor at that depth, -1 if shallower
    internal: npt.NDArray[np.bool_]  # has children in some tree version

    @property
    def depth(self) -> npt.NDArray[np.int64]:
        return (self.ancestors >= 0).sum(axis=0)

    def at_level(self, values: np.ndarray, level: int) -> np.ndarray:
        """Each value's node on the cut at ``level`` (see Level L in the module notes): its ancestor there, itself
        for a leaf above the level, -1 for an internal node above it."""
        shallow_leaf = ~self.internal[values] & (self.depth[values] < level)
        return np.where(shallow_leaf, values, self.ancestors[level - 1, values])

    def coarsened(self) -> npt.NDArray[np.int64]:
        """[branch, value] -> the value seen from the branch: its child on the value's path when the value lies
        below it, the value itself when it lies outside, -1 when it is the branch or one of its ancestors."""
        n = len(self.node_ids)
        depth = self.depth
        branch, value = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        below = (self.ancestors[depth[branch] - 1, value] == branch) & (depth[value] > depth[branch])
        above = self.ancestors[depth[value] - 1, branch] == value
        child = self.ancestors[np.minimum(depth[branch], self.ancestors.shape[0] - 1), value]
        return np.where(below, child, np.where(above, -1, value))


def tree_distance(lineages: list[list[str]]) -> npt.NDArray[np.float64]:
    """Path length between nodes (depth(c) + depth(k) - 2 * depth of their deepest common ancestor),
    divided by twice the maximum depth so that it lies in [0, 1]."""
    if not lineages:
        return np.zeros((0, 0))
    path = _paths(lineages)
    depth = (path >= 0).sum(axis=1)
    same = (path[:, None, :] == path[None, :, :]) & (path[:, None, :] >= 0)
    common = np.cumprod(same, axis=2).sum(axis=2)
    return (depth[:, None] + depth[None, :] - 2 * common) / (2.0 * path.shape[1])


def _paths(lineages: list[list[str]]) -> npt.NDArray[np.int64]:
    """Lineages as a padded integer matrix, every name indexed by its position in sorted order."""
    names = {name: i for i, name in enumerate(sorted({n for lin in lineages for n in lin}))}
    path = np.full((len(lineages), max(len(lin) for lin in lineages)), -1, dtype=np.int64)
    for row, lin in enumerate(lineages):
        path[row, : len(lin)] = [names[n] for n in lin]
    return path


def value_space(con: duckdb.DuckDBPyConnection) -> ValueSpace:
    """The values of every tree version; kept per version of the data where this process holds the answers
    (answer_arrays.kept: a filtered drift page asked for it four times, each a scan of the answers' tree
    versions). Read-only: its arrays are shared."""
    return answer_arrays.kept(con, "value_space", lambda: _value_space(con))


def _value_space(con: duckdb.DuckDBPyConnection) -> ValueSpace:
    rows = con.execute(LINEAGES).fetchall()
    node_ids = [r[0] for r in rows]
    lineages = [list(r[1]) for r in rows]
    if not rows:
        return ValueSpace([], np.zeros((0, 0)), np.zeros((0, 0), dtype=np.int64), np.zeros(0, dtype=bool))
    index = {n: i for i, n in enumerate(node_ids)}
    ancestors = np.full((max(len(lin) for lin in lineages), len(rows)), -1, dtype=np.int64)
    for v, lin in enumerate(lineages):
        ancestors[: len(lin), v] = [index.get(n, -1) for n in lin]
    space = ValueSpace(node_ids, tree_distance(lineages), ancestors, np.array([bool(r[2]) for r in rows]))
    for shared in (space.delta2, space.ancestors, space.internal):
        shared.flags.writeable = False
    return space


@dataclass
class Answers:
    """The filtered answers as arrays, sorted by item (see scan): value index and (when asked for) window
    start day.

    One scan serves every grouping of a question (and every table of a refresh), since the groupings are
    only different indexings of the same three arrays."""

    item: np.ndarray
    value: np.ndarray
    day: np.ndarray | None
    # The answers of each row when runs of equal item, day and value are one row (see runs); None: one each.
    weight: np.ndarray | None = None

    def where(self, keep: np.ndarray) -> Answers:
        return Answers(
            self.item[keep],
            self.value[keep],
            None if self.day is None else self.day[keep],
            None if self.weight is None else self.weight[keep],
        )

    def runs(self) -> Answers:
        """The same answers with each run of equal item, day and value as one row (compiled_sums.runs): what the
        compiled walks over units read (summed_table, drift's label counts), in half the rows."""
        if self.weight is not None:
            return self
        item, day, value, weight = compiled_sums.runs(self.item, self.day, self.value)
        return Answers(item, value, day, weight)

    def each(self) -> Answers:
        """One row per answer again: the patterns of bootstrap replicates count rows."""
        if self.weight is None:
            return self
        columns = (self.item, self.value, self.day)
        return Answers(*(None if c is None else np.repeat(c, self.weight) for c in columns))


def scan(con: duckdb.DuckDBPyConnection, f: Filters, window: str | None = "week") -> Answers:
    """The answers matching ``f``, values indexed as in value_space (d_answers carries the index), sorted by
    item, day and value; ``window`` None skips the day column. Rows of one item come out ordered by day and
    value instead of scan order, which no statistic depends on (a unit is a multiset of values)."""
    return fetch(con, f, window).sorted()


@dataclass
class Fetched:
    """Answers as fetched, in scan order, with each answer's annotator index and stated confidence (NaN: none)
    when asked for: statistics over annotators or confidences are counted before the item sort, which does not
    carry them."""

    item: np.ndarray
    value: np.ndarray
    day: np.ndarray | None
    annotator: np.ndarray | None
    presorted: bool = False  # already by item, day and value (answer_arrays)
    confidence: np.ndarray | None = None
    # When set, each confidence is a position in these distinct confidences (as answer_arrays holds them).
    confidence_levels: np.ndarray | None = None

    @property
    def answers(self) -> Answers:
        """As fetched (in scan order unless presorted), as int32 arrays."""
        return Answers(
            self.item.astype(np.int32, copy=False),
            self.value.astype(np.int32),
            None if self.day is None else self.day.astype(np.int32, copy=False),
        )

    def sorted(self) -> Answers:
        if self.presorted:
            return self.answers
        item, days, value = packed_sort(self.item, self.day, self.value)
        return Answers(item, value, days)

    def runs(self) -> Answers:
        """sorted().runs(), read straight from the columns when they come sorted (without widening them)."""
        return (Answers(self.item, self.value, self.day) if self.presorted else self.sorted()).runs()


def fetch(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    window: str | None = "week",
    annotator: bool = False,
    confidence: bool = False,
) -> Fetched:
    """The answers of scan, with each answer's annotator index when ``annotator`` and stated confidence when
    ``confidence``: in scan order, or sorted when they come from the arrays in memory (see
    queries/answer_arrays)."""
    raw = answer_arrays.filtered(con, f, window, annotator, confidence)
    presorted = raw is not None
    if raw is None:
        clause, params = f.where("a")
        day, dated = ("", "") if window is None else WINDOW_DAYS[window]
        extra = (RAW_ANNOTATOR if annotator else "") + (RAW_CONFIDENCE if confidence else "")
        sql = RAW_VALUES + extra + day + RAW_FROM.replace("{P}", clause) + dated
        raw = arrays(con, sql, params)
    return Fetched(
        np.asarray(raw["item_idx"]),
        np.asarray(raw["v"]),
        np.asarray(raw["day"]) if window is not None else None,
        np.asarray(raw["annotator_idx"]) if annotator else None,
        presorted,
        np.asarray(raw["confidence"]) if confidence else None,
        raw.get("confidence_levels"),
    )


def packed_sort(
    major: np.ndarray, middle: np.ndarray | None, minor: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Integer columns (``minor`` non-negative) sorted together by major, middle, minor, as int32 arrays: the
    answers are the largest arrays of a refresh, and every derived code that could outgrow int32 (group codes,
    pattern keys) is computed in int64 from them.

    Each row is packed into one int64 and the keys are sorted in place: numpy's vectorised sort of plain int64
    takes a fraction of the time of a stable argsort followed by a gather of every column in random order,
    and rows with equal keys are equal, so stability does not matter."""
    major_base, major_bits = _span(major)
    mid_base, mid_bits = (0, 0) if middle is None else _span(middle)
    low_bits = int(np.max(minor, initial=0)).bit_length()
    # Item spans (a million items: 20 bits), values (7) and week starts (16 bits would be 180 years) fit easily.
    if major_bits + mid_bits + low_bits > 63:
        raise LabelgovError("the answers are too wide to be sorted as packed keys")
    # In-place arithmetic throughout: at millions of rows every temporary costs as much as the sort.
    key = np.subtract(major, major_base, dtype=np.int64)
    if middle is not None:
        key <<= mid_bits
        key += middle
        key -= mid_base
    key <<= low_bits
    key |= minor
    key.sort()
    return (
        ((key >> (mid_bits + low_bits)) + major_base).astype(np.int32),
        None if middle is None else (((key >> low_bits) & ((1 << mid_bits) - 1)) + mid_base).astype(np.int32),
        (key & ((1 << low_bits) - 1)).astype(np.int32),
    )


def _span(column: np.ndarray) -> tuple[int, int]:
    """A column's minimum and the bits its values need once the minimum is subtracted."""
    if not np.size(column):
        return 0, 0
    low = int(np.min(column))
    return low, (int(np.max(column)) - low).bit_length()


def _rows(
    con: duckdb.DuckDBPyConnection, answers: Answers, space: ValueSpace, grouping: str
) -> Iterator[dict[str, np.ndarray]]:
    """Blocks of rows (g, item_idx, v) for any grouping but level (see _level_units), each unit's rows
    contiguous; g is an integer group code and no group spans two blocks, so each block is summarised on its
    own and peak memory stays at one copy of the answers rather than one per depth.

    Answers arrive sorted by item. Branch groupings are blocks (one per depth) that keep the item order;
    branch_week sorts each block by week with a stable radix sort, so items stay sorted within a week. (The
    week and subtree groupings have their own paths, _week_units and _subtree_units.)
    """
    item, value, day = answers.item, answers.value, answers.day
    if grouping == "overall":
        yield _block(np.zeros(item.size, dtype=np.int8), item, value)
        return
    weekly = grouping.endswith("week")
    if weekly and day is None:
        raise ValueError("grouping " + grouping + " needs the answers' days")
    seen = space.coarsened().astype(np.int32)  # per-answer arrays stay int32; group codes are widened to int64
    consensus = consensus_by_item(con, space.node_ids, int(item.max()) + 1 if item.size else 0)
    for branch_of in _branches(space):
        branch = branch_of[consensus][item]  # the branch is the item's: found per item, then spread to answers
        mapped = seen[np.maximum(branch, 0), value]
        mapped[branch < 0] = -1
        code = branch.astype(np.int64) * BRANCH_WEEK_STRIDE
        if weekly and day is not None:
            code += day
            yield from _in_blocks(code, item, mapped, day)
        else:
            yield from _in_blocks(code, item, mapped, branch)
        del code, branch, mapped


def _branches(space: ValueSpace) -> np.ndarray:
    """[depth - 1, node] -> the branch at that depth of an item whose consensus is the node (the Filters branch
    semantics): the node's ancestor there when that is an internal node, else -1. The last column, -1, is
    what an item without a consensus (node -1) finds."""
    ancestor = space.ancestors
    inner = (ancestor >= 0) & space.internal[np.maximum(ancestor, 0)]
    return np.hstack([np.where(inner, ancestor, -1), np.full((ancestor.shape[0], 1), -1)]).astype(np.int32)


@dataclass
class UnitGroups:
    """How summed_table groups the answers' units: the units (runs of an item, and of a day for the weekly
    groupings: the answers are sorted by item, day and value, so every unit's rows are contiguous), and per
    pass of the grouping (a depth or a level) each unit's group and the row of ``seen`` through which that
    pass sees its values. Groups are dense indices (branch groups numbered window * values + branch, so that
    the branch is the index modulo the values); ``codes`` holds their group codes."""

    bounds: np.ndarray  # where each unit's rows start, then the number of rows
    group: np.ndarray  # passes x units: dense group index, -1 for none
    pass_row: np.ndarray  # per pass, the row of seen its units are counted through; -1: the group's branch
    seen: np.ndarray  # rows x values: the value a pass counts for an own value, -1 to drop the answer
    codes: np.ndarray  # group code per dense group
    widest: int  # the most answers in one unit


def unit_groups(
    con: duckdb.DuckDBPyConnection, answers: Answers, space: ValueSpace, grouping: str, level: int | None = None
) -> UnitGroups:
    """The units and groups of any grouping for summed_table (see the module notes for each grouping)."""
    item, day = answers.item, answers.day
    weekly = grouping.endswith("week")
    if weekly and day is None:
        raise ValueError("grouping " + grouping + " needs the answers' days")
    bounds, widest = compiled_sums.unit_bounds(item, day if weekly else None, answers.weight)
    first = bounds[:-1]
    n_values = len(space.node_ids)
    own = np.arange(n_values)[None, :]
    one = np.zeros(1, dtype=np.int64)
    if grouping == "overall":
        return UnitGroups(bounds, np.zeros((1, first.size), dtype=np.int32), one, own, one, widest)
    if grouping == "level":
        depths = space.ancestors.shape[0]
        levels = np.arange(1, depths + 1) if level is None else np.array([level] if level <= depths else [])
        seen = np.array([space.at_level(own[0], lv) for lv in levels], dtype=np.int64).reshape(levels.size, n_values)
        passes = np.arange(levels.size)
        group = np.repeat(passes[:, None].astype(np.int32), first.size, axis=1)
        return UnitGroups(bounds, group, passes, seen, levels.astype(np.int64), widest)
    days, window = np.zeros(1, dtype=np.int64), np.zeros(first.size, dtype=np.int32)
    if weekly and day is not None and first.size:
        unit_day = day[first]
        days, window_of_day = compiled_sums.day_windows(unit_day)
        window = window_of_day.astype(np.int32)[unit_day - days[0]]
    if grouping == "week":
        return UnitGroups(bounds, window[None, :], one, own, days, widest)
    # Branch groupings: the unit's branch at each depth.
    seen = np.vstack([space.coarsened(), own])
    depths = space.ancestors.shape[0]
    consensus = consensus_by_item(con, space.node_ids, int(item.max()) + 1 if item.size else 0)
    group = compiled_sums.branch_groups(item[first], window, consensus, _branches(space))
    # branch sees values from the branch (coarsened rows, one per branch), subtree its own (the last row).
    pass_row = np.full(depths, -1 if grouping.startswith("branch") else n_values, dtype=np.int64)
    dense = np.arange(days.size * n_values)
    codes = dense % n_values * BRANCH_WEEK_STRIDE + days[dense // n_values]
    return UnitGroups(bounds, group, pass_row, seen, codes, widest)


def _week_units(answers: Answers, space: ValueSpace) -> Units:
    """Units per week. Sorted by item, day and value, an (item, week) unit's answers are already contiguous, so
    blocks of whole items are collapsed into patterns with the week as group and the blocks merged after
    (_regroup): no sort by week, which at millions of answers cost as much as the patterns themselves."""
    if answers.day is None:
        raise ValueError("grouping week needs the answers' days")
    item, day, value = answers.item, answers.day, answers.value
    parts = [
        build_units(_block(day[lo:hi], item[lo:hi], value[lo:hi]), space)
        for lo, hi in itertools.pairwise(_cuts(item))
    ]
    return parts[0] if len(parts) == 1 else _regroup(parts, lambda codes: codes, len(space.node_ids))


def _subtree_units(
    con: duckdb.DuckDBPyConnection, answers: Answers, space: ValueSpace, weekly: bool
) -> Iterator[Units]:
    """Units per depth for the subtree groupings (``weekly``: per week too), from the answers collapsed once.

    A subtree unit is one item's answers (in a week) at full depth, grouped by the item's consensus ancestor at a
    depth: the unit is the same at every depth and only its group changes. So the answers are collapsed into
    patterns once with the consensus node as group, and each depth relabels those groups to their ancestor
    there (merging groups only adds their patterns), instead of collapsing every answer once per depth. Blocks
    of whole items bound the memory as in _rows."""
    item = answers.item
    if weekly and answers.day is None:
        raise ValueError("grouping subtree_week needs the answers' days")
    consensus = consensus_by_item(con, space.node_ids, int(item.max()) + 1 if item.size else 0)
    code = consensus[item] * BRANCH_WEEK_STRIDE
    if weekly and answers.day is not None:
        code += answers.day
    value = np.where(consensus[item] >= 0, answers.value, -1)
    base = [
        build_units(_block(code[low:high], item[low:high], value[low:high]), space)
        for low, high in itertools.pairwise(_cuts(item))
    ]
    del code, value
    for d in range(space.ancestors.shape[0]):
        ancestor = space.ancestors[d]
        inner = (ancestor >= 0) & space.internal[np.maximum(ancestor, 0)]

        def at_depth(codes: np.ndarray, ancestor: np.ndarray = ancestor, inner: np.ndarray = inner) -> np.ndarray:
            node, day = codes // BRANCH_WEEK_STRIDE, codes % BRANCH_WEEK_STRIDE
            return np.where(inner[node], ancestor[node] * BRANCH_WEEK_STRIDE + day, -1)

        yield _regroup(base, at_depth, len(space.node_ids))


def _regroup(parts: list[Units], new_code: Callable[[np.ndarray], np.ndarray], n_values: int) -> Units:
    """One Units from several (at least one), each group code relabelled by ``new_code`` (-1 drops the group's
    units): groups that get the same code merge. A statistic of a group is a sum over its units' patterns, so a
    pattern that now occurs twice (once per merged group or part) counts exactly as one with the summed
    multiplicity."""
    codes = [new_code(part.groups) for part in parts]
    groups = np.unique(np.concatenate([c[c >= 0] for c in codes]))
    pieces: list[tuple[np.ndarray, ...]] = []
    matrices = []
    for part, code in zip(parts, codes, strict=True):
        target = np.full(code.size, -1, dtype=np.int64)
        kept_group = code >= 0
        target[kept_group] = np.searchsorted(groups, code[kept_group])
        keep = target[part.unit_group] >= 0
        cells = part.cells[:, keep]
        old_group, value = np.divmod(cells.indices.astype(np.int64), n_values)
        matrices.append(
            sparse.csc_matrix(
                (cells.data, target[old_group] * n_values + value, cells.indptr),
                shape=(groups.size * n_values, int(keep.sum())),
            )
        )
        pieces.append(
            (target[part.unit_group[keep]], part.multiplicity[keep], part.m[keep], part.agree[keep],
             part.observed_tree[keep])
        )
    columns = [np.concatenate(column) for column in zip(*pieces, strict=True)]
    return Units(
        groups=groups,
        unit_group=columns[0].astype(np.int64),
        multiplicity=columns[1],
        m=columns[2],
        agree=columns[3],
        observed_tree=columns[4],
        cells=sparse.hstack(matrices, format="csc"),
        n_values=n_values,
    )


def _level_units(answers: Answers, space: ValueSpace, level: int | None) -> Iterator[Units]:
    """Units per tree level (one level, or every level when ``level`` is None), from the answers collapsed once.

    A unit's counts at a level are its own values' counts mapped to their ancestors, so units with the same
    own values have the same pattern at every level: the answers are collapsed into own-value patterns once,
    and each level collapses those patterns (a small fraction of the answers), each weighted by its units,
    instead of every answer again. The level patterns, their order and their unit counts are the ones the
    answers would give directly, because a pattern key is a sum over the unit's answers."""
    depths = space.ancestors.shape[0]
    levels = range(1, depths + 1) if level is None else [level] if level <= depths else []
    if not levels:
        return
    rows = _block(np.zeros(answers.item.size, dtype=np.int8), answers.item, answers.value)
    _, _, multiplicity, own = _patterns(rows, space, None)
    del rows
    cells = own.tocoo()  # one group: a cell's row is its value, its column its pattern
    count = cells.data.astype(np.int64)
    for lv in levels:
        mapped = space.at_level(cells.row, lv)
        keep = mapped >= 0
        rows = {"g": np.full(int(keep.sum()), lv, dtype=np.int8), "item_idx": cells.col[keep], "v": mapped[keep]}
        yield build_units({**rows, "n": count[keep]}, space, multiplicity)


def consensus_by_item(con: duckdb.DuckDBPyConnection, names: list[str], size: int) -> np.ndarray:
    """Each item's consensus value index (-1 unknown), at least ``size`` long, looked up per answer by array
    indexing: cheaper than carrying the item's lineage through the answer scan. Read-only: the dashboard keeps
    one per version of the data (answer_arrays.kept)."""
    out = answer_arrays.kept(con, "consensus:" + "\x1f".join(names), lambda: _consensus(con, names))
    if out.size < size:
        out = np.concatenate([out, np.full(size - out.size, -1, dtype=np.int64)])
        out.flags.writeable = False
    return out


def _consensus(con: duckdb.DuckDBPyConnection, names: list[str]) -> np.ndarray:
    rows = arrays(con, CONSENSUS, [names])
    item = np.asarray(rows["item_idx"], dtype=np.int64)
    out = np.full(int(item.max()) + 1 if item.size else 0, -1, dtype=np.int64)
    out[item] = np.asarray(rows["c"], dtype=np.int64)
    out.flags.writeable = False
    return out


def _block(code: np.ndarray, item: np.ndarray, value: np.ndarray) -> dict[str, np.ndarray]:
    """Rows with a value (-1 marks an answer that drops out of this grouping); a row is one answer. When none
    drops out the arrays are used as they are, not copied."""
    keep = value >= 0
    if keep.all():
        return {"g": code, "item_idx": item, "v": value}
    return {"g": code[keep], "item_idx": item[keep], "v": value[keep]}


# Rows per block of a grouping split by week or branch: a block holds whole groups, so peak memory follows
# this rather than the number of answers (one group larger than this is still one block).
BLOCK_ROWS = 2_000_000


def _cuts(sorted_key: np.ndarray) -> list[int]:
    """Block boundaries in rows sorted by key: a block closes at the first key change after BLOCK_ROWS rows,
    so no key spans two blocks."""
    key_starts = np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1
    cuts = [0]
    while True:  # one step per block, not per key: keys can be a million items
        at = int(np.searchsorted(key_starts, cuts[-1] + BLOCK_ROWS))
        if at == key_starts.size:
            break
        cuts.append(int(key_starts[at]))
    cuts.append(sorted_key.size)
    return cuts


def _in_blocks(
    code: np.ndarray, item: np.ndarray, value: np.ndarray, key: np.ndarray
) -> Iterator[dict[str, np.ndarray]]:
    """Blocks of rows in ``key`` order, items still sorted within each key (a stable radix sort on small
    ints). Every group of the grouping has a single key (its week or its branch), so none spans two blocks."""
    kept = np.flatnonzero(value >= 0)
    if not kept.size:
        yield _block(code[:0], item[:0], value[:0])
        return
    span = key[kept] - key[kept].min()
    order = kept[np.argsort(span.astype(np.int16 if span.max() < 2**15 else np.int32), kind="stable")]
    del span, kept
    for low, high in itertools.pairwise(_cuts(key[order])):
        rows = order[low:high]
        yield {"g": code[rows], "item_idx": item[rows], "v": value[rows]}


def _summarised(
    con: duckdb.DuckDBPyConnection,
    answers: Answers,
    space: ValueSpace,
    grouping: str,
    replicates: int,
    metric: str,
    level: int | None = None,
    alpha_only: bool = False,
) -> pd.DataFrame:
    """Every statistic per group code: summed over units (summed_table) for analytic intervals, from patterns
    block by block (see _rows) for bootstrap replicates."""
    tables = _bootstrapped(con, answers.each(), space, grouping, replicates, metric, level) if replicates > 0 else []
    if tables:
        table = pd.concat(tables, ignore_index=True)
    else:
        groups = unit_groups(con, answers, space, grouping, level)
        table = summed_table(answers, groups, space, metric, alpha_only)
    # In group code order, whichever path: bootstrap blocks hold one depth's branches or a range of weeks, and
    # the summed groups are numbered window-major.
    return table.sort_values("group", kind="stable", ignore_index=True)


def _bootstrapped(
    con: duckdb.DuckDBPyConnection,
    answers: Answers,
    space: ValueSpace,
    grouping: str,
    replicates: int,
    metric: str,
    level: int | None,
) -> list[pd.DataFrame]:
    """The tables with percentile bootstrap intervals, block by block, from the units collapsed into patterns."""
    if grouping == "level":
        units: Iterator[Units] = _level_units(answers, space, level)
    elif grouping == "week":
        units = iter([_week_units(answers, space)])
    elif grouping.startswith("subtree"):
        units = _subtree_units(con, answers, space, grouping.endswith("week"))
    else:
        units = (build_units(rows, space) for rows in _rows(con, answers, space, grouping))
    return [_table(block, space, replicates, metric) for block in units]


@dataclass
class Units:
    """Pairable units (an item within a group) collapsed into patterns: units of the same group with the same
    value counts contribute identically to every statistic, so each distinct pattern is kept once with its
    multiplicity. Resampling units with replacement is then exactly a multinomial draw over patterns, which
    makes a bootstrap replicate cost the number of patterns rather than the number of items."""

    groups: np.ndarray  # group code per group, ascending
    unit_group: np.ndarray  # group index per pattern
    multiplicity: np.ndarray  # units per pattern
    m: np.ndarray  # answers per unit of the pattern
    agree: np.ndarray  # sum_c n_uc (n_uc - 1): ordered agreeing pairs
    observed_tree: np.ndarray  # sum_{c != k} n_uc n_uk delta2_ck
    cells: sparse.csc_matrix  # (group * C + value) x pattern answer counts
    n_values: int


def _salt(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 2**63, size=max(size, 1), dtype=np.uint64)


def build_units(arrays: dict[str, np.ndarray], space: ValueSpace, unit_weight: np.ndarray | None = None) -> Units:
    """Rows (g, item_idx, v), every unit's rows contiguous; values may repeat within a unit. A row is one
    answer, or ``n`` answers when the rows carry that count; ``unit_weight`` (by item_idx) is how many units
    each unit stands for, 1 when not given (both serve _level_units, whose units are collapsed patterns).

    Units with a single answer are skipped by index rather than copied out, so the only arrays as long as
    the answers are the unit boundaries and the pattern hashes (peak memory at ten million answers)."""
    groups, pattern_group, multiplicity, cells = _patterns(arrays, space, unit_weight)
    n_values = len(space.node_ids)
    n_patterns = multiplicity.size
    cell_pattern = np.repeat(np.arange(n_patterns), np.diff(cells.indptr))
    cell_value = cells.indices.astype(np.int64) % n_values
    cell_count = cells.data
    pattern_m = np.bincount(cell_pattern, weights=cell_count, minlength=n_patterns)
    return Units(
        groups=groups,
        unit_group=pattern_group.astype(np.int64),
        multiplicity=multiplicity.astype(np.float64),
        m=pattern_m,
        agree=pattern_m * pattern_m - observed_by_item(cell_pattern, cell_value, cell_count, n_patterns) - pattern_m,
        observed_tree=observed_by_item(cell_pattern, cell_value, cell_count, n_patterns, space.delta2),
        cells=cells,
        n_values=n_values,
    )


def _patterns(
    arrays: dict[str, np.ndarray], space: ValueSpace, unit_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, sparse.csc_matrix]:
    """The patterns of build_units' rows without their statistics: group codes, each pattern's group index,
    units per pattern and the (group * C + value) x pattern cells. _level_units needs only these for the
    answers' own values."""
    g, item, value = (np.asarray(arrays[k]) for k in ("g", "item_idx", "v"))  # any integer type: no copies
    n_values = len(space.node_ids)
    # A unit's pattern is identified by a random-coefficient sum of its value counts plus a group salt;
    # two different patterns collide with probability about 2^-60.
    count = np.asarray(arrays["n"], dtype=np.int64) if "n" in arrays else np.zeros(0, dtype=np.int64)
    all_starts, answers, summed = compiled_sums.unit_keys(g, item, value, _salt(n_values, 1), count)
    all_lengths = np.diff(np.append(all_starts, g.size))
    pairable = answers >= 2
    starts, unit_lengths, summed = all_starts[pairable], all_lengths[pairable], summed[pairable]
    del all_starts, all_lengths, answers, pairable
    unit_code = g[starts]
    with np.errstate(over="ignore"):
        key = summed + unit_code.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    # Distinct keys by hashing (linear, where sorting every unit's key cost as much as the rest), then put in
    # ascending order: the pattern order every statistic and bootstrap draw follows. Any unit of a pattern
    # has the same cells, so the first one found stands for it.
    codes, distinct = pd.factorize(key)
    rank = np.empty(distinct.size, dtype=np.int64)
    rank[np.argsort(distinct)] = np.arange(distinct.size)
    unit_pattern = rank[codes]
    first = np.empty(distinct.size, dtype=np.int64)
    del codes, distinct, rank, key
    first[unit_pattern[::-1]] = np.arange(unit_pattern.size - 1, -1, -1)  # the last write is the first unit
    if unit_weight is None:
        multiplicity = np.bincount(unit_pattern, minlength=first.size)
    else:
        multiplicity = np.bincount(unit_pattern, weights=unit_weight[item[starts]], minlength=first.size)
    del unit_pattern
    lengths = unit_lengths[first]
    pattern = np.repeat(np.arange(first.size), lengths)
    offsets = np.arange(pattern.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = starts[first][pattern] + offsets
    groups, pattern_group = np.unique(unit_code[first], return_inverse=True)
    n_patterns = first.size
    # Building the sparse matrix sums a pattern's repeated values in linear time (a counting sort by
    # pattern), cheaper than sorting the rows to find the distinct (pattern, value) cells.
    cells = sparse.csc_matrix(
        (
            np.asarray(arrays["n"], dtype=np.float64)[rows] if "n" in arrays else np.ones(rows.size),
            (pattern_group[pattern] * n_values + value[rows], pattern),
        ),
        shape=(groups.size * n_values, n_patterns),
    )
    cells.sum_duplicates()
    return groups, pattern_group, multiplicity, cells


def _alphas(units: Units, weights: np.ndarray, delta2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nominal and tree alpha per group (rows) and weight vector (columns of ``weights``, patterns x R)."""
    n_groups = units.groups.size
    membership = sparse.csr_matrix(
        (np.ones(units.m.size), (units.unit_group, np.arange(units.m.size))), shape=(n_groups, units.m.size)
    )
    scale = 1.0 / (units.m - 1.0)
    return _alpha_from(
        membership @ (units.m[:, None] * weights),
        membership @ (((units.m * units.m - units.m - units.agree) * scale)[:, None] * weights),
        membership @ ((units.observed_tree * scale)[:, None] * weights),
        np.asarray(units.cells @ weights).reshape(n_groups, units.n_values, weights.shape[1]),
        delta2,
    )


def _alpha_from(
    total: np.ndarray, observed_nominal: np.ndarray, observed_tree: np.ndarray, by_value: np.ndarray,
    delta2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Nominal and tree alpha from a group's sums (groups x R, answers per value groups x values x R): the
    answers, the observed disagreements (each unit's over m - 1) and the answers per value."""
    expected_nominal = (total * total - (by_value * by_value).sum(axis=1)) / (total - 1.0)
    # (by_value' delta2 by_value) per group and column, the product with delta2 as one matrix product.
    n_groups, n_values, n_columns = by_value.shape
    spread = (by_value.transpose(0, 2, 1).reshape(n_groups * n_columns, n_values) @ delta2).reshape(
        n_groups, n_columns, n_values
    )
    expected_tree = (spread.transpose(0, 2, 1) * by_value).sum(axis=1) / (total - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        nominal = np.where(expected_nominal > 0, 1.0 - observed_nominal / expected_nominal, np.nan)
        tree = np.where(expected_tree > 1e-12, 1.0 - observed_tree / expected_tree, np.nan)
    return nominal, tree


def replicate_weights(units: Units, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Per group, as many units drawn with replacement as the group has, as pattern counts: patterns x R."""
    weights = np.zeros((units.m.size, replicates))
    order = np.argsort(units.unit_group, kind="stable")
    bounds = np.searchsorted(units.unit_group[order], np.arange(units.groups.size + 1))
    for lo, hi in itertools.pairwise(bounds):
        members = order[lo:hi]
        k = units.multiplicity[members]
        weights[members] = rng.multinomial(int(k.sum()), k / k.sum(), size=replicates).T
    return weights


def _bootstrap(units: Units, delta2: np.ndarray, replicates: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """2.5 and 97.5 percentiles of the replicate alphas per group."""
    weights = replicate_weights(units, replicates, np.random.default_rng(SEED))
    nominal, tree = _alphas(units, weights, delta2)
    samples = nominal if metric == "nominal" else tree
    ok = np.isfinite(samples).any(axis=1)
    low = np.full(units.groups.size, np.nan)
    high = np.full(units.groups.size, np.nan)
    if ok.any():
        low[ok], high[ok] = np.nanpercentile(samples[ok], [2.5, 97.5], axis=1)
    return low, high


def _fleiss_and_percent(units: Units) -> tuple[np.ndarray, np.ndarray]:
    n_groups = units.groups.size
    k = units.multiplicity
    with np.errstate(divide="ignore", invalid="ignore"):
        share = units.agree / (units.m * (units.m - 1.0))
        m_int = units.m.astype(np.int64)
        top = int(m_int.max()) + 1 if m_int.size else 1
        tally = np.bincount(units.unit_group * top + m_int, weights=k, minlength=n_groups * top).reshape(n_groups, top)
        modal = tally.argmax(axis=1)
        chosen = np.where(m_int == modal[units.unit_group], k, 0.0)
        fleiss = _fleiss_from(
            modal,
            tally[np.arange(n_groups), modal],
            np.bincount(units.unit_group, weights=chosen * share, minlength=n_groups),
            np.asarray(units.cells @ chosen).reshape(n_groups, units.n_values),
        )
        percent = np.bincount(units.unit_group, weights=k * share, minlength=n_groups) / np.bincount(
            units.unit_group, weights=k, minlength=n_groups
        )
    return fleiss, percent


def _fleiss_from(modal: np.ndarray, n_chosen: np.ndarray, chosen_share: np.ndarray, by_value: np.ndarray) -> np.ndarray:
    """Fleiss' kappa per group from its units with the modal answer count: their number, the sum of their
    shares of agreeing pairs and their answers per value (groups x values)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p_bar = chosen_share / n_chosen
        p_value = by_value / (n_chosen * modal)[:, None]
        p_expected = (p_value * p_value).sum(axis=1)
        return np.where((n_chosen >= 2) & (p_expected < 1), (p_bar - p_expected) / (1.0 - p_expected), np.nan)


def _table(units: Units, space: ValueSpace, replicates: int, metric: str = "nominal") -> pd.DataFrame:
    """Every statistic per group code with the percentile bootstrap interval; ``group`` is still the integer
    code."""
    nominal, tree = _alphas(units, units.multiplicity[:, None], space.delta2)
    low, high = _bootstrap(units, space.delta2, replicates, metric)
    fleiss, percent = _fleiss_and_percent(units)
    n_groups = units.groups.size
    k = units.multiplicity
    return _frame(
        units.groups, nominal[:, 0], tree[:, 0], (low, high), fleiss, percent,
        np.bincount(units.unit_group, weights=k, minlength=n_groups),
        np.bincount(units.unit_group, weights=k * units.m, minlength=n_groups),
    )


def _frame(
    groups: np.ndarray, nominal: np.ndarray, tree: np.ndarray, interval: tuple[np.ndarray, np.ndarray],
    fleiss: np.ndarray, percent: np.ndarray, n_items: np.ndarray, n_answers: np.ndarray,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": groups,
            "alpha_nominal": nominal,
            "alpha_tree": tree,
            "ci_low": interval[0],
            "ci_high": interval[1],
            "fleiss_kappa": fleiss,
            "percent_agreement": percent,
            "n_items": n_items.astype(np.int64),
            "n_answers": n_answers.astype(np.int64),
        }
    )


def summed_table(
    scanned: Answers, groups: UnitGroups, space: ValueSpace, metric: str = "nominal", alpha_only: bool = False
) -> pd.DataFrame:
    """Every statistic per group code with the analytic interval, in two compiled passes over the units of
    ``scanned`` (the answers ``groups`` were found in, as runs or one a row); with ``alpha_only`` (drift reads
    nothing else) nominal alpha, its interval and the counts, the tree alpha, Fleiss' kappa and percent
    agreement left NaN.

    The statistics and the influence of each unit are sums over units, so no pattern is needed: patterns pay
    for themselves only when bootstrap replicates reweight them, and hashing every unit into one cost more than
    the statistics. The first pass sums what alpha, percent agreement and Fleiss' modal count need; the second,
    knowing each group's totals, sums the units' influence on alpha and its square (the standard error a
    bootstrap over units converges to, see the module notes) and the modal units' counts for Fleiss' kappa.
    """
    n_groups = groups.codes.size
    if alpha_only and metric != "nominal":
        raise ValueError("alpha_only computes the nominal alpha's interval only")
    value, weight = scanned.value, scanned.weight
    width = groups.widest + 1
    units, answers, observed, observed_tree, share, by_value, tally = compiled_sums.unit_sums(
        value, weight, groups.bounds, groups.group, groups.pass_row, groups.seen, n_groups, space.delta2, width,
        not alpha_only,
    )
    nominal, tree = (
        a[:, 0]
        for a in _alpha_from(
            answers[:, None], observed[:, None], observed_tree[:, None], by_value[:, :, None], space.delta2
        )
    )
    if metric == "nominal":
        s, dot, d_obs = answers * answers - (by_value * by_value).sum(axis=1), by_value, observed
    else:
        dot = by_value @ space.delta2
        s, d_obs = (dot * by_value).sum(axis=1), observed_tree
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.column_stack([answers, s, s / (answers - 1.0), d_obs])
        percent = share / units
    modal = tally.argmax(axis=1)
    first, second, n_chosen, chosen_share, chosen_value = compiled_sums.unit_spread(
        value, weight, groups.bounds, groups.group, groups.pass_row, groups.seen, metric == "tree", space.delta2,
        dot, terms, modal, not alpha_only,
    )
    half = Z95 * _spread(first, second, units)
    estimate = nominal if metric == "nominal" else tree
    fleiss = _fleiss_from(modal, n_chosen, chosen_share, chosen_value)
    if alpha_only:
        tree[:], fleiss[:], percent[:] = np.nan, np.nan, np.nan
    found = units > 0
    return _frame(
        groups.codes[found], nominal[found], tree[found], ((estimate - half)[found], (estimate + half)[found]),
        fleiss[found], percent[found], units[found], answers[found],
    )


def _spread(first: np.ndarray, second: np.ndarray, units: np.ndarray) -> np.ndarray:
    """The standard deviation of a sum of ``units`` influence values with these sums and sums of squares: NaN
    for a group of one unit."""
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.clip(second - first * first / units, 0.0, None)
    return np.where(units >= 2, np.sqrt(variance), np.nan)


def day_label(days: np.ndarray) -> list[str]:
    """ISO dates of days since 1970: a weekly table can have tens of thousands of rows but only a few dozen
    weeks, so each distinct day is formatted once."""
    distinct, inverse = np.unique(np.asarray(days, dtype=np.int64), return_inverse=True)
    return np.datetime_as_string(distinct.astype("datetime64[D]"), unit="D")[inverse].tolist()


def grouped(
    con: duckdb.DuckDBPyConnection, f: Filters, grouping: str, replicates: int = 0, metric: str = "nominal"
) -> pd.DataFrame:
    """The agreement table for any grouping; for drift also ``subtree`` (answers at full depth among the items
    of each branch's subtree) and the per-week ``branch_week`` and ``subtree_week`` (columns branch, week)."""
    space = value_space(con)
    window = None if grouping in DAYLESS else "week"
    answers = scan(con, f, window)
    return grouped_answers(con, answers, space, grouping, replicates, metric)


def grouped_answers(
    con: duckdb.DuckDBPyConnection,
    answers: Answers,
    space: ValueSpace,
    grouping: str,
    replicates: int = 0,
    metric: str = "nominal",
    alpha_only: bool = False,
) -> pd.DataFrame:
    """``grouped`` over answers already scanned, so that several groupings share one scan (``alpha_only``: see
    summed_table; bootstrap tables have every statistic)."""
    table = _summarised(con, answers, space, grouping, replicates, metric, alpha_only=alpha_only)
    codes = table["group"].to_numpy(dtype=np.int64)
    if grouping == "overall":
        table["group"] = "all"
    elif grouping == "week":
        table["group"] = day_label(codes)
    elif grouping == "level":
        table["group"] = codes.astype(str)
    elif grouping in ("branch", "subtree"):
        table["group"] = [space.node_ids[c // BRANCH_WEEK_STRIDE] for c in codes]
    else:
        table.insert(0, "branch", [space.node_ids[c // BRANCH_WEEK_STRIDE] for c in codes])
        table["group"] = day_label(codes % BRANCH_WEEK_STRIDE)
        table = table.rename(columns={"group": "week"})
    return table.reset_index(drop=True)


def _check(metric: str, by: str | None = None) -> None:
    if metric not in METRICS:
        raise LabelgovError(f"unknown agreement metric {metric!r}; use one of {', '.join(METRICS)}")
    if by is not None and by not in GROUPINGS:
        raise LabelgovError(f"cannot group agreement by {by!r}; use one of {', '.join(GROUPINGS)}")


def alpha(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    metric: str = "nominal",
    level: int | None = None,
    bootstrap: int = 0,
) -> AgreementResult:
    """Alpha over the filtered answers, optionally at one tree level, with a 95% interval (analytic, or a
    percentile bootstrap with ``bootstrap`` replicates)."""
    _check(metric)
    if level is not None and level < 1:
        raise LabelgovError(f"level must be 1 (top level) or deeper, got {level}")
    space = value_space(con)
    answers = scan(con, f, None)
    table = _summarised(con, answers, space, "overall" if level is None else "level", bootstrap, metric, level)
    if table.empty:
        return AgreementResult(metric=metric, value=np.nan, ci_low=np.nan, ci_high=np.nan, n_items=0, n_answers=0)
    row = table.iloc[0]
    return AgreementResult(
        metric=metric,
        value=float(row["alpha_nominal" if metric == "nominal" else "alpha_tree"]),
        ci_low=float(row["ci_low"]),
        ci_high=float(row["ci_high"]),
        n_items=int(row["n_items"]),
        n_answers=int(row["n_answers"]),
    )


def agreement_table(
    con: duckdb.DuckDBPyConnection, f: Filters, by: str = "overall", bootstrap: int = 0
) -> pd.DataFrame:
    """One row per group: the refreshed table when unfiltered with analytic intervals (what refresh stores),
    computed from the answers otherwise."""
    _check("nominal", by)
    if bootstrap < 0:
        raise LabelgovError(f"the bootstrap needs zero (analytic intervals) or more replicates, got {bootstrap}")
    if f.is_empty() and bootstrap == 0 and table_exists(con, STORED[by]):
        return con.execute("SELECT * FROM " + STORED[by] + " ORDER BY 1").df()  # noqa: S608 - allow-listed name
    # In group order, as the stored tables are read: the same rows in the same order with or without filters.
    return grouped(con, f, by, bootstrap)[TABLE_COLUMNS].sort_values("group", ignore_index=True)


# Integer keys throughout (annotator_idx, the answer's node as an integer code): only the chosen annotators'
# names are joined back at the end; pairs are ordered by name through each annotator's rank among the top.
# The top annotators are counted on the integer index alone and their ids joined to the two thousand groups
# after; their answers are then read again through a join on the fifteen of them, which DuckDB pushes into the
# scan. Holding every filtered answer with its id string for both steps (one CTE used twice) cost twice as much.
TOP_COUNTED = """
WITH counted AS (SELECT a.annotator_idx, count(*) AS n FROM {ALL} GROUP BY 1),
top AS (
    SELECT annotator_idx, annotator_id, row_number() OVER (ORDER BY annotator_id) AS r
    FROM (SELECT c.annotator_idx, x.annotator_id FROM counted c JOIN d_annotator_index x USING (annotator_idx)
          ORDER BY c.n DESC, x.annotator_id LIMIT ?)
),"""
# The same top annotators when their answers were counted in memory: the counts of the candidates (every
# annotator with at least the top-th largest count) are bound, and ties are broken by id as above.
TOP_GIVEN = """
WITH top AS (
    SELECT annotator_idx, annotator_id, row_number() OVER (ORDER BY annotator_id) AS r
    FROM (SELECT c.annotator_idx, x.annotator_id
          FROM (SELECT unnest(CAST(? AS INTEGER[])) AS annotator_idx, unnest(CAST(? AS BIGINT[])) AS n) c
          JOIN d_annotator_index x USING (annotator_idx) ORDER BY c.n DESC, x.annotator_id LIMIT ?)
),"""
PAIRWISE = """
one AS (SELECT t.r, a.item_idx, arg_max(a.value_idx, a.created_at) AS v FROM {TOP} GROUP BY ALL),
pairs AS (
    SELECT x.r AS ra, y.r AS rb, x.v AS va, y.v AS vb FROM one x JOIN one y ON x.item_idx = y.item_idx AND x.r < y.r
),
tot AS (SELECT ra, rb, count(*) AS n, avg(CAST(va = vb AS DOUBLE)) AS po FROM pairs GROUP BY ALL),
ma AS (SELECT ra, rb, va AS v, count(*) AS k FROM pairs GROUP BY ALL),
mb AS (SELECT ra, rb, vb AS v, count(*) AS k FROM pairs GROUP BY ALL),
pe AS (SELECT ra, rb, sum(ma.k * mb.k) AS s FROM ma JOIN mb USING (ra, rb, v) GROUP BY ALL)
SELECT ta.annotator_id AS annotator_a, tb.annotator_id AS annotator_b,
       CASE WHEN coalesce(s, 0) < n * n THEN (po - coalesce(s, 0) / (n * n)) / (1 - coalesce(s, 0) / (n * n)) END
           AS kappa,
       n AS n_items
FROM tot LEFT JOIN pe USING (ra, rb) JOIN top ta ON ta.r = tot.ra JOIN top tb ON tb.r = tot.rb
ORDER BY annotator_a, annotator_b
"""


def pairwise_kappa(con: duckdb.DuckDBPyConnection, f: Filters, top: int = 15) -> pd.DataFrame:
    """Cohen's kappa for every pair among the ``top`` annotators with the most answers, over the items both
    labelled; when an annotator answered an item more than once, their latest answer counts."""
    if top < 2:
        raise LabelgovError(f"pairwise kappa needs at least two annotators, got top={top}")
    if f.is_empty() and top == STORED_TOP and table_exists(con, STORED_PAIRS):
        return con.execute("SELECT * FROM " + STORED_PAIRS + " ORDER BY 1, 2").df()  # noqa: S608 - fixed name
    return _pairs(con, f, top)


def _pairs(con: duckdb.DuckDBPyConnection, f: Filters, top: int) -> pd.DataFrame:
    every, params = f.answers_from()
    theirs, _ = f.answers_from("JOIN top t ON t.annotator_idx = a.annotator_idx")
    scope = answer_arrays.in_scope(con, f)
    if scope is None:
        head, head_params = TOP_COUNTED.replace("{ALL}", every), [*params, top]
    else:
        # Every annotator's answers counted over the held answers: a scan of every answer in scope less.
        columns, keep = scope
        counts = compiled_sums.counts_by(keep, columns["annotator_idx"], int(columns["annotator_idx"].max()) + 1)
        bar = np.sort(counts)[-top] if counts.size >= top else 0
        candidates = np.flatnonzero((counts >= bar) & (counts > 0))
        head, head_params = TOP_GIVEN, [candidates.tolist(), counts[candidates].tolist(), top]
    sql = head + PAIRWISE.replace("{TOP}", theirs)  # fixed fragments; values are bound
    frame = con.execute(sql, [*head_params, *params]).df()
    frame["kappa"] = frame["kappa"].astype(float)
    frame["n_items"] = frame["n_items"].astype(np.int64)
    return frame[PAIR_COLUMNS]


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Alpha is a global ratio over all items, so every table is recomputed in full: the groupings without days
    from one scan of every answer, the weekly one from the answers that have a timestamp, as a page asks."""
    space = value_space(con)
    frames: dict[str, pd.DataFrame] = {}
    for window in (None, "week"):
        answers = scan(con, Filters(), window)
        for by, table in STORED.items():
            if (by in DAYLESS) == (window is None):
                frames[table] = grouped_answers(con, answers, space, by)[TABLE_COLUMNS]
        del answers
    frames[STORED_PAIRS] = _pairs(con, Filters(), STORED_TOP)
    for table, frame in frames.items():
        frame_writes.store(con, table, frame)
    return "full"


