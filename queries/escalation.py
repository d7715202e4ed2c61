"""Escalation gains: what sending an item to an expert changed, what it cost and how long it took.

Refresh materialises ``d_item_outcomes``, one row per item with the crowd's view *before* escalation
(plurality of the ``initial`` answers), the label *after* it (the adjudication answer, else the latest
escalated answer), gold, costs and timestamps. Every function here reads that table, so the filtered
and unfiltered views share one code path; filters select items (an item is in scope when any of its
answers matches), never answers, because dropping the expert's answer would erase the effect measured.

Accuracy is exact node equality with gold: a coarse answer above the gold leaf counts as wrong, since
it does not give the label that was asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from queries import answer_arrays, compiled_sums, escalation_crowd, frame_writes, soft_labels
from queries.connection import meta_value
from queries.filters import Filters
from queries.results import arrays, first_row

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

# Below this many escalated gold items the measured expert accuracy is too noisy for the what-if and
# the experts' Dawid-Skene accuracy is preferred when it exists.
MIN_GOLD_FOR_EXPERT_ACCURACY = 30
# Plurality shares are ratios of small integers (4/5) and thresholds come from linspace (0.8000000000000002
# or 0.7999999999999999): compare with this slack so that t = 0.8 escalates the items at 4/5.
SHARE_SLACK = 1e-9

# One row per answered item, from its own answers, consensus, escalation-log rows and gold only: nothing
# else about the item (its metadata) or about other items enters, so a subset of items can be recomputed
# alone. ``_crowd`` holds the items' crowd view, label after escalation, spend and time span
# (queries/escalation_crowd); ``{items}`` and ``{logged}`` restrict the gold and the escalation log to its items.
OUTCOMES_SELECT = """
WITH crowd AS (
    SELECT c.item_idx, n.node_id AS crowd_node
    FROM _crowd c JOIN d_nodes n ON n.tree_version = c.tree_version AND n.value_idx = c.crowd_value
), after AS (
    SELECT c.item_idx, n.node_id AS after_node, x.annotator_id AS expert_id
    FROM _crowd c JOIN d_nodes n ON n.tree_version = c.tree_version AND n.value_idx = c.after_value
    JOIN d_annotator_index x ON x.annotator_idx = c.expert_idx
), esc AS (
    SELECT item_id, arg_min(trigger, created_at) AS trigger, arg_min(routed_to, created_at) AS routed_to,
           min(created_at) AS esc_created_at,
           CASE WHEN bool_or(resolved_at IS NULL) THEN NULL ELSE max(resolved_at) END AS esc_resolved_at
    FROM escalations WHERE {logged} GROUP BY item_id
), gold AS (
    SELECT item_idx, node_id AS gold_node FROM d_gold WHERE {items}
)
SELECT d.item_id, p.item_idx, d.consensus_lineage AS lineage, d.consensus_lineage[1] AS branch, d.source, d.segment,
       c.crowd_node, p.crowd_share, p.crowd_answers, p.crowd_cost, p.expert_cost, p.total_cost,
       g.gold_node, (e.item_id IS NOT NULL OR af.item_idx IS NOT NULL) AS escalated,
       CASE WHEN e.item_id IS NOT NULL THEN e.trigger WHEN af.item_idx IS NOT NULL THEN 'unrecorded' END AS trigger,
       coalesce(af.expert_id, e.routed_to) AS expert_id, af.after_node,
       coalesce(af.after_node, c.crowd_node) AS final_node,
       e.esc_created_at, e.esc_resolved_at, p.first_at, p.final_at
FROM _crowd p
LEFT JOIN d_items d USING (item_idx)
LEFT JOIN crowd c USING (item_idx)
LEFT JOIN after af USING (item_idx)
LEFT JOIN esc e ON e.item_id = d.item_id
LEFT JOIN gold g USING (item_idx)
"""

# Escalated items first: the escalation pages scan only them, and row-group statistics let DuckDB skip the rest.
OUTCOMES_ORDER = " ORDER BY escalated DESC, item_idx"

D_ITEM_OUTCOMES = (
    "CREATE OR REPLACE TABLE d_item_outcomes AS "
    + OUTCOMES_SELECT.replace("{items}", "TRUE").replace("{logged}", "TRUE")
    + OUTCOMES_ORDER
)

# Items whose outcome row may differ from the stored one: new answers, escalation-log rows or gold since
# the last refresh. Escalation rows without a batch id cannot be dated, so their items are always redone.
D_TOUCHED = """
CREATE OR REPLACE TEMP TABLE _outcomes_touched AS
SELECT item_idx, item_id FROM d_item_index
WHERE item_id IN (SELECT item_id FROM annotations WHERE batch_id > $since
                  UNION SELECT item_id FROM escalations WHERE batch_id > $since OR batch_id IS NULL
                  UNION SELECT item_id FROM gold_labels WHERE batch_id > $since)
