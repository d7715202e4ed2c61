"""Soft labels across the label tree: how an item's answers (or its latent-truth posterior) spread over nodes.

Definition. The tree is cut at every depth L: the cut holds the nodes at depth L plus the leaves that
end above L (a leaf is as fine as the tree allows on its branch, so it stands for itself at every deeper
cut). An answer *reaches* depth L when its node is at depth >= L or is a leaf. Coarse answers (an
internal node above L) carry no information about how the mass splits below them, so they are left out
at depth L rather than spread over children: a coarse answer never invents finer mass. Then, for an item

    mass_L(n) = #{answers reaching L whose ancestor on the cut at L is n} / #{answers reaching L}

which counts a coarse answer AT n in n's mass. Every cut sums to 1 over the answers that reach it; in
answer counts a node is the sum of its children plus the coarse answers at it, so in mass a node equals
the sum of its children whenever nobody stopped at it. The posterior (Dawid-Skene, over leaves) is
rolled up the same way and, having no coarse part, sums exactly at every node.

Per item and depth we keep entropy (bits), the top node (ties to the first in tree order), its share and
the gap to the runner-up. Per branch (an internal node) we keep the item's mass there, the entropy of
the split among its children (mass renormalised within the branch), and two agreement flags: everyone
reaching the branch's depth chose this branch but at least two different leaves were given below it
(``agree_branch_not_leaf``), or the answers split between this branch and another (``disagree_branch``).

Refresh materialises ``d_soft_mass``, ``d_soft_levels`` and ``d_soft_branches``; per-item maths, so only
items with new answers are recomputed. Pages read them (or sums of them) for item-level filters (branch,
source, segment, which only choose items), read per-tier sums for a filter on one annotator tier, and
otherwise recompute the answers' soft labels from ``d_answers`` with the refresh's walk (``soft_label_walk``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from queries import frame_writes, soft_label_parts, soft_label_walk
from queries.connection import meta_value
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.results import arrays, arrow_table, first_row

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

Source = Literal["annotations", "posterior"]
SOURCES: tuple[str, ...] = ("annotations", "posterior")
# Filter fields that only choose items; the others change which answers count for an item.

# One row per node id: its latest tree version names it, orders it and gives its lineage.
NODES = (
    "(SELECT DISTINCT ON (node_id) node_id, parent_id, title, depth, is_leaf, ordinal, lineage "
    "FROM d_nodes ORDER BY node_id, tree_version DESC)"
)
MAX_DEPTH = "(SELECT max(depth) FROM d_nodes)"
AMBIGUOUS = "(l.top_share < ? OR l.gap < ?)"

MASS_COLUMNS = ["item_id", "item_idx", "node_id", "depth", "mass", "answers"]
LEVEL_STATS_COLUMNS = [
    "source", "depth", "items", "mean_entropy", "mean_top_share", "mean_gap", "ambiguous_share",
]
BRANCH_COLUMNS = [
    "node_id", "title", "depth", "items", "mean_mass", "mean_child_entropy", "ambiguous_share",
    "agree_branch_not_leaf", "disagree_branch",
]
PRIORITY_COLUMNS = [
    "node_id", "title", "depth", "items", "mean_child_entropy", "mean_norm_child_entropy", "ambiguous_share",
    "score",
]


class Ambiguity(BaseModel):
    """An item is ambiguous at a level when its top node holds too little mass or barely leads.

    The defaults make a 2-to-1 split of three answers ambiguous (top 0.67, gap 0.33) and a 3-to-1 split
    of four not (top 0.75, gap 0.5). Only items with at least two answers there are judged: one answer
    cannot disagree with itself. Posterior rows are always judged.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    top_share_below: float = Field(default=0.7, gt=0, le=1)
    gap_below: float = Field(default=0.34, ge=0, le=1)


