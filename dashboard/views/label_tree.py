"""Label tree: where the labels land and where they are contested, down to one node's children."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import access, charts
from dashboard.components import (
    chart,
    empty_state,
    filter_names,
    go_to,
    guarded,
    link_button,
    narrowed,
    selected_value,
    table,
)
from dashboard.selection import Dimension, selection_to_drill
from queries import agreement, contested, soft_labels, tree_view
from queries.filters import Filters

# How the agreement table groups the answers: label -> agreement_table's ``by``.
GROUPINGS = {"Branch": "branch", "Week": "week", "Tree level": "level", "Overall": "overall"}
# Groupings whose points name something the filters can narrow to; levels and the overall row do not.
GROUP_DIMENSIONS: dict[str, Dimension] = {"branch": "branch", "week": "week"}
BOOTSTRAP_REPLICATES = 200
SOURCES = {"Annotation mass": "annotations", "Latent-truth posterior (Dawid-Skene)": "posterior"}
NODE_KEY = "lt_node_select"
TOP = "(top level)"
BRANCH_SHARES = {"agree_branch_not_leaf": "Agree on the branch, not the leaf",
                 "disagree_branch": "Disagree on the branch"}


def posterior_caveat(filters: Filters, source: str) -> str | None:
    """The posterior is one Dawid-Skene model fitted on every answer, so a filter on answers cannot reweigh it:
    say which active filters only choose items there, lest the unchanged sizes read as "no effect"."""
    if source != "posterior":
        return None
    active = filters.answer_fields()
    if not active:
        return None
    return (f"Filtered by {filter_names(active)}: in posterior mode these only choose the items (those with a "
            "matching answer). The Dawid-Skene posterior is one model fitted on every answer, so an item's posterior "
            "does not change with them. Size by annotation mass to count only the matching answers.")


def branch_view(event: object, priorities: pd.DataFrame, filters: Filters) -> Filters | None:
    """The filters that open the disagreement explorer on the selected priority's branch, None without one."""
    node = selected_value(event, priorities, "node_id")
    return None if node is None else narrowed(filters, branch=node)


def _picked_node(event: object, nodes: pd.DataFrame) -> None:
    """A click on the sunburst chooses the node whose children are shown below.

    Leaves have no children to compare, so a click on a leaf shows its parent's children.
    """
    clicked = selection_to_drill(event, "item", Filters()).item_id
    row = nodes[nodes["node_id"] == clicked]
    if row.empty:
        return
    node = str(row["parent_id"].iloc[0]) if bool(row["is_leaf"].iloc[0]) else str(clicked)
    if pd.isna(row["parent_id"].iloc[0]) and bool(row["is_leaf"].iloc[0]):
        node = TOP
    if st.session_state.get(NODE_KEY) != node:
        st.session_state[NODE_KEY] = node
        st.rerun()


def _tree(filters: Filters) -> list[str]:
    source = SOURCES[st.radio("Size by", list(SOURCES), horizontal=True, key="lt_source")]
    nodes = access.query(tree_view.node_volumes, filters, source=source)
    if nodes.empty or float(nodes["volume"].sum()) == 0:
        what = "No Dawid-Skene posterior yet." if source == "posterior" else "No answers match these filters."
        empty_state(what, "Run `labelgov refresh` after ingesting annotations, or widen the filters.")
        return []
    caveat = posterior_caveat(filters, source)
    if caveat is not None:
        st.caption(caveat)
    fig = charts.sunburst(nodes, "Label tree by volume, coloured by ambiguity")
    event = st.plotly_chart(fig, key="lt_sunburst", on_select="rerun", selection_mode=("points",))
    _picked_node(event, nodes)
    table(nodes, "tree_nodes", filters, key="lt_nodes_table")
    return nodes.loc[~nodes["is_leaf"], "node_id"].tolist()


def _levels(filters: Filters) -> None:
    st.subheader("Ambiguity per level")
    left, middle, right = st.columns(3)
    levels = access.query(agreement.agreement_table, filters, by="level")
    stats = access.query(soft_labels.level_stats, filters)
    with left:
        if not levels.empty:
            levels = levels.assign(level="Level " + levels["group"].astype(str))
        fig = charts.bars(levels, "level", "alpha_nominal", "Agreement (alpha) per tree level", "Level", "Alpha",
                          hover=[("n_items", "Items")])
        st.plotly_chart(fig, key="lt_alpha_levels")
    if not stats.empty:
        stats = stats.assign(level="Level " + stats["depth"].astype(str))
    with middle:
        fig = charts.bars(stats, "level", "mean_entropy", "Mean entropy per level (bits)", "Level", "Entropy (bits)",
                          series="source", hover=[("ambiguous_share", "Share ambiguous")])
        st.plotly_chart(fig, key="lt_entropy_levels")
    with right:
        fig = charts.bars(stats, "level", "mean_gap", "Mean gap between the top two nodes per level",
                          "Level", "Gap (share of the item's mass)", series="source",
                          hover=[("mean_top_share", "Mean top share"), ("items", "Items")])
        st.plotly_chart(fig, key="lt_gap_levels")
    table(stats, "level_stats", filters, key="lt_level_stats")


