"""Cost versus quality: what each labelling strategy buys, where today sits, and how many labels each branch needs."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import access, charts
from dashboard.components import (
    chart,
    empty_state,
    filter_names,
    fmt,
    guarded,
    link_button,
    narrowed,
    selected_value,
    table,
)
from queries import cost_quality
from queries.filters import Filters


def pool_fields(filters: Filters) -> list[str]:
    """The active filters on who answered, which the labels-per-item replay can draw its answers from."""
    return [f for f in cost_quality.POOL_FIELDS if getattr(filters, f)]


def filter_notes(filters: Filters, replay_answers: bool) -> list[str]:
    """What the active filters on answers do to each number here, so that one that changes nothing is not a puzzle.

    Asked to (``replay_answers``), tier, annotator and stage filters choose the answers the labels-per-item
    replay draws from; otherwise, and always for today's point and the escalation what-if, which are
    outcomes of whole items, a filter on answers only chooses the items that have such answers. Dates and
    tree version choose items for every part except the cost of a correct label, which counts matching answers.
    """
    notes = []
    pool = pool_fields(filters)
    if pool and replay_answers:
        notes.append(f"{filter_names(pool)} choose the answers replayed in the labels-per-item curve and the "
                     "recommended labels. Today's point and the escalation what-if are outcomes of whole items, so "
                     "there they only choose the items that have such answers.")
    elif pool:
        notes.append(f"{filter_names(pool)} only choose items here (items with such answers), replayed with all "
                     "their first-pass answers; switch on the replay above to draw only from the matching answers.")
    dated = cost_quality.item_only_fields(filters)
    if dated:
        notes.append(f"{filter_names(dated)} only choose items for the frontier, today's point and the recommended "
                     "labels (items with answers that match); the cost of a correct label counts matching answers.")
    return notes


def _replay_choice(filters: Filters) -> bool:
    """Whether to replay with only the answers the filters on who answered keep: an on-the-spot refit that
    takes seconds on a large warehouse, so it is asked for rather than done on every filter change."""
    pool = pool_fields(filters)
    if not pool:
        return False
    return st.toggle(f"Replay labels per item with only the answers {filter_names(pool)} keep (slower: refits "
                     "Dawid-Skene on them)", key="cq_replay_answers")


def _frontier(filters: Filters, replay_answers: bool) -> bool:
    points = access.query(cost_quality.pareto_frontier, filters, replay_answers=replay_answers)
    if points.empty:
        empty_state("No gold labels in scope, so accuracy cannot be measured.",
                    "Ingest gold labels with `labelgov ingest gold FILE`, then run `labelgov refresh`.")
        return False
    for note in filter_notes(filters, replay_answers):
        st.caption(note)
    now = points[points["is_current"]]
    if not now.empty:
        today = now.iloc[0]
        cols = st.columns(3)
        cols[0].metric("Today: cost per item", fmt(float(today["cost_per_item"]), "money"))
        cols[1].metric("Today: accuracy on gold", fmt(float(today["accuracy"]), "share"),
                       help=f"95% interval {fmt(float(today['accuracy_low']), 'share')} to "
                            f"{fmt(float(today['accuracy_high']), 'share')}")
        cols[2].metric("Today: gold items scored", fmt(float(today["n_gold"]), "count"))
    chart(charts.frontier(points, "Accuracy against cost per item, by strategy"), "cq_frontier")
    replayed = points[points["strategy"].str.startswith("redundancy_")]
    if not replayed.empty:
        st.caption(f"Labels-per-item points are measured on {int(replayed['n_gold'].max()):,} gold items; the "
                   "table gives each point's gold items and, for measured accuracies, a 95% interval.")
    table(points, "cost_quality_frontier", filters, key="cq_points")
    return True


def _recommended(filters: Filters, replay_answers: bool) -> None:
    st.subheader("Recommended labels per item, by branch")
    tolerance = st.slider("Accept accuracy within this much of the best", 0.0, 0.05, 0.01, step=0.005,
                          key="cq_tolerance")
    rec = access.query(cost_quality.recommended_k, filters, tolerance=float(tolerance), replay_answers=replay_answers)
    fig = charts.bars(rec[rec["branch"] != "all"], "branch", "recommended_k",
                      "Fewest labels per item within tolerance of the best (select to filter)", "Branch",
                      "Labels per item", ids="branch", series="method",
                      hover=[("accuracy", "Accuracy"), ("cost_per_item", "Cost per item"), ("n_items", "Gold items")])
    chart(fig, "cq_recommended", filters, "branch")
    table(rec, "recommended_labels", filters, key="cq_rec_table")
    curve = access.query(cost_quality.redundancy_curve, filters, replay_answers=replay_answers)
    overall = curve[curve["branch"] == "all"]
    st.plotly_chart(charts.trend(overall.assign(week=overall["k"]), "week", "accuracy",
                                 "Accuracy as labels per item grow", "Accuracy on gold", series="method")
                    .update_xaxes(title_text="Labels per item"), key="cq_curve")
    table(curve, "redundancy_curve", filters, key="cq_curve_table")


def annotator_target(event: Any, per: pd.DataFrame, filters: Filters) -> tuple[str, Filters] | None:
    """The annotator of the selected row of the per-annotator table and the filters that open them, or None."""
    who = selected_value(event, per, "name")
    return None if who is None else (who, narrowed(filters, annotators=(who,)))


def _per_correct(filters: Filters) -> None:
    st.subheader("Cost of one correct label")
    per = access.query(cost_quality.cost_per_correct, filters, by="tier")
    table(per, "cost_per_correct_by_tier", filters, key="cq_per_correct")
    st.subheader("Cost of one correct label, by annotator")
    people = access.query(cost_quality.cost_per_correct, filters, by="annotator")
    if people.empty:
        empty_state("No annotators' answers match these filters.", "Widen the filters.")
        return
    st.caption("Most expensive first; click a column header to sort. Select a row to open that annotator on the "
               "Annotators page.")
    event = table(people, "cost_per_correct_by_annotator", filters, key="cq_per_annotator", on_select="rerun",
                  selection_mode="single-row")
    target = annotator_target(event, people, filters)
    if target is not None:
        who, narrowed_filters = target
        link_button(f"Open {who} on the Annotators page", "annotators", narrowed_filters, "cq_open_annotator")


def render(filters: Filters) -> None:
    st.title("Cost versus quality")
    replay_answers = _replay_choice(filters)
    with guarded("Replaying labelling strategies…"):
        if not _frontier(filters, replay_answers):
            return
    with guarded("Choosing labels per branch…"):
        _recommended(filters, replay_answers)
    with guarded("Pricing correct labels…"):
        _per_correct(filters)