# --- shared helpers (also used by contested, hierarchy_accuracy and data_quality) ---------------------


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether a table of this name exists (the warehouse has no views). duckdb_tables() rather than
    information_schema.tables, a view over every catalog function that costs twice as much, and a page asks
    this several times."""
    row = first_row(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]))
    return bool(row and row[0])


def max_depth(con: duckdb.DuckDBPyConnection) -> int:
    """Depth of the deepest node over all tree versions, 0 before the first refresh."""
    if not table_exists(con, "d_nodes"):
        return 0
    row = first_row(con.execute("SELECT coalesce(max(depth), 0) FROM d_nodes"))
    return int(row[0]) if row else 0


def item_level_only(f: Filters) -> bool:
    return not f.answer_fields()


def item_scope(f: Filters) -> tuple[str | None, list[Any]]:
    """A subquery of the item_idx values the filters keep, None when they keep every item.

    Item-level filters are answered from ``d_items`` (rows ``x``; the subquery ends in its WHERE predicate,
    so a caller may add conditions on ``x``); any other field keeps the items that have at least one matching
    answer.
    """
    if f.is_empty():
        return None, []
    if item_level_only(f):
        # The branch tested on each item's own lineage: Filters.where would collect the branch's items from
        # d_items a second time and probe every row against them.
        pred, params = f.model_copy(update={"branch": None}).where("x")
        if f.branch is not None:
            pred, params = pred + " AND list_contains(x.item_lineage, ?)", [*params, f.branch]
        sub = (
            "SELECT x.item_idx FROM (SELECT item_idx, source, segment, consensus_lineage AS item_lineage "  # noqa: S608 - fixed SQL fragments
            "FROM d_items) x WHERE " + pred
        )
        return sub, params
    pred, params = f.where("a")
    return "SELECT DISTINCT a.item_idx FROM d_answers a WHERE " + pred, params  # noqa: S608 - as above


SCOPED_COLUMNS = frozenset({"s.item_idx", "a.item_idx", "p.item_idx", "d.item_idx", "g.item_idx"})


def scoped(column: str, f: Filters, indices: Sequence[int] | None = None) -> tuple[str, list[Any]]:
    """``column IN (...)`` restrictions for the filters and an optional list of item indices, or TRUE.

    The indices are bound as a list of constants rather than looked up in a subquery: the per-item
    tables are sorted by item_idx, so constants let DuckDB skip every row group but the item's own.
    """
    if column not in SCOPED_COLUMNS:
        raise ValueError(f"column {column!r} is not in the allow-list")
    parts: list[str] = []
    params: list[Any] = []
    sub, sub_params = item_scope(f)
    if sub is not None:
        parts.append(column + " IN (" + sub + ")")
        params.extend(sub_params)
    if indices is not None:
        parts.append(column + " IN (" + ", ".join(["?"] * len(indices)) + ")" if indices else "FALSE")
        params.extend(int(i) for i in indices)
    return (" AND ".join(parts) if parts else "TRUE"), params


def item_indices(con: duckdb.DuckDBPyConnection, items: Sequence[str] | None) -> list[int] | None:
    """The dense indices of the given item ids (unknown ids drop out), None when no list is given."""
    if items is None:
        return None
    rows = con.execute(
        "SELECT item_idx FROM d_item_index WHERE item_id IN (SELECT unnest(?))", [[str(i) for i in items]]
    ).fetchall()
    return [int(r[0]) for r in rows]


def empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


# --- SQL: weights -> mass -> levels / branches ------------------------------------------------------
# Each builder returns a SELECT over a relation given as text, with the relation's parameters passed
# through in textual order. The relations are fixed fragments of this module or Filters predicates.


def _answer_weights(pred: str, by_tier: bool = False) -> str:
    """Answers per item and node (and annotator tier) for the answers the predicate keeps."""
    return (
        "SELECT a.item_idx, a.tree_version, a.node_id, " + ("a.tier, " if by_tier else "") +  # noqa: S608 - fixed SQL fragments
        "CAST(count(*) AS DOUBLE) AS w, count(*) AS answers FROM d_answers a WHERE " + pred + " GROUP BY ALL"
    )


def _posterior_weights(pred: str) -> str:
    """The posterior over leaves, placed in the node's latest tree version; it has no answer counts."""
    return (
        "SELECT p.item_idx, n.tree_version, p.node_id, CAST(p.p AS DOUBLE) AS w, CAST(NULL AS BIGINT) AS answers "  # noqa: S608 - fixed SQL fragments
        "FROM d_posterior p JOIN (SELECT node_id, max(tree_version) AS tree_version FROM d_nodes GROUP BY node_id) n "
        "USING (node_id) WHERE p.p > 0 AND " + pred
    )


# Node ids as dense integers: grouping and windowing on a small integer instead of a string key is what
# makes the cut expansion cheap at ten million answers; the id is looked up once per output row.
NODE_CODES = (
    "(SELECT node_id, CAST(row_number() OVER (ORDER BY node_id) AS INTEGER) AS code "
    "FROM (SELECT DISTINCT node_id FROM d_nodes))"
)

# Every node's place on every cut it reaches: (tree_version, node_id, depth, cut) with the cut node's code. A
# few hundred rows, so expanding answers to cuts is a hash join on the node rather than a list unnest per answer.
CUTS = (
    "(SELECT c.tree_version, c.node_id, c.depth, k.code AS cut FROM "  # noqa: S608 - fixed SQL fragments
    "(SELECT tree_version, node_id, depth, lineage[least(depth, node_depth)] AS cut_node "
    "FROM (SELECT tree_version, node_id, depth AS node_depth, is_leaf, lineage, "
    "unnest(range(1, " + MAX_DEPTH + " + 1)) AS depth FROM d_nodes) WHERE is_leaf OR depth <= node_depth) c "
    "JOIN " + NODE_CODES + " k ON k.node_id = c.cut_node)"
)


def _mass_sql(weights: str) -> str:
    """Expand each weight to every cut it reaches and normalise within (item, depth).

    The totals per (item, depth) are a grouping joined back: as a window partitioned by item and depth the
    same sums cost DuckDB twice as much (it sorts the partitions)."""
    return (
        "WITH g AS (SELECT w.item_idx, c.depth, c.cut, sum(w.w) AS s, CAST(sum(w.answers) AS BIGINT) AS answers "  # noqa: S608 - fixed SQL fragments
        "FROM (" + weights + ") w JOIN " + CUTS + " c USING (tree_version, node_id) GROUP BY ALL), "
        "t AS (SELECT item_idx, depth, sum(s) AS total FROM g GROUP BY ALL) "
        "SELECT g.item_idx, k.node_id, g.depth, g.s / t.total AS mass, g.answers FROM g JOIN t USING (item_idx, depth) "
        "JOIN " + NODE_CODES + " k ON k.code = g.cut"
    )


def _levels_sql(mass: str) -> str:
    return (
        "SELECT m.item_idx, m.depth, sum(m.answers) AS answers, "
        "greatest(0.0, -sum(m.mass * log2(m.mass))) AS entropy, "
        "arg_max(m.node_id, [m.mass, -n.ordinal]) AS top_node, max(m.mass) AS top_share, "
        "max(m.mass) - coalesce(max(m.mass, 2)[2], 0.0) AS gap "
        "FROM (" + mass + ") m JOIN " + NODES + " n USING (node_id) "
        "GROUP BY m.item_idx, m.depth"
    )


# --- refresh ----------------------------------------------------------------------------------------
# The refresh computes the three tables in numpy from (item, node, weight) rows: the cut expansion, the
# normalisation and the per-item statistics are array indexing and sorted-group reductions, which at ten
# million answers cost a fraction of the equivalent SQL joins and window over string keys. The page
# statistics under answer filters use the same arrays; the per-item views (item_levels, item_node_mass)
# keep the SQL above, and the tests hold the two to the same numbers.

TABLES = ("d_soft_mass", "d_soft_levels", "d_soft_branches")
# meta keys: the newest tree version the soft-label tables were built under, and a fingerprint of the
# posterior they hold.
TREE_KEY = "soft_labels_tree_version"
POSTERIOR_KEY = "soft_labels_posterior"