"""

# The stored rows of untouched items and the recomputed rows of touched ones, rewritten in the full
# refresh's order so the table's layout (and its row-group skipping) does not decay over refreshes.
D_ITEM_OUTCOMES_MERGED = (
    "CREATE OR REPLACE TABLE d_item_outcomes AS SELECT * FROM ("  # noqa: S608 - fixed fragments
    "SELECT * FROM d_item_outcomes WHERE item_idx NOT IN (SELECT item_idx FROM _outcomes_touched) UNION ALL ("
    + OUTCOMES_SELECT.replace("{items}", "item_idx IN (SELECT item_idx FROM _outcomes_touched)").replace(
        "{logged}", "item_id IN (SELECT item_id FROM _outcomes_touched)"
    )
    + "))"
    + OUTCOMES_ORDER
)

# The newest timestamp in the warehouse: open escalations age up to it, so reports are reproducible.
D_AS_OF = """
CREATE OR REPLACE TABLE d_outcomes_as_of AS
SELECT greatest((SELECT max(final_at) FROM d_item_outcomes), (SELECT max(created_at) FROM escalations),
                (SELECT max(resolved_at) FROM escalations)) AS as_of
"""

TREE_KEY = "escalation_tree_version"


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Recompute only the items touched since the last refresh, when the stored table can be trusted.

    An item's row depends on nothing but its own answers, consensus, escalation-log rows and gold, and
    each of those arrives with a batch id (rows are only ever added), so the items of newer batches are
    the only ones whose row can change; items an ingest merely created have no answers and no row.
    A new tree version can remap nodes and reorder ties for every item, so it recomputes everything,
    as does a full refresh or a missing table. ``d_outcomes_as_of`` is one global maximum: always redone.
    """
    row = first_row(con.execute("SELECT CAST(coalesce(max(tree_version), 0) AS VARCHAR) FROM tree_versions"))
    tree = row[0] if row else "0"
    incremental = (
        not ctx.full and meta_value(con, TREE_KEY) == tree and soft_labels.table_exists(con, "d_item_outcomes")
    )
    if incremental:
        con.execute(D_TOUCHED, {"since": ctx.since_batch})
        touched = first_row(con.execute("SELECT count(*) FROM _outcomes_touched"))
        if touched and touched[0]:
            crowd = escalation_crowd.table(con, "a.item_idx IN (SELECT item_idx FROM _outcomes_touched)")
            frame_writes.run_over(con, "_crowd", crowd, D_ITEM_OUTCOMES_MERGED)
        con.execute("DROP TABLE _outcomes_touched")
    else:
        frame_writes.run_over(con, "_crowd", escalation_crowd.table(con, "TRUE"), D_ITEM_OUTCOMES)
    con.execute(D_AS_OF)
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [TREE_KEY, tree])
    return "incremental" if incremental else "full"


# The items an answer-level filter keeps, as a temporary table of item indices: the smaller of the items in
# scope (``IN``) and the answered items out of it (``NOT IN``), so the semi-join builds at most half the items.
SCOPE_TABLE = "_item_scope"


class ItemScope(NamedTuple):
    """A predicate over ``d_item_outcomes`` rows (alias ``o``) and its parameters; it reads only their
    item_idx, lineage, source and segment, so it also applies to other per-item tables that carry those.

    It may read ``SCOPE_TABLE``, which the next ``item_scope`` call on the connection replaces: compute the
    scope once per page function and pass it down, rather than rescanning the answers for every statement.
    """

    sql: str
    params: list[object]


