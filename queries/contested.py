"""Contested items for the disagreement explorer: a ranked list, and everything known about one item.

Contest is read at the finest cut of the tree (every leaf answer, coarse answers left out; see
``queries.soft_labels``): ``entropy`` ranks the most spread items first, ``gap`` the items whose top
two leaves are closest, ``posterior`` the items the Dawid-Skene posterior is least sure about.

An annotator filter keeps only those annotators' answers, so entropy and gap then say how they disagree
with themselves (one annotator's answers on an item rarely split). ``everyone=True`` asks the question a
reviewer of an annotator has instead: their items (an answer by them that matches the other filters), ranked
on the answers of everyone that match the other filters. The
ranking runs on the per-item soft-label table and only the ``limit`` winners are joined to gold,
model predictions and escalations, so the page stays fast on millions of items.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict

from queries import derived_base, frame_writes, soft_labels, tree_view
from queries.errors import LabelgovError
from queries.filters import Filters

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

Sort = Literal["entropy", "gap", "posterior"]
CONTESTED_COLUMNS = [
    "item_id", "source", "segment", "answers", "entropy", "top_node", "top_share", "gap",
    "ds_node", "ds_p", "gold_node", "model_node", "escalated",
]
# Most contested first; ties go to items with more answers at the leaf cut (more evidence of a real
# split), then by item. Entropy is a sum whose last bits depend on the order DuckDB adds an item's terms in,
# so it is compared at nine decimals: equal splits then tie as intended instead of by rounding noise, and a
# ranking over some of the items agrees with the ranking over all of them.
ORDER_BY = {
    "entropy": "round(entropy, 9) DESC, reach DESC, item_idx",
    "gap": "gap ASC, reach DESC, item_idx",
    "posterior": "rank_p ASC NULLS LAST, round(entropy, 9) DESC, item_idx",
}
# Only the posterior ranking needs Dawid-Skene before the cut to ``limit`` rows.
NO_RANK = "(SELECT CAST(NULL AS INTEGER) AS item_idx, CAST(NULL AS DOUBLE) AS rank_p WHERE FALSE)"
RANK_JOIN = {
    "entropy": NO_RANK,
    "gap": NO_RANK,
    "posterior": "(SELECT item_idx, ds_p AS rank_p FROM d_ds_items)",
}
TOTALS = {True: "(SELECT item_idx, answers FROM d_items)", False: "(SELECT item_idx, answers FROM l WHERE depth = 1)"}
DS_ITEMS = "(SELECT item_idx, ds_node, ds_p FROM d_ds_items)"
NO_DS_ITEMS = (
    "(SELECT CAST(NULL AS INTEGER) AS item_idx, CAST(NULL AS VARCHAR) AS ds_node, CAST(NULL AS DOUBLE) AS ds_p "
    "WHERE FALSE)"
)
# The latest gold label per item mapped to the as-of tree version (d_gold), so it compares with answers
# mapped the same way, and the latest model prediction per item; a prediction's node is the argmax of
# its leaf probabilities, or the node it names when it carries none.
GOLD = "(SELECT item_id, node_id AS gold_node FROM d_gold)"
MODEL_NODE = (
    "coalesce(map_keys(probabilities)[list_position(map_values(probabilities), list_max(map_values(probabilities)))], "
    "node_id)"
)
# Read for the picked items only: DuckDB does not push the item filter into DISTINCT ON, and the argmax over
# every prediction of the warehouse was most of a filtered page's time.
MODEL = (
    "(SELECT DISTINCT ON (item_id) item_id, " + MODEL_NODE + " AS model_node FROM predictions "  # noqa: S608 - fixed
    "WHERE item_id IN (SELECT item_id FROM picked) ORDER BY item_id, created_at DESC NULLS LAST, model_version DESC)"
)


# The unfiltered explorer is the page everyone opens first: refresh keeps its first TOP_N rows per sort.
TOP = "d_contested_top"
TOP_N = 1000
# Per item, how many different nodes its answers reach on the finest cut. A filter keeps a subset of an
# item's answers, so log2 of that count bounds the item's entropy under any filter: an entropy ranking under
# an answer filter (tier, dates, annotators) computes exactly only the items of widest spread, and stops once
# the last of its ``limit`` winners beats the bound of every item left out. Kept at refresh from the stored
# mass, widest first.
SPREAD = "d_contested_spread"
SPREAD_SQL = (
    "CREATE OR REPLACE TABLE " + SPREAD + " AS SELECT item_idx, CAST(count(*) AS INTEGER) AS nodes "
    "FROM d_soft_mass WHERE source = 'annotations' AND depth = ? GROUP BY item_idx ORDER BY nodes DESC, item_idx"
)
SPREAD_COUNTS = (
    "SELECT nodes, sum(count(*)) OVER (ORDER BY nodes DESC) AS items FROM " + SPREAD + " "  # noqa: S608 - fixed
    "WHERE nodes > 1 GROUP BY nodes ORDER BY nodes DESC"
)
IN_SPREAD = "a.item_idx IN (SELECT item_idx FROM " + SPREAD + " WHERE nodes >= ?)"  # noqa: S608 - fixed
# The first try takes the widest spreads that hold this many times ``limit`` items: a filter usually drops
# some of an item's different answers, so the few widest items alone rarely hold the winners.
SPREAD_START = 8
# Far above the rounding of the ranking's entropy key (see ORDER_BY), far below a real difference in entropy.
BOUND_MARGIN = 1e-6


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Rank the unfiltered list once per sort; a global ranking, so always in full.

    Any touched item can enter or leave a top list, the posterior sort follows Dawid-Skene (re-estimated
    for every item on each refresh) and the winners carry gold and escalation flags that change without
    new answers. The spread bound of every item, kept for filtered rankings, is per item but one grouped
    scan of the stored mass: updating it for touched items would save little and lose its widest-first
    order. The label-tree page's stored cells (volumes and where answers on one item split) are written
    here too: the tree view has no step of its own."""
    con.execute("DROP TABLE IF EXISTS " + TOP)
    con.execute(SPREAD_SQL, [soft_labels.max_depth(con)])
    has_ds = soft_labels.table_exists(con, "d_ds_items")
    frames = [
        _ranked(con, Filters(), TOP_N, sort, has_ds).assign(sort=sort).reset_index(names="rank")
        for sort in ORDER_BY
        if has_ds or sort != "posterior"
    ]
    frames = [x for x in frames if len(x)]
    if frames:
        frame_writes.store(con, TOP, pd.concat(frames, ignore_index=True))
    tree_view.refresh_step(con, ctx)
    return "full"