# Every (tree_version, node_id) of d_nodes with a dense place index, and each place's cut per depth.
PLACES = (
    "(SELECT tree_version, node_id, CAST(row_number() OVER (ORDER BY tree_version, node_id) AS INTEGER) AS place "
    "FROM d_nodes)"
)
PLACE_CUTS = "SELECT p.place, c.depth, c.cut FROM " + CUTS + " c JOIN " + PLACES + " p USING (tree_version, node_id)"  # noqa: S608 - fixed SQL fragments
CODED_NODES = (
    "SELECT k.code, n.node_id, coalesce(pk.code, 0) AS parent, n.depth, n.is_leaf, n.ordinal FROM " + NODES + " n "  # noqa: S608 - fixed SQL fragments
    "JOIN " + NODE_CODES + " k USING (node_id) LEFT JOIN " + NODE_CODES + " pk ON pk.node_id = n.parent_id "
    "ORDER BY k.code"
)


@dataclass
class Tree:
    """Node attributes indexed by node code (0 is "none"), and the cut code of every place at every depth."""

    node_ids: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    is_leaf: np.ndarray
    ordinal: np.ndarray
    cut: np.ndarray  # [depth - 1, place] -> node code, 0 when the place does not reach that depth

    @property
    def size(self) -> int:
        return int(self.node_ids.size)


def _tree(con: duckdb.DuckDBPyConnection) -> Tree:
    nodes = arrays(con, CODED_NODES)
    k = int(nodes["code"].max()) + 1 if len(nodes["code"]) else 1

    def by_code(column: str, fill: Any, dtype: Any) -> np.ndarray:
        out = np.full(k, fill, dtype=dtype)
        out[np.asarray(nodes["code"], dtype=np.int64)] = np.asarray(nodes[column], dtype=dtype)
        return out

    cuts = arrays(con, PLACE_CUTS)
    depth = np.asarray(cuts["depth"], dtype=np.int64)
    place = np.asarray(cuts["place"], dtype=np.int64)
    cut = np.zeros((int(depth.max()) if depth.size else 0, int(place.max()) + 1 if place.size else 1), dtype=np.int64)
    cut[depth - 1, place] = np.asarray(cuts["cut"], dtype=np.int64)
    return Tree(
        node_ids=by_code("node_id", None, object),
        parent=by_code("parent", 0, np.int64),
        depth=by_code("depth", 0, np.int64),
        is_leaf=by_code("is_leaf", True, bool),
        ordinal=by_code("ordinal", 0, np.int64),
        cut=cut,
    )


FLOAT = pa.float64()


def run_starts(key: np.ndarray) -> np.ndarray:
    """Start of every run of equal values in a sorted key."""
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, dtype=np.int64)


Rows = dict[str, np.ndarray]


def _weight_rows(
    con: duckdb.DuckDBPyConnection, weights: str, params: list[Any], tiers: Sequence[str] | None = None
) -> Rows:
    """The weights as arrays (item_idx, place, w, answers). Weights split by tier (``_answer_weights(...,
    by_tier=True)``) also get ``tier``, the 1-based position of the answer's tier in ``tiers``, 0 for none."""
    tier = "" if tiers is None else ", coalesce(list_position(CAST(? AS VARCHAR[]), w.tier), 0) AS tier"
    return arrays(
        con,
        "SELECT w.item_idx, p.place, w.w, w.answers" + tier + " FROM (" + weights + ") w "  # noqa: S608 - fixed SQL fragments
        "JOIN " + PLACES + " p USING (tree_version, node_id)",
        params if tiers is None else [list(tiers), *params],
    )


def _walk(tree: Tree, raw: Rows, counted: bool) -> soft_label_walk.Walked:
    """The soft-label rows of the items in ``raw`` (see _soft_arrays). Rows of one (item, place) may come split
    (by tier): the walk adds them up."""
    answers = raw["answers"] if counted else np.zeros(len(raw["item_idx"]))
    return soft_label_walk.walk(
        raw["item_idx"], raw["place"], raw["w"], answers, tree.cut, tree.ordinal, tree.depth, tree.parent,
        tree.is_leaf, branches=counted,
    )


def _soft_arrays(tree: Tree, got: soft_label_walk.Walked, counted: bool) -> Iterator[tuple[str, pa.Table]]:
    """The mass, level and (for answer counts) branch rows of a walk, in item order, as one Arrow table at a
    time so that each can be written and freed before the next is built (peak memory)."""
    yield "d_soft_mass", _frame(
        counted, item_idx=got.item, node_id=_names(tree, got.node), depth=got.depth, mass=got.mass, answers=got.answers
    )
    yield "d_soft_levels", _frame(
        counted,
        item_idx=got.level_item,
        depth=got.level_depth,
        answers=got.level_answers,
        entropy=got.entropy,
        top_node=_names(tree, got.top_node),
        top_share=got.top_share,
        gap=got.gap,
    )
    if counted:
        yield "d_soft_branches", _branches(tree, got)


def _branches(tree: Tree, got: soft_label_walk.Walked) -> pa.Table:
    """Per item and internal node on its own cut: mass, the split among its children and the flag inputs."""
    row, found = got.branch_row, got.has_children

    def child(values: np.ndarray, kind: pa.DataType = FLOAT) -> pa.Array:
        """The child statistic of each branch, NULL for a branch without children on its cut."""
        return pa.array(values, kind, mask=~found)

    return pa.table(
        {
            "source": _repeat("annotations", row.size),
            "item_idx": pa.array(got.item[row], pa.int32()),
            "node_id": _names(tree, got.node[row]),
            "depth": pa.array(got.depth[row], pa.int64()),
            "mass": pa.array(got.mass[row], pa.float64()),
            "answers": pa.array(got.answers[row], pa.int64()),
            "level_answers": pa.array(got.branch_level_answers, pa.int64()),
            "child_answers": child(np.where(found, got.child_answers, 0), pa.int64()),
            "child_entropy": child(got.child_entropy),
            "child_top_share": child(got.child_top_share),
            "child_gap": child(got.child_gap),
            "leaves": pa.array(got.leaves, pa.int64()),
        }
    )