def item_scope(con: duckdb.DuckDBPyConnection, f: Filters, gold_only: bool = False) -> ItemScope:
    """The ``d_item_outcomes`` rows whose item is in scope for ``f``.

    Item-level filters (branch, source, segment) are answered from the outcome table's own columns; a filter
    on who answered or when needs the answers, and keeps an item when any of its answers matches. That last
    set is found once with numpy over the matching answers' item indices (a string ``DISTINCT`` over millions
    of answers costs twice as much), or marked over the answers held in memory where a process holds them
    (answer_arrays), and kept in ``SCOPE_TABLE``.

    ``gold_only`` reads only the gold items' answers, and the predicate is then false for items without
    gold: exact for the pages that score on gold alone, at a fraction of the scan.
    """
    if f.is_empty():
        return ItemScope("TRUE", [])
    if soft_labels.item_level_only(f):
        # The outcome rows carry their item's lineage, source and segment: a predicate on their own columns,
        # where a semi-join on d_items cost each statement of a page 45 ms at a million items.
        pred, params = f.model_copy(update={"branch": None}).where("o")
        if f.branch is None:
            return ItemScope(pred, params)
        branch = "list_contains(o.lineage, ?)"
        return ItemScope(branch if pred == "TRUE" else pred + " AND " + branch, [*params, f.branch])
    top = int(con.execute("SELECT coalesce(max(item_idx), -1) FROM d_item_outcomes").fetchall()[0][0])
    held = answer_arrays.in_scope(con, f)
    if held is not None:
        # The answers held in memory mark the items in one compiled pass (no scan, no copy of the indices).
        columns, keep = held
        newest = int(columns["item_idx"][-1]) if keep.size else -1  # the answers are sorted by item
        kept = compiled_sums.counts_by(keep, columns["item_idx"], max(top, newest) + 1) > 0
        if gold_only:
            gold = answer_arrays.kept(con, "gold_items", lambda: arrays(con, GOLD_ITEMS)["item_idx"])
            kept &= answer_arrays.member_table(gold, kept.size)
    else:
        pred, params = f.where("a")
        if gold_only:
            pred += " AND a.item_idx IN (SELECT item_idx FROM d_gold)"
        hit = arrays(con, "SELECT a.item_idx FROM d_answers a WHERE " + pred, params)["item_idx"]  # noqa: S608 - predicate from Filters.where
        kept = np.zeros(max(top, int(hit.max()) if hit.size else -1) + 1, dtype=bool)
        kept[hit] = True
    inside = 2 * int(np.count_nonzero(kept)) <= kept.size
    listed = np.flatnonzero(kept if inside else ~kept).astype(np.int32)
    frame_writes.run_over(
        con,
        "_scope_rows",
        pa.table({"item_idx": listed}),
        "CREATE OR REPLACE TEMP TABLE " + SCOPE_TABLE + " AS SELECT item_idx FROM _scope_rows",  # noqa: S608 - fixed name
    )
    test = "o.item_idx IN " if inside else "o.item_idx NOT IN "
    return ItemScope(test + "(SELECT item_idx FROM " + SCOPE_TABLE + ")", [])  # noqa: S608 - fixed name


GOLD_ITEMS = "SELECT item_idx FROM d_gold"


def scoped_items(scope: ItemScope, column: str) -> tuple[str, list[object]]:
    """``column IN (items in scope)`` for tables keyed by item_idx, or TRUE when every item is in scope."""
    if column not in SCOPED_COLUMNS:
        raise ValueError(f"column {column!r} is not in the allow-list")
    if scope.sql == "TRUE":
        return "TRUE", []
    return column + " IN (SELECT o.item_idx FROM d_item_outcomes o WHERE " + scope.sql + ")", scope.params  # noqa: S608 - column allow-listed, scope from item_scope


SCOPED_COLUMNS = frozenset({"p.item_idx"})


# Group keys gains_by accepts, mapped to columns of d_item_outcomes (the allow-list for the SQL below).
GROUPS: dict[str, str] = {"all": "'all'", "trigger": "o.trigger", "expert": "o.expert_id", "branch": "o.branch"}

GAINS_SQL = """
SELECT {group} AS name,
       count(*) AS escalated,
       count(o.after_node) AS resolved,
       avg(CASE WHEN o.after_node IS NOT NULL AND o.crowd_node IS NOT NULL
                THEN (o.after_node <> o.crowd_node)::INT END) AS flip_rate,
       count(*) FILTER (WHERE o.gold_node IS NOT NULL AND o.after_node IS NOT NULL AND o.crowd_node IS NOT NULL)
           AS n_gold,
       avg(CASE WHEN o.gold_node IS NOT NULL AND o.after_node IS NOT NULL AND o.crowd_node IS NOT NULL
                THEN (o.crowd_node = o.gold_node)::INT END) AS accuracy_before,
       avg(CASE WHEN o.gold_node IS NOT NULL AND o.after_node IS NOT NULL AND o.crowd_node IS NOT NULL
                THEN (o.after_node = o.gold_node)::INT END) AS accuracy_after,
       avg(CASE WHEN o.gold_node IS NOT NULL AND o.after_node IS NOT NULL AND o.crowd_node IS NOT NULL
                THEN (o.crowd_node <> o.gold_node AND o.after_node = o.gold_node)::INT END) AS corrected_rate,
       avg(o.expert_cost) FILTER (WHERE o.after_node IS NOT NULL) AS expert_cost_per_item
FROM d_item_outcomes o
WHERE o.escalated AND {scope}
GROUP BY ALL
ORDER BY escalated DESC, name
"""