def contested_items(
    con: duckdb.DuckDBPyConnection, f: Filters, limit: int = 200, sort: Sort = "entropy", everyone: bool = False
) -> pd.DataFrame:
    """The ``limit`` most contested items under the filters, most contested first; with ``everyone`` and an
    annotator filter, those annotators' items ranked on everyone's answers (see the module notes)."""
    if sort not in ORDER_BY:
        raise LabelgovError(f"sort must be one of {', '.join(ORDER_BY)}, not {sort!r}")
    has_ds = soft_labels.table_exists(con, "d_ds_items")
    if sort == "posterior" and not has_ds:
        raise LabelgovError(
            "sorting by posterior needs the Dawid-Skene results: run `labelgov refresh`, or sort by entropy or gap"
        )
    if everyone and f.annotators:
        return _ranking(con, f.model_copy(update={"annotators": ()}), limit, sort, has_ds, None, f.where("a"))
    if f.is_empty() and limit <= TOP_N and soft_labels.table_exists(con, TOP):
        return con.execute(
            "SELECT * FROM " + TOP + " WHERE sort = ? ORDER BY rank LIMIT ?", [sort, int(limit)]  # noqa: S608 - fixed
        ).df()[CONTESTED_COLUMNS]
    return _ranked(con, f, limit, sort, has_ds)


def _ranked(con: duckdb.DuckDBPyConnection, f: Filters, limit: int, sort: str, has_ds: bool) -> pd.DataFrame:
    """The ranking; by entropy under an answer filter, over the widest-spread items first (see SPREAD).

    Items outside a try have at most ``spread - 1`` different nodes, so entropy at most log2(spread - 1):
    when the ``limit``-th winner of the try is above that, no item outside can enter or tie, and the try's
    list is the list over every item. Otherwise the next try widens by one node.
    """
    if sort == "entropy" and not soft_labels.precomputed(con, f) and soft_labels.table_exists(con, SPREAD):
        counts = con.execute(SPREAD_COUNTS).fetchall()
        start = next((i for i, (_, items) in enumerate(counts) if items >= SPREAD_START * limit), len(counts))
        for spread, _ in counts[start:]:
            frame = _ranking(con, f, limit, sort, has_ds, int(spread))
            if len(frame) == limit and frame["entropy"].iloc[-1] > math.log2(spread - 1) + BOUND_MARGIN:
                return frame
    return _ranking(con, f, limit, sort, has_ds, None)