def _frame(counted: bool, **columns: np.ndarray) -> pa.Table:
    """A table with the source first; answer counts are NULL for the posterior, which has none. Node ids
    arrive as codes into ``names`` and are expanded by Arrow, not by building Python strings."""
    size = len(next(iter(columns.values())))
    arrays: dict[str, pa.Array] = {"source": _repeat("annotations" if counted else "posterior", size)}
    for name, values in columns.items():
        if name == "answers":
            arrays[name] = pa.array(values, pa.int64()) if counted else pa.nulls(size, pa.int64())
        elif name in ("item_idx", "depth"):
            arrays[name] = pa.array(values, pa.int32() if name == "item_idx" else pa.int64())
        elif isinstance(values, pa.Array):
            arrays[name] = values
        else:
            arrays[name] = pa.array(values, pa.float64())
    return pa.table(arrays)


def _repeat(text: str, size: int) -> pa.Array:
    """A constant string column, dictionary-encoded: DuckDB reads it as VARCHAR, Arrow stores a byte per row."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(size, dtype=np.int8)), pa.array([text], pa.string()))


def _names(tree: Tree, codes: np.ndarray) -> pa.Array:
    """Node ids of node codes, dictionary-encoded over the tree's few hundred ids."""
    return frame_writes.dictionary(codes, tree.node_ids)


def _write(con: duckdb.DuckDBPyConnection, create: bool, table: str, rows: pa.Table) -> None:
    """Create ``table`` (one of TABLES) from ``rows`` or append to them; rows arrive in item order and stay so."""
    if table not in TABLES:
        raise ValueError(f"table {table!r} is not in the allow-list")
    head = "CREATE OR REPLACE TABLE " + table + " AS " if create else "INSERT INTO " + table + " BY NAME "
    # Page lookups of one item skip row groups by item_idx, so the rows must land in the order given even
    # under the refresh's bulk settings; keeping it costs nothing here, unlike an ORDER BY.
    ordered = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    try:
        con.execute("SET preserve_insertion_order = true")
        # The rows are named for this one statement rather than with ``con.register``: a registered view
        # is a catalog entry, and inside the refresh's transaction the dropped entry (and with it the
        # Arrow table) lives until commit even after ``unregister``, so every chunk written that way
        # stayed in memory for the rest of the refresh (about 1 GB at ten million answers).
        con.from_arrow(rows).query("_soft_rows", head + "SELECT * FROM _soft_rows")  # noqa: S608 - allow-listed table name
    finally:
        con.execute("SET preserve_insertion_order = " + ("true" if ordered else "false"))


def _posterior_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """Row count and an order-free hash of the posterior: Dawid-Skene often converges to the same result
    when nothing new arrived, and then the posterior part need not be rebuilt."""
    if not table_exists(con, "d_posterior"):
        return "none"
    row = first_row(con.execute(
        "SELECT count(*) || ':' || coalesce(bit_xor(hash(item_idx, node_id, p)), 0) FROM d_posterior"
    ))
    return str(row[0]) if row else "none"


# Items per pass of the array maths (here and in escalation_crowd's walk): memory stays bounded by a chunk's
# rows rather than the warehouse's, at the price of one more narrow scan of d_answers per chunk.
CHUNK_ITEMS = 125_000