GAIN_COLUMNS = [
    "name",
    "escalated",
    "resolved",
    "flip_rate",
    "n_gold",
    "accuracy_before",
    "accuracy_after",
    "gain",
    "expert_cost_per_item",
    "expert_cost_per_corrected_error",
]


def gains_by(con: duckdb.DuckDBPyConnection, f: Filters, by: str = "trigger") -> pd.DataFrame:
    """Escalation outcome per trigger, expert or branch.

    ``expert_cost_per_corrected_error`` is the mean expert cost of a resolved escalation divided by the
    share of escalations (measured on gold) that turned a wrong crowd label into the right one: what one
    fixed error costs. It is infinite when escalations fixed nothing measurable.
    """
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}")
    return _gains(con, item_scope(con, f), by)


def _gains(con: duckdb.DuckDBPyConnection, scope: ItemScope, by: str) -> pd.DataFrame:
    """gains_by over items already scoped; ``by`` is a key of GROUPS."""
    sql = GAINS_SQL.replace("{group}", GROUPS[by]).replace("{scope}", scope.sql)
    frame = con.execute(sql, scope.params).df()
    frame["gain"] = frame["accuracy_after"] - frame["accuracy_before"]
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["expert_cost_per_corrected_error"] = frame["expert_cost_per_item"] / frame["corrected_rate"]
    return frame[GAIN_COLUMNS].astype({"name": "object"})


class EscalationSummary(BaseModel):
    """The headline numbers of the escalations page; accuracies are measured on escalated gold items."""

    items: int
    escalated: int
    escalation_rate: float
    resolved: int
    flip_rate: float | None
    n_gold: int
    accuracy_before: float | None
    accuracy_after: float | None
    gain: float | None
    expert_cost_per_corrected_error: float | None
    median_hours_to_label: float | None
    share_within_sla: float | None
    sla_hours: float


def _num(value: object) -> float | None:
    """NaN and missing become None so that the result serialises as JSON null."""
    if value is None or pd.isna(value):  # type: ignore[arg-type]
        return None
    return float(value)  # type: ignore[arg-type]


def escalation_summary(con: duckdb.DuckDBPyConnection, f: Filters, sla_hours: float = 48.0) -> EscalationSummary:
    scope = item_scope(con, f)
    row = first_row(con.execute("SELECT count(*) FROM d_item_outcomes o WHERE " + scope.sql, scope.params))  # noqa: S608 - scope from item_scope
    items = int(row[0]) if row else 0
    gains = _gains(con, scope, "all")
    times = _time_to_label(con, scope, sla_hours)
    overall = times[times["trigger"] == "all"]
    if gains.empty:
        g: dict[str, object] = {"escalated": 0, "resolved": 0, "n_gold": 0}
    else:
        g = gains.iloc[0].to_dict()
    escalated = int(g["escalated"])  # type: ignore[call-overload]
    return EscalationSummary(
        items=items,
        escalated=escalated,
        escalation_rate=escalated / items if items else 0.0,
        resolved=int(g["resolved"]),  # type: ignore[call-overload]
        flip_rate=_num(g.get("flip_rate")),
        n_gold=int(g["n_gold"]),  # type: ignore[call-overload]
        accuracy_before=_num(g.get("accuracy_before")),
        accuracy_after=_num(g.get("accuracy_after")),
        gain=_num(g.get("gain")),
        expert_cost_per_corrected_error=_num(g.get("expert_cost_per_corrected_error")),
        median_hours_to_label=_num(overall["median_hours"].iloc[0]) if len(overall) else None,
        share_within_sla=_num(overall["share_within_sla"].iloc[0]) if len(overall) else None,
        sla_hours=sla_hours,
    )