def _ranking(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    limit: int,
    sort: str,
    has_ds: bool,
    spread: int | None,
    items_of: tuple[str, list[object]] | None = None,
) -> pd.DataFrame:
    """The first ``limit`` items in the sort's order with their details; only over the items whose answers
    reach at least ``spread`` nodes when given (an answer filter's levels, as soft_labels builds them), and
    only over the items with an answer matching ``items_of`` (a Filters.where predicate on ``a``) when given."""
    depth = soft_labels.max_depth(con)
    if spread is None:
        rel = soft_labels.levels_relation(con, f, "annotations")
    else:
        pred, params = f.where("a")
        weights = soft_labels._answer_weights(pred + " AND " + IN_SPREAD)
        rel = soft_labels._levels_sql(soft_labels._mass_sql(weights)), [*params, spread]
    if rel is None or depth == 0:
        return soft_labels.empty_frame(CONTESTED_COLUMNS)
    levels, params = rel
    ds = DS_ITEMS if has_ds else NO_DS_ITEMS
    # Every answer reaches depth 1, so an item's total is d_items.answers unless a filter drops answers;
    # reading it there keeps the (large) stored levels from being scanned twice.
    totals = TOTALS[soft_labels.precomputed(con, f)]
    chosen, chosen_params = items_of or ("TRUE", [])
    # The predicate comes from Filters.where, which binds every value.
    items = "" if items_of is None else " AND l.item_idx IN (SELECT a.item_idx FROM d_answers a WHERE " + chosen + ")"  # noqa: S608
    return con.execute(
        "WITH l AS (" + levels + "), "  # noqa: S608 - fixed SQL fragments; ORDER BY from an allow-list
        "ranked AS (SELECT l.item_idx, l.answers AS reach, l.entropy, l.top_node, l.top_share, l.gap, rp.rank_p "
        "FROM l LEFT JOIN " + RANK_JOIN[sort] + " rp USING (item_idx) WHERE l.depth = ?" + items + " "
        "ORDER BY " + ORDER_BY[sort] + " LIMIT ?), "
        "picked AS (SELECT r.*, x.item_id FROM ranked r JOIN d_item_index x USING (item_idx)) "
        "SELECT p.item_id, d.source, d.segment, tot.answers, p.entropy, p.top_node, p.top_share, p.gap, "
        "ds.ds_node, ds.ds_p, g.gold_node, m.model_node, "
        "p.item_id IN (SELECT item_id FROM escalations WHERE item_id IN (SELECT item_id FROM picked)) AS escalated "
        "FROM picked p LEFT JOIN (SELECT item_idx, source, segment FROM d_items) d USING (item_idx) "
        "LEFT JOIN (SELECT * FROM " + totals + " WHERE item_idx IN (SELECT item_idx FROM picked)) tot "
        "USING (item_idx) "
        "LEFT JOIN (SELECT * FROM " + ds + " WHERE item_idx IN (SELECT item_idx FROM picked)) ds USING (item_idx) "
        "LEFT JOIN (SELECT * FROM " + GOLD + " WHERE item_id IN (SELECT item_id FROM picked)) g USING (item_id) "
        "LEFT JOIN " + MODEL + " m USING (item_id) "
        "ORDER BY " + ORDER_BY[sort],
        [*params, depth, *chosen_params, int(limit)],
    ).df()[CONTESTED_COLUMNS]


class ItemDetail(BaseModel):
    """Everything about one item, as tables a detail page can show directly."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    item_id: str
    item: dict[str, Any]
    annotations: pd.DataFrame
    mass: pd.DataFrame
    levels: pd.DataFrame
    posterior: pd.DataFrame
    posterior_mass: pd.DataFrame
    model: pd.DataFrame
    gold: pd.DataFrame
    escalations: pd.DataFrame


# Columns of d_ds_annotators that hold an annotator's overall reliability, most specific first.
RELIABILITY_COLUMNS = ("ds_accuracy", "reliability", "accuracy")
MODEL_TOP_LEAVES = 5


def _reliability(con: duckdb.DuckDBPyConnection) -> str:
    """A relation (annotator_id, reliability): Dawid-Skene's estimate when present, else empty."""
    if soft_labels.table_exists(con, "d_ds_annotators"):
        names = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'd_ds_annotators'"
            ).fetchall()
        }
        for column in RELIABILITY_COLUMNS:
            if column in names and "annotator_id" in names:
                return (
                    "(SELECT annotator_id, any_value(" + column + ") AS reliability "
                    "FROM d_ds_annotators GROUP BY annotator_id)"
                )
    return "(SELECT CAST(NULL AS VARCHAR) AS annotator_id, CAST(NULL AS DOUBLE) AS reliability WHERE FALSE)"