def item_chunks(con: duckdb.DuckDBPyConnection) -> list[tuple[int, int]]:
    """Item index ranges [low, high) covering every item, in order, so each table is written in item order."""
    row = first_row(con.execute("SELECT coalesce(max(item_idx), -1) + 1 FROM d_item_index"))
    top = int(row[0]) if row else 0
    return [(low, low + CHUNK_ITEMS) for low in range(0, max(top, 1), CHUNK_ITEMS)]


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Rebuild the soft-label tables, only for items with new answers when the tables already exist.

    The posterior part is rebuilt only when the posterior changed (Dawid-Skene re-estimates every item
    on each refresh, but usually lands on the same numbers when nothing new arrived). A new tree
    version can move nodes (and so change parents and tie-break order) for old items too, so it forces
    a full rebuild.
    """
    row = first_row(con.execute("SELECT CAST(coalesce(max(tree_version), 0) AS VARCHAR) FROM tree_versions"))
    tree = row[0] if row else "0"
    posterior = _posterior_fingerprint(con)
    incremental = (
        not ctx.full
        and meta_value(con, TREE_KEY) == tree
        and all(table_exists(con, t) for t in (*TABLES, *SUMMARIES, *CHUNK_SUMMARIES, *TIER_PARTS))
    )
    if incremental:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _soft_touched AS SELECT DISTINCT x.item_idx FROM annotations a "
            "JOIN d_item_index x USING (item_id) WHERE a.batch_id > ?",
            [ctx.since_batch],
        )
        touched = first_row(con.execute("SELECT count(*) FROM _soft_touched"))
        redo_posterior = meta_value(con, POSTERIOR_KEY) != posterior
        if not (touched and touched[0]) and not redo_posterior:
            con.execute("DROP TABLE _soft_touched")
            return "incremental"
        # Posterior rows are replaced wholesale when it changed; otherwise only the touched items' answers.
        stale = "source = 'posterior' OR " if redo_posterior else "source = 'annotations' AND "
        for table in TABLES:
            con.execute(
                "DELETE FROM " + table + " WHERE " + stale + "item_idx IN (SELECT item_idx FROM _soft_touched)"  # noqa: S608 - allow-listed table name
            )
        scope = "a.item_idx IN (SELECT item_idx FROM _soft_touched)"
    else:
        redo_posterior = True
        scope = "TRUE"
    nodes = _tree(con)
    tiers = _tiers(con)
    groups = item_groups(con)
    in_chunk = "a.item_idx >= ? AND a.item_idx < ?"
    with ThreadPoolExecutor(max_workers=1) as pool:
        for n, (low, high) in enumerate(item_chunks(con)):
            chunk = [low, high]
            # One fetch split by tier serves both passes; the all-tier pass adds the tiers up.
            answers = _weight_rows(con, _answer_weights(scope + " AND " + in_chunk, by_tier=True), chunk, tiers)
            # The tier walk needs nothing else, so in full it runs on a thread while the per-item tables are
            # walked and written (the walk releases the GIL).
            by_tier = None if incremental else pool.submit(_walk, nodes, _by_tier(answers, len(tiers)), True)
            walked = _walk(nodes, answers, True)
            for table, rows in _soft_arrays(nodes, walked, counted=True):
                _write(con, not incremental and n == 0, table, rows)
                del rows  # freed before the next table is built
            if redo_posterior and table_exists(con, "d_posterior"):
                posterior_rows = _weight_rows(con, _posterior_weights("p.item_idx >= ? AND p.item_idx < ?"), chunk)
                for table, extra in _soft_arrays(nodes, _walk(nodes, posterior_rows, False), counted=False):
                    _write(con, False, table, extra)
                    del extra
            # The sums are per chunk: one with touched items (or a changed posterior) is redone whole.
            if by_tier is None and (redo_posterior or answers["item_idx"].size):
                answers = _weight_rows(con, _answer_weights(in_chunk, by_tier=True), chunk, tiers)
                by_tier = pool.submit(_walk, nodes, _by_tier(answers, len(tiers)), True)
                walked = _walk(nodes, answers, True)
            if by_tier is not None:
                _write_parts(
                    con, nodes, walked, by_tier.result(), tiers, not incremental and n == 0, chunk, groups, pool
                )
            del answers, by_tier, walked
    for key, value in ((TREE_KEY, tree), (POSTERIOR_KEY, posterior)):
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])
    for sql in REGROUPED:
        con.execute(sql)
    if incremental:
        con.execute("DROP TABLE _soft_touched")
        return "incremental"
    return "full"


# --- relations for page queries -----------------------------------------------------------------------

# Additive partial sums with the default thresholds, kept at refresh per soft-label source and cut and
# per group of items that every item-level filter treats alike (same consensus node, item source and
# segment). Each group carries one of its items as ``item_idx``, so ``Filters.where("x")`` decides for
# the whole group; the pages then sum a few thousand rows instead of scanning the per-item tables.
#
# An annotator tier changes every item's soft label, so the same sums are also kept per tier: each
# (item, tier) pair is soft-labelled from that tier's answers alone, and the posterior rows count under
# every tier the item has an answer of (as the filtered pages count them). Tiers are few (three in the
# demo) and the pass reuses the refresh's fetch; a filter on one tier then sums stored rows as well.
# Both kinds of sums are written per chunk of items (their ``item_idx`` lies in the chunk), from the chunk's
# walk, so that an incremental refresh redoes only the chunks with new answers; a group of items split over
# chunks has a row in each. The all-tier sums are then added up per group into the tables the pages read: a
# row per group there keeps the unfiltered and item-filtered pages at half the time of summing the chunks' rows.
SUMMARIES = ("d_soft_level_parts", "d_soft_branch_parts")
CHUNK_SUMMARIES = ("d_soft_level_chunks", "d_soft_branch_chunks")
TIER_PARTS = ("d_soft_tier_level_parts", "d_soft_tier_branch_parts")
GROUP = "d.consensus_node, d.source, d.segment"


def _parts_sql(tier: str, key: str) -> str:
    """The sums of one chunk (``_parts``, from soft_label_parts) with their groups' attributes (``_groups``, a row
    per group code); the all-tier sums are those of one pseudo-tier, whose column is left out."""
    return (
        "SELECT " + tier + "p." + key + ", p.depth, " + GROUP + ", p.* EXCLUDE (tier, " + key + ", depth, group_code) "
        "FROM _parts p LEFT JOIN _groups d USING (group_code)"
    )


PARTS_SQL = {
    "d_soft_level_chunks": _parts_sql("", "soft_source"),
    "d_soft_branch_chunks": _parts_sql("", "node_id"),
    "d_soft_tier_level_parts": _parts_sql("p.tier, ", "soft_source"),
    "d_soft_tier_branch_parts": _parts_sql("p.tier, ", "node_id"),
}
# The chunks' all-tier sums, one row per group.
REGROUPED = (
    "CREATE OR REPLACE TABLE d_soft_level_parts AS SELECT soft_source, depth, consensus_node, source, segment, "
    "min(item_idx) AS item_idx, CAST(sum(items) AS BIGINT) AS items, sum(s_entropy) AS s_entropy, "
    "sum(s_top_share) AS s_top_share, sum(s_gap) AS s_gap, CAST(sum(judged) AS BIGINT) AS judged, "
    "CAST(sum(ambiguous) AS BIGINT) AS ambiguous FROM d_soft_level_chunks GROUP BY ALL ORDER BY ALL",
    "CREATE OR REPLACE TABLE d_soft_branch_parts AS SELECT node_id, depth, consensus_node, source, segment, "
    "min(item_idx) AS item_idx, CAST(sum(items) AS BIGINT) AS items, sum(s_mass) AS s_mass, "
    "CAST(sum(n_child) AS BIGINT) AS n_child, sum(s_child_entropy) AS s_child_entropy, "
    "CAST(sum(n_ambiguous) AS BIGINT) AS n_ambiguous, CAST(sum(n_level) AS BIGINT) AS n_level, "
    "CAST(sum(n_agree) AS BIGINT) AS n_agree, CAST(sum(n_disagree) AS BIGINT) AS n_disagree, "
    "CAST(sum(n_norm) AS BIGINT) AS n_norm, sum(s_norm) AS s_norm FROM d_soft_branch_chunks GROUP BY ALL ORDER BY ALL",
)
# Each item's group as a dense code, with the group's attributes.
ITEM_GROUPS = (
    "SELECT item_idx, consensus_node, source, segment, "
    "CAST(dense_rank() OVER (ORDER BY consensus_node, source, segment) - 1 AS INTEGER) AS group_code FROM d_items"
)
POSTERIOR_LEVELS = (
    "SELECT item_idx AS item, depth, entropy, top_share, gap FROM d_soft_levels "
    "WHERE source = 'posterior' AND item_idx >= ? AND item_idx < ? ORDER BY item_idx"
)


def _tiers(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT DISTINCT tier FROM d_answers WHERE tier IS NOT NULL ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def _by_tier(answers: Rows, tiers: int) -> Rows:
    """The answers with a tier, each (item, tier) pair as an item of its own: item_idx * tiers + tier - 1."""
    keep = answers["tier"] > 0
    rows = {name: values[keep] for name, values in answers.items() if name != "tier"}
    rows["item_idx"] = rows["item_idx"].astype(np.int64) * tiers + answers["tier"][keep] - 1
    return rows


class ItemGroups(NamedTuple):
    """Each item index's group code, and a row of attributes per group code. An item without a row in d_items
    (none in practice) gets a code after the last, with no attributes: NULLs, as a left join gave them."""

    code: np.ndarray
    attributes: pa.Table


def item_groups(con: duckdb.DuckDBPyConnection) -> ItemGroups:
    """The groups the stored sums are kept per: items that every item-level filter treats alike."""
    row = first_row(con.execute("SELECT coalesce(max(item_idx), -1) + 1 FROM d_item_index"))
    rows = arrow_table(con, ITEM_GROUPS)
    code = rows["group_code"].to_numpy()
    groups = np.full(int(row[0]) if row else 0, -1, dtype=np.int64)
    groups[rows["item_idx"].to_numpy()] = code
    groups[groups < 0] = groups.max(initial=-1) + 1
    _, first = np.unique(code, return_index=True)
    return ItemGroups(groups, rows.select(["group_code", "consensus_node", "source", "segment"]).take(first))


def _write_parts(
    con: duckdb.DuckDBPyConnection, tree: Tree, walked: soft_label_walk.Walked, by_tier: soft_label_walk.Walked,
    tiers: list[str], create: bool, chunk: list[int], item_groups: ItemGroups, pool: ThreadPoolExecutor,
) -> None:
    """Store the sums of one chunk's items as walked, over every answer and per tier (the (item, tier) pairs of
    _by_tier), replacing the chunk's old ones. The level sums count the chunk's stored posterior rows too, so
    those are written first."""
    amb = soft_label_parts.Thresholds(Ambiguity().top_share_below, Ambiguity().gap_below)
    if not create:
        for table in PARTS_SQL:
            con.execute("DELETE FROM " + table + " WHERE item_idx >= ? AND item_idx < ?", chunk)  # noqa: S608 - allow-listed table name
    posterior = soft_label_parts.Posterior(**arrays(con, POSTERIOR_LEVELS, chunk))
    children = np.bincount(tree.parent, minlength=tree.size)
    every = ["every"]

    def levels(rows: soft_label_walk.Walked, names: list[str]) -> pa.Table:
        return soft_label_parts.level_parts(rows, names, item_groups.code, posterior, amb)

    def branches(rows: soft_label_walk.Walked, names: list[str]) -> pa.Table:
        return soft_label_parts.branch_parts(rows, names, item_groups.code, tree.node_ids, children, amb)

    # The all-tier and the tier sums are independent array passes that mostly release the GIL: on two threads.
    every_tier = pool.submit(lambda: [levels(walked, every), branches(walked, every)])
    per_tier = [levels(by_tier, tiers), branches(by_tier, tiers)]
    _groups = item_groups.attributes  # read by name, as _parts is
    for table, _parts in zip(PARTS_SQL, [*every_tier.result(), *per_tier], strict=True):
        head = "CREATE OR REPLACE TABLE " + table + " AS " if create else "INSERT INTO " + table + " BY NAME "
        con.execute(head + PARTS_SQL[table])  # reads _parts by name from this frame (DuckDB's replacement scan)


LEVEL_FROM_PARTS = (
    "SELECT x.soft_source AS source, x.depth, CAST(sum(x.items) AS BIGINT) AS items, "
    "sum(x.s_entropy) / sum(x.items) AS mean_entropy, sum(x.s_top_share) / sum(x.items) AS mean_top_share, "
    "sum(x.s_gap) / sum(x.items) AS mean_gap, sum(x.ambiguous) / nullif(sum(x.judged), 0) AS ambiguous_share "
    "FROM "
)
BRANCH_FROM_PARTS = (
    "SELECT x.node_id, any_value(n.title) AS title, x.depth, CAST(sum(x.items) AS BIGINT) AS items, "
    "sum(x.s_mass) / sum(x.items) AS mean_mass, "
    "sum(x.s_child_entropy) / nullif(sum(x.n_child), 0) AS mean_child_entropy, "
    "sum(x.n_ambiguous) / nullif(sum(x.n_child), 0) AS ambiguous_share, "
    "sum(x.n_agree) / nullif(sum(x.n_level), 0) AS agree_branch_not_leaf, "
    "sum(x.n_disagree) / nullif(sum(x.n_level), 0) AS disagree_branch, "
    "sum(x.s_norm) / nullif(sum(x.n_norm), 0) AS mean_norm_child_entropy "
    "FROM "
)
# Per kind: the stored sums for item-level filters, those for one tier, and how to add them up.
FROM_PARTS = {
    "levels": (
        SUMMARIES[0], TIER_PARTS[0], LEVEL_FROM_PARTS, " x WHERE ",
        " GROUP BY x.soft_source, x.depth ORDER BY x.soft_source, x.depth",
    ),
    "branches": (
        SUMMARIES[1], TIER_PARTS[1], BRANCH_FROM_PARTS, " x JOIN " + NODES + " n USING (node_id) WHERE ",
        " GROUP BY x.node_id, x.depth ORDER BY min(n.ordinal)",
    ),
}


def _summary(con: duckdb.DuckDBPyConnection, kind: str, f: Filters, amb: Ambiguity) -> pd.DataFrame | None:
    """The page's statistics summed from the stored parts, None when the filters or thresholds need the
    per-item tables (or refresh has not stored them). Item-level filters read the all-tier sums, a filter
    on one tier (with or without item-level ones) that tier's; ``Filters.where`` selects in both."""
    if kind not in FROM_PARTS:
        raise ValueError(f"kind {kind!r} is not in the allow-list")
    every_tier, one_tier, head, join, tail = FROM_PARTS[kind]
    answer_fields = set(f.answer_fields())
    if not answer_fields:
        table = every_tier
    elif answer_fields == {"tiers"} and len(f.tiers) == 1:
        table = one_tier
    else:
        return None
    if amb != Ambiguity() or not table_exists(con, table):
        return None
    pred, params = f.where("x")
    return con.execute(head + table + join + pred + tail, params).df()