def _agreement(filters: Filters) -> None:
    st.subheader("Agreement")
    left, right = st.columns(2)
    label = left.selectbox("Group by", list(GROUPINGS), key="lt_agreement_by")
    exact = right.toggle(
        f"Percentile bootstrap ({BOOTSTRAP_REPLICATES} replicates over items; slower)", key="lt_bootstrap",
        help="Off: the normal interval from the standard error the bootstrap converges to, computed in one pass.",
    )
    replicates = BOOTSTRAP_REPLICATES if exact else 0
    by = GROUPINGS[label]
    rows = access.query(agreement.agreement_table, filters, by=by, bootstrap=replicates)
    kind = "percentile bootstrap" if exact else "analytic"
    st.caption(f"Krippendorff's alpha (nominal) with 95% intervals ({kind}); alpha_tree counts a confusion between "
               "siblings as less than one across branches. Fleiss' kappa uses the items with the most common number "
               "of answers.")
    dimension = GROUP_DIMENSIONS.get(by)
    if dimension is not None:
        st.caption(f"Select a point to narrow the dashboard to that {label.lower()}.")
    fig = charts.interval_bars(rows, "group", "alpha_nominal", "ci_low", "ci_high",
                               f"Agreement (alpha) by {label.lower()}", label, "Alpha", ids="group",
                               empty="Fewer than two answers per item in these filters")
    chart(fig, "lt_agreement_chart", filters, dimension)
    table(rows, "agreement_by_" + by, filters, key="lt_agreement_table")


def _branches(filters: Filters) -> None:
    st.subheader("Where the branches split")
    st.caption("Counted from the answers whichever source sizes the tree: the posterior has no answers to agree "
               "or disagree. Shares are over items with at least two answers at the branch's depth; select a bar "
               "to narrow the dashboard to its branch.")
    stats, priorities = access.query(soft_labels.branch_tables, filters)
    if stats.empty:
        empty_state("No answers reach a branch under these filters.", "Widen the filters, or ingest annotations.")
        return
    shares = stats.melt(id_vars=["node_id", "title", "items"], value_vars=list(BRANCH_SHARES),
                        var_name="measure", value_name="share").dropna(subset=["share"])
    shares = shares.assign(measure=shares["measure"].map(BRANCH_SHARES))
    fig = charts.bars(shares, "title", "share", "How answers agree at each branch", "Branch", "Share of items",
                      ids="node_id", series="measure", hover=[("items", "Items reaching the branch")])
    chart(fig, "lt_branch_shares", filters, "branch")
    table(stats, "branch_stats", filters, key="lt_branch_table")
    st.markdown("**Where more labels would help most** (uncertain split among the children, few items)")
    if priorities.empty:
        empty_state("No branch has enough judged items to rank.",
                    "A branch needs five items with two or more answers below it; widen the filters.")
        return
    st.caption("Select a row to open that branch's items in the disagreement explorer.")
    event = table(priorities, "labelling_priorities", filters, key="lt_priorities", on_select="rerun",
                  selection_mode="single-row")
    scope = branch_view(event, priorities, filters)
    if scope is not None:
        go_to("disagreements", scope)


def _node(filters: Filters, branches: list[str]) -> None:
    st.subheader("One node's children")
    options = [TOP, *branches]
    if st.session_state.get(NODE_KEY) not in options:
        st.session_state[NODE_KEY] = TOP
    picked = st.selectbox("Node (or click the sunburst)", options, key=NODE_KEY)
    node = None if picked == TOP else picked
    confusion = access.query(tree_view.children_confusion, filters, node_id=node)
    fig = charts.heatmap(confusion, "second_title", "first_title", "share",
                         f"How answers split between the children of {picked}", "Other answer on the same item",
                         "Answer", "Share of pairs", zmin=0, zmax=1)
    st.plotly_chart(fig, key="lt_confusion")
    scope = filters if node is None else filters.model_copy(update={"branch": node})
    items = access.query(contested.contested_items, scope, limit=20)
    st.markdown(f"**Most contested items under {picked}**")
    if items.empty:
        empty_state("No items under this node.", "Choose another node or widen the filters.")
        return
    st.caption("Select a row to open the item in the disagreement explorer.")
    event = table(items, "contested_under_node", scope, key="lt_contested", on_select="rerun",
                  selection_mode="single-row")
    rows = event.selection.rows if event is not None else []
    if rows:
        go_to("disagreements", scope, item=str(items.iloc[int(rows[0])]["item_id"]))
    link_button("Explore these disagreements", "disagreements", scope, widget_key="lt_to_disagreements")


def render(filters: Filters) -> None:
    st.title("Label tree")
    branches: list[str] = []
    with guarded("Drawing the tree…"):
        branches = _tree(filters)
    with guarded("Measuring ambiguity per level…"):
        _levels(filters)
    with guarded("Measuring agreement…"):
        _agreement(filters)
    with guarded("Measuring agreement within each branch…"):
        _branches(filters)
    if branches:
        with guarded("Comparing the node's children…"):
            _node(filters, branches)