TIME_SQL = """
WITH scoped AS (
    SELECT o.trigger, o.esc_created_at, o.esc_resolved_at, o.first_at, o.final_at, o.after_node
    FROM d_item_outcomes o WHERE o.escalated AND {scope}
), timed AS (
    SELECT trigger,
           epoch(esc_resolved_at - esc_created_at) / 3600 AS hours,
           esc_resolved_at IS NULL AND esc_created_at IS NOT NULL AS in_flight,
           epoch((SELECT as_of FROM d_outcomes_as_of) - esc_created_at) / 3600 AS age_hours,
           CASE WHEN after_node IS NOT NULL THEN epoch(final_at - first_at) / 3600 END AS item_hours
    FROM scoped
)
SELECT coalesce(trigger, 'all') AS trigger,
       count(*) AS escalations,
       count(hours) AS resolved,
       count(*) FILTER (WHERE in_flight) AS in_flight,
       median(hours) AS median_hours,
       quantile_cont(hours, 0.9) AS p90_hours,
       count(*) FILTER (WHERE hours <= ?) AS within_sla,
       count(*) FILTER (WHERE hours > ? OR (in_flight AND age_hours > ?)) AS breached,
       median(item_hours) AS median_item_hours
FROM timed
GROUP BY GROUPING SETS ((), (trigger))
ORDER BY trigger = 'all' DESC, escalations DESC
"""


def time_to_label(con: duckdb.DuckDBPyConnection, f: Filters, sla_hours: float = 48.0) -> pd.DataFrame:
    """Hours from escalation to resolution per trigger (and ``all``), and the share resolved within the SLA.

    The SLA share counts only decided escalations: resolved ones, plus open ones already older than
    the SLA (they have breached it whatever happens next). Open escalations younger than the SLA are
    in flight and left out, so a backlog of fresh escalations does not look like a failure. Age is
    measured to the newest timestamp in the warehouse, not the wall clock, so a report is reproducible.
    ``median_item_hours`` is the item's first answer to its final (expert) answer.
    """
    return _time_to_label(con, item_scope(con, f), sla_hours)


def _time_to_label(con: duckdb.DuckDBPyConnection, scope: ItemScope, sla_hours: float) -> pd.DataFrame:
    """time_to_label over items already scoped."""
    sql = TIME_SQL.replace("{scope}", scope.sql)
    frame = con.execute(sql, [*scope.params, sla_hours, sla_hours, sla_hours]).df()
    if frame["escalations"].sum() == 0:
        frame = frame.iloc[0:0]
    decided = frame["within_sla"] + frame["breached"]
    frame["share_within_sla"] = (frame["within_sla"] / decided.where(decided > 0)).astype(float)
    return frame.astype({"trigger": "object"})


class ExpertAccuracy(BaseModel):
    value: float | None
    n: int
    source: Literal["gold", "dawid_skene", "none"]


def expert_accuracy(con: duckdb.DuckDBPyConnection, f: Filters) -> ExpertAccuracy:
    """Accuracy of the label after escalation on gold; the experts' Dawid-Skene accuracy when gold is thin."""
    return _expert_accuracy(con, item_scope(con, f))


def _expert_accuracy(con: duckdb.DuckDBPyConnection, scope: ItemScope) -> ExpertAccuracy:
    """expert_accuracy over items already scoped."""
    row = first_row(con.execute(
        "SELECT count(*), avg((o.after_node = o.gold_node)::INT) FROM d_item_outcomes o "  # noqa: S608 - scope from item_scope
        "WHERE o.after_node IS NOT NULL AND o.gold_node IS NOT NULL AND " + scope.sql,
        scope.params,
    ))
    n, measured = (int(row[0]), row[1]) if row else (0, None)
    if n >= MIN_GOLD_FOR_EXPERT_ACCURACY:
        return ExpertAccuracy(value=float(measured), n=n, source="gold")
    if soft_labels.table_exists(con, "d_ds_annotators"):
        ds = first_row(con.execute(
            """
            SELECT sum(d.ds_accuracy * x.answers) / sum(x.answers), sum(x.answers)
            FROM (SELECT annotator_id, avg(ds_accuracy) AS ds_accuracy FROM d_ds_annotators GROUP BY ALL) d
            JOIN (SELECT annotator_id, count(*) AS answers FROM d_answers
                  WHERE stage IN ('escalated', 'adjudication') GROUP BY ALL) x USING (annotator_id)
            """
        ))
        if ds and ds[0] is not None:
            return ExpertAccuracy(value=float(ds[0]), n=int(ds[1]), source="dawid_skene")
    if n:
        return ExpertAccuracy(value=float(measured), n=n, source="gold")
    return ExpertAccuracy(value=None, n=0, source="none")