def precomputed(con: duckdb.DuckDBPyConnection, f: Filters) -> bool:
    return stored(con, f, "annotations")


def stored(con: duckdb.DuckDBPyConnection, f: Filters, source: str) -> bool:
    """Whether the stored per-item rows answer ``f``: the posterior does not depend on which answers count,
    so for it any filter only chooses items (those with a matching answer); answers need item-level filters."""
    return (source == "posterior" or item_level_only(f)) and all(table_exists(con, t) for t in TABLES)


def mass_relation(
    con: duckdb.DuckDBPyConnection, f: Filters, source: str, items: Sequence[str] | None = None
) -> tuple[str, list[Any]] | None:
    """(item_idx, item_id?, node_id, depth, mass, answers) for the filters, None when there is nothing."""
    if source not in SOURCES:
        raise LabelgovError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if not table_exists(con, "d_answers"):
        return None
    if source == "posterior" and not table_exists(con, "d_posterior"):
        return None
    indices = item_indices(con, items)
    if stored(con, f, source):
        pred, params = scoped("s.item_idx", f, indices)
        sql = "SELECT s.* FROM d_soft_mass s WHERE s.source = ? AND " + pred  # noqa: S608 - scope predicate
        return sql, [source, *params]
    if source == "annotations":
        fpred, fparams = f.where("a")
        ipred, iparams = scoped("a.item_idx", Filters(), indices)
        return _mass_sql(_answer_weights(fpred + " AND " + ipred)), [*fparams, *iparams]
    pred, params = scoped("p.item_idx", f, indices)
    return _mass_sql(_posterior_weights(pred)), params