def item_detail(con: duckdb.DuckDBPyConnection, item_id: str) -> ItemDetail:
    """An item's answers with their annotators' reliability, soft labels, posterior, model, gold, escalations."""
    if not soft_labels.table_exists(con, "d_items"):
        raise LabelgovError("the warehouse has not been refreshed yet: run `labelgov refresh`")
    head = con.execute(
        "SELECT item_id, source, segment, split, created_at, content_hash, answers, consensus_node, consensus_share "
        "FROM d_items WHERE item_id = ?",
        [item_id],
    ).df()
    if head.empty:
        raise LabelgovError(f"no item {item_id!r} with answers in the warehouse; check the id (ids are case-sensitive)")
    titled = "JOIN " + soft_labels.NODES + " n USING (node_id)"
    version = derived_base.as_of_version(con) or 0
    annotations = con.execute(
        "SELECT a.annotation_id, a.annotator_id, a.annotator_kind, a.tier, r.reliability, a.stage, a.created_at, "  # noqa: S608 - fixed SQL fragments
        "a.duration_s, a.confidence, a.node_id, n.title, a.depth FROM " + derived_base.ITEM_ANSWERS + " a "
        + titled + " LEFT JOIN " + _reliability(con) + " r USING (annotator_id) "
        "ORDER BY a.created_at NULLS LAST, a.annotation_id",
        [version, version, item_id],
    ).df()
    mass = soft_labels.item_node_mass(con, Filters(), "annotations", items=[item_id])
    posterior = (
        con.execute(
            "SELECT p.node_id, n.title, p.p FROM d_posterior p " + titled + " "  # noqa: S608 - fixed SQL fragments
            "WHERE p.item_id = ? ORDER BY p.p DESC, n.ordinal",
            [item_id],
        ).df()
        if soft_labels.table_exists(con, "d_posterior")
        else soft_labels.empty_frame(["node_id", "title", "p"])
    )
    model = con.execute(
        "SELECT model, model_version, created_at, node_id, n.title, p, rank FROM ("  # noqa: S608 - fixed SQL fragments
        "SELECT *, row_number() OVER (PARTITION BY model, model_version, created_at ORDER BY p DESC, node_id) AS rank "
        "FROM (SELECT model, model_version, created_at, unnest(map_keys(probabilities)) AS node_id, "
        "unnest(map_values(probabilities)) AS p FROM predictions WHERE item_id = ?)) "
        "LEFT JOIN " + soft_labels.NODES + " n USING (node_id) WHERE rank <= ? "
        "ORDER BY created_at DESC NULLS LAST, model, model_version, rank",
        [item_id, MODEL_TOP_LEAVES],
    ).df()
    gold = con.execute(
        "SELECT g.node_id, n.title, g.source, g.tree_version, g.source_version, g.source_node_id FROM d_gold g "
        "LEFT JOIN d_nodes n USING (tree_version, node_id) WHERE g.item_id = ?",
        [item_id],
    ).df()
    escalations = con.execute(
        "SELECT trigger, routed_to, created_at, resolved_at FROM escalations WHERE item_id = ? "
        "ORDER BY created_at NULLS LAST",
        [item_id],
    ).df()
    return ItemDetail(
        item_id=item_id,
        item=head.iloc[0].to_dict(),
        annotations=annotations,
        mass=_titled(con, mass),
        levels=soft_labels.item_levels(con, Filters(), "annotations", items=[item_id]),
        posterior=posterior,
        posterior_mass=_titled(con, soft_labels.item_node_mass(con, Filters(), "posterior", items=[item_id])),
        model=model,
        gold=gold,
        escalations=escalations,
    )


def _titled(con: duckdb.DuckDBPyConnection, mass: pd.DataFrame) -> pd.DataFrame:
    """Node titles beside a mass table, for display."""
    titles = dict(con.execute("SELECT node_id, title FROM " + soft_labels.NODES).fetchall())  # noqa: S608 - fixed
    return mass.assign(title=mass["node_id"].map(titles))