WHATIF_COLUMNS = ["threshold", "escalated_share", "projected_accuracy", "projected_cost_per_item", "n_gold"]


def threshold_whatif(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    thresholds: npt.ArrayLike | None = None,
) -> pd.DataFrame:
    """Escalate every item whose crowd plurality share is at most ``t``: projected accuracy and cost per item.

    Items that would escalate take the experts' accuracy (``expert_accuracy``); the others keep the
    crowd consensus's measured correctness on gold. Cost is today's crowd cost per item plus the
    escalated share times the median expert cost of a resolved escalation. At t=0 nothing escalates
    and the projection is today's crowd accuracy; at t=1 everything does. ``n_gold`` is the number of
    gold items the accuracy is projected on.
    """
    return whatif_in_scope(con, item_scope(con, f), thresholds)


def whatif_in_scope(
    con: duckdb.DuckDBPyConnection, scope: ItemScope, thresholds: npt.ArrayLike | None = None
) -> pd.DataFrame:
    """threshold_whatif over items already scoped (the Pareto frontier shares its scope with other parts)."""
    grid = np.linspace(0.3, 1.0, 29) if thresholds is None else np.asarray(thresholds, dtype=float)
    levels = con.execute(
        "SELECT o.crowd_share AS share, count(*) AS items, count(o.gold_node) AS gold, "
        "sum((o.crowd_node = o.gold_node)::INT) AS correct, sum(o.crowd_cost) AS crowd_cost "
        "FROM d_item_outcomes o WHERE o.crowd_node IS NOT NULL AND " + scope.sql + " GROUP BY ALL ORDER BY share",
        scope.params,
    ).df()
    if levels.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in WHATIF_COLUMNS})
    cost_row = first_row(con.execute(
        "SELECT median(o.expert_cost) FROM d_item_outcomes o WHERE o.after_node IS NOT NULL AND " + scope.sql,  # noqa: S608 - scope from item_scope
        scope.params,
    ))
    expert_cost = float(cost_row[0]) if cost_row and cost_row[0] is not None else float("nan")
    p_expert = _expert_accuracy(con, scope).value
    share = levels["share"].to_numpy(float)
    items = levels["items"].to_numpy(float)
    gold = levels["gold"].to_numpy(float)
    correct = levels["correct"].fillna(0).to_numpy(float)
    # Cumulative sums over shares sorted ascending: position i counts every level with share <= grid value.
    cut = np.searchsorted(share, grid + SHARE_SLACK, side="right")
    cum = {name: np.concatenate([[0.0], np.cumsum(v)]) for name, v in (("i", items), ("g", gold), ("c", correct))}
    escalated_share = cum["i"][cut] / cum["i"][-1]
    escalated_gold = cum["g"][cut]
    kept_correct = cum["c"][-1] - cum["c"][cut]
    expert_part = escalated_gold * (np.nan if p_expert is None else p_expert)
    expert_part = np.where(escalated_gold == 0, 0.0, expert_part)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = (kept_correct + expert_part) / cum["g"][-1]
    crowd_cost = float(levels["crowd_cost"].sum()) / cum["i"][-1]
    cost = crowd_cost + np.where(escalated_share == 0, 0.0, escalated_share * expert_cost)
    return pd.DataFrame(
        {
            "threshold": grid,
            "escalated_share": escalated_share,
            "projected_accuracy": accuracy,
            "projected_cost_per_item": cost,
            "n_gold": np.full(grid.size, int(cum["g"][-1])),
        }
    )


def items_escalated_at(con: duckdb.DuckDBPyConnection, f: Filters, t: float, limit: int | None = None) -> pd.DataFrame:
    """The items the what-if would escalate at threshold ``t``, least confident first."""
    scope = item_scope(con, f)
    return con.execute(
        "SELECT o.item_id, o.branch, o.crowd_node, o.crowd_share AS confidence, o.gold_node, "  # noqa: S608 - scope from item_scope
        "o.escalated AS escalated_today, o.after_node FROM d_item_outcomes o "
        "WHERE o.crowd_node IS NOT NULL AND o.crowd_share <= ? AND "
        + scope.sql
        + " ORDER BY o.crowd_share, o.item_idx LIMIT ?",
        [t + SHARE_SLACK, *scope.params, limit if limit is not None else 2**62],
    ).df()