def item_node_mass(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    source: Source = "annotations",
    items: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mass of every item at every node of every cut, [item_id, item_idx, node_id, depth, mass, answers].

    ``answers`` counts the answers through the node (None for the posterior). ``items`` restricts the
    result to those item ids, for a detail view.
    """
    rel = mass_relation(con, f, source, items)
    if rel is None:
        return empty_frame(MASS_COLUMNS)
    sql, params = rel
    return con.execute(
        "SELECT x.item_id, m.item_idx, m.node_id, m.depth, m.mass, m.answers FROM (" + sql + ") m "  # noqa: S608 - fixed SQL fragments
        "JOIN d_item_index x USING (item_idx) JOIN " + NODES + " n USING (node_id) "
        "ORDER BY m.item_idx, m.depth, n.ordinal",
        params,
    ).df()


def levels_relation(
    con: duckdb.DuckDBPyConnection, f: Filters, source: str, items: Sequence[str] | None = None
) -> tuple[str, list[Any]] | None:
    """(item_idx, depth, answers, entropy, top_node, top_share, gap) per item and cut."""
    if source not in SOURCES:
        raise LabelgovError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if stored(con, f, source):
        if source == "posterior" and not table_exists(con, "d_posterior"):
            return None
        pred, params = scoped("s.item_idx", f, item_indices(con, items))
        return "SELECT s.* FROM d_soft_levels s WHERE s.source = ? AND " + pred, [source, *params]  # noqa: S608 - fixed SQL fragments
    rel = mass_relation(con, f, source, items)
    if rel is None:
        return None
    return _levels_sql(rel[0]), rel[1]


def item_levels(
    con: duckdb.DuckDBPyConnection, f: Filters, source: Source = "annotations", items: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per item and depth: answers reaching the cut, entropy (bits), top node, its share and its lead."""
    columns = ["item_id", "item_idx", "depth", "answers", "entropy", "top_node", "top_share", "gap"]
    rel = levels_relation(con, f, source, items)
    if rel is None:
        return empty_frame(columns)
    sql, params = rel
    return con.execute(
        "SELECT x.item_id, l.item_idx, l.depth, l.answers, l.entropy, l.top_node, l.top_share, l.gap "
        "FROM (" + sql + ") l JOIN d_item_index x USING (item_idx) ORDER BY l.item_idx, l.depth",
        params,
    ).df()



def level_stats(con: duckdb.DuckDBPyConnection, f: Filters, ambiguity: Ambiguity | None = None) -> pd.DataFrame:
    """Per source and depth: items reaching the cut, mean entropy, mean top share, mean gap, ambiguous share.

    Means are over items with at least one answer reaching the cut; the ambiguous share is over the items
    that can be judged (see ``Ambiguity``).
    """
    amb = ambiguity or Ambiguity()
    cached = _summary(con, "levels", f, amb)
    return cached[LEVEL_STATS_COLUMNS] if cached is not None else _level_stats(con, f, amb)


def _answer_rows(con: duckdb.DuckDBPyConnection, f: Filters, table: str) -> pa.Table | None:
    """The per-item rows ``table`` would hold if only the answers the filters keep counted, None without answers.

    Computed like the refresh, in numpy over integer codes: the same maths in SQL over node-id strings
    took seconds under a week or tier filter. Rows are built up to ``table`` and no further.
    """
    if table not in ("d_soft_levels", "d_soft_branches"):
        raise ValueError(f"table {table!r} is not in the allow-list")
    if not table_exists(con, "d_answers"):
        return None
    pred, params = f.where("a")
    answers = _weight_rows(con, _answer_weights(pred), params)
    tree = _tree(con)
    return next(rows for name, rows in _soft_arrays(tree, _walk(tree, answers, True), counted=True) if name == table)


def _level_stats(con: duckdb.DuckDBPyConnection, f: Filters, amb: Ambiguity) -> pd.DataFrame:
    frames = []
    for source in SOURCES:
        if not stored(con, f, source):
            # Read by name below (DuckDB's replacement scan), so the rows need no registration.
            _soft_rows = _answer_rows(con, f, "d_soft_levels") if source == "annotations" else None
            rel = None if _soft_rows is None else ("SELECT * FROM _soft_rows", [])
        else:
            rel = levels_relation(con, f, source)
        if rel is None:
            continue
        sql, params = rel
        frames.append(
            con.execute(
                "SELECT ? AS source, l.depth, count(*) AS items, avg(l.entropy) AS mean_entropy, "  # noqa: S608 - fixed SQL fragments
                "avg(l.top_share) AS mean_top_share, avg(l.gap) AS mean_gap, "
                "avg(CAST(" + AMBIGUOUS + " AS DOUBLE)) FILTER (WHERE coalesce(l.answers, 2) >= 2) "
                "AS ambiguous_share FROM (" + sql + ") l GROUP BY l.depth ORDER BY l.depth",
                [source, amb.top_share_below, amb.gap_below, *params],
            ).df()
        )
    frames = [x for x in frames if len(x)]
    if not frames:
        return empty_frame(LEVEL_STATS_COLUMNS)
    return pd.concat(frames, ignore_index=True)[LEVEL_STATS_COLUMNS]


def _branch_frame(con: duckdb.DuckDBPyConnection, f: Filters, amb: Ambiguity) -> pd.DataFrame:
    """Every branch statistic, plus the normalised child entropy the priorities use."""
    cached = _summary(con, "branches", f, amb)
    return cached if cached is not None else _branch_frame_computed(con, f, amb)


def _branch_frame_computed(con: duckdb.DuckDBPyConnection, f: Filters, amb: Ambiguity) -> pd.DataFrame:
    if precomputed(con, f):
        sql, params = scoped("s.item_idx", f)
        sql = "SELECT s.* FROM d_soft_branches s WHERE " + sql  # noqa: S608 - scope predicate
    else:
        _soft_rows = _answer_rows(con, f, "d_soft_branches")  # read by name below, as in _level_stats
        if _soft_rows is None:
            return empty_frame([*BRANCH_COLUMNS, "mean_norm_child_entropy"])
        sql, params = "SELECT * FROM _soft_rows", []
    return con.execute(
        "WITH c AS (SELECT parent_id AS node_id, count(*) AS children FROM " + NODES + " GROUP BY ALL) "  # noqa: S608 - fixed SQL fragments
        "SELECT b.node_id, any_value(n.title) AS title, b.depth, count(*) AS items, avg(b.mass) AS mean_mass, "
        "avg(b.child_entropy) FILTER (WHERE b.child_answers >= 2) AS mean_child_entropy, "
        "avg(CAST(b.child_top_share < ? OR b.child_gap < ? AS DOUBLE)) FILTER (WHERE b.child_answers >= 2) "
        "AS ambiguous_share, "
        "avg(CAST(b.mass = 1 AND b.leaves >= 2 AS DOUBLE)) FILTER (WHERE b.level_answers >= 2) "
        "AS agree_branch_not_leaf, "
        "avg(CAST(b.mass < 1 AS DOUBLE)) FILTER (WHERE b.level_answers >= 2) AS disagree_branch, "
        "avg(b.child_entropy / log2(c.children)) FILTER (WHERE b.child_answers >= 2 AND c.children >= 2) "
        "AS mean_norm_child_entropy "
        "FROM (" + sql + ") b JOIN " + NODES + " n USING (node_id) LEFT JOIN c USING (node_id) "
        "GROUP BY b.node_id, b.depth ORDER BY min(n.ordinal)",
        [amb.top_share_below, amb.gap_below, *params],
    ).df()


def branch_stats(con: duckdb.DuckDBPyConnection, f: Filters, ambiguity: Ambiguity | None = None) -> pd.DataFrame:
    """Per branch, in tree order.

    items: items with any answer reaching the branch. mean_mass: the branch's mass over those items.
    mean_child_entropy / ambiguous_share: the split among the branch's children, over items with at
    least two answers below the branch. agree_branch_not_leaf / disagree_branch: shares of items with at
    least two answers at the branch's depth, one of them on the branch (see the module docstring).
    """
    return _branch_frame(con, f, ambiguity or Ambiguity())[BRANCH_COLUMNS]


def labelling_priorities(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    limit: int = 20,
    min_items: int = 5,
    ambiguity: Ambiguity | None = None,
) -> pd.DataFrame:
    """Branches where more labels would help most, highest score first.

    score = mean normalised child entropy / sqrt(items): the shape of a standard error, with the
    within-branch uncertainty of a label (entropy over log2 of the number of children, 0..1) in the
    role of the spread and the branch's item count in the role of the sample size. A branch whose
    items are both uncertain and few gains most from more answers and more items. Branches with fewer
    than ``min_items`` judged items are left out: their entropy is itself too noisy to rank on.
    """
    return _priorities(_branch_frame(con, f, ambiguity or Ambiguity()), limit, min_items)


class BranchTables(NamedTuple):
    """branch_stats and labelling_priorities of one filter."""

    stats: pd.DataFrame
    priorities: pd.DataFrame


def branch_tables(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    limit: int = 20,
    min_items: int = 5,
    ambiguity: Ambiguity | None = None,
) -> BranchTables:
    """Both branch tables from one computation of the branch statistics: a page that shows both would
    otherwise recompute them from the answers twice under a filter on answers."""
    frame = _branch_frame(con, f, ambiguity or Ambiguity())
    return BranchTables(frame[BRANCH_COLUMNS], _priorities(frame, limit, min_items))


def _priorities(frame: pd.DataFrame, limit: int, min_items: int) -> pd.DataFrame:
    frame = frame[frame["mean_norm_child_entropy"].notna() & (frame["items"] >= min_items)].copy()
    if frame.empty:
        return empty_frame(PRIORITY_COLUMNS)
    frame["score"] = frame["mean_norm_child_entropy"].to_numpy(float) / np.sqrt(frame["items"].to_numpy(float))
    return frame.sort_values(["score", "node_id"], ascending=[False, True]).head(limit)[PRIORITY_COLUMNS].reset_index(
        drop=True
    )
