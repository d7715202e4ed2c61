"""Escalation: what sending items to experts gains, how fast it happens, and what another threshold would do."""

from __future__ import annotations

import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, filter_names, fmt, guarded, table
from queries import escalation
from queries.filters import Filters

GROUPS = {"Trigger": "trigger", "Expert": "expert", "Branch": "branch"}


def item_scope_note(filters: Filters, items: int) -> str | None:
    """Why a tier, stage, annotator or date filter may leave these numbers unchanged, None without one.

    Every number here is an item's outcome, which needs all of its answers (dropping the expert's answer
    would erase the effect measured), so such a filter can only choose the items that have matching answers.
    """
    fields = filters.answer_fields()
    if not fields:
        return None
    return (f"{filter_names(fields)} only choose items here: an item is in scope when any of its answers "
            f"matches, and its outcome before and after escalation, its cost and its timing use all of its "
            f"answers ({items:,} items in scope).")


def _summary(filters: Filters, sla: float) -> bool:
    s = access.query(escalation.escalation_summary, filters, sla_hours=sla)
    if s.escalated == 0:
        empty_state("No escalations in scope.",
                    "Ingest the escalation log with `labelgov ingest escalations FILE` (columns item_id, trigger, "
                    "created_at, optional routed_to and resolved_at), then run `labelgov refresh`; or widen the "
                    "filters.")
        return False
    note = item_scope_note(filters, s.items)
    if note is not None:
        st.caption(note)
    cols = st.columns(5)
    cols[0].metric("Escalation rate", fmt(s.escalation_rate, "share"), help=f"{s.escalated:,} of {s.items:,} items")
    cols[1].metric("Accuracy before", fmt(s.accuracy_before, "share"), help=f"on {s.n_gold} escalated gold items")
    cols[2].metric("Accuracy after", fmt(s.accuracy_after, "share"))
    cols[3].metric("Median hours to label", fmt(s.median_hours_to_label, "hours"))
    cols[4].metric(f"Resolved within {s.sla_hours:.0f} h", fmt(s.share_within_sla, "share"),
                   help="Share of decided escalations resolved within the service level chosen above")
    if s.n_gold == 0:
        empty_state("No escalated item has a gold label, so gains cannot be measured.",
                    "Ingest gold labels with `labelgov ingest gold FILE`.")
    return True


def _gains(filters: Filters) -> None:
    st.subheader("Gains before and after")
    by = GROUPS[st.radio("Group by", list(GROUPS), horizontal=True, key="esc_by")]
    gains = access.query(escalation.gains_by, filters, by=by)
    long = gains.melt(id_vars=["name"], value_vars=["accuracy_before", "accuracy_after"], var_name="when",
                      value_name="accuracy").dropna()
    long["when"] = long["when"].map({"accuracy_before": "Before", "accuracy_after": "After"})
    fig = charts.bars(long, "name", "accuracy", f"Accuracy on gold before and after escalation, by {by}",
                      by.capitalize(), "Accuracy on gold", series="when")
    chart(fig, "esc_gains", filters, "branch" if by == "branch" else None)
    table(gains, f"escalation_gains_by_{by}", filters, key="esc_gains_table")


def _time(filters: Filters, sla: float) -> None:
    st.subheader("Time to label")
    times = access.query(escalation.time_to_label, filters, sla_hours=sla)
    fig = charts.bars(times, "trigger", "median_hours", "Median hours from escalation to label", "Trigger",
                      "Hours", hover=[("p90_hours", "90th percentile"), ("share_within_sla", "Within service level")])
    st.plotly_chart(fig, key="esc_time")
    table(times, "time_to_label", filters, key="esc_time_table")


def _whatif(filters: Filters) -> None:
    st.subheader("Threshold what-if")
    curve = access.query(escalation.threshold_whatif, filters)
    if curve.empty:
        empty_state("No items to project.", "Widen the filters.")
        return
    thresholds = curve["threshold"].round(3).tolist()
    t = st.select_slider("Escalate items whose crowd plurality share is at most", thresholds,
                         value=thresholds[len(thresholds) // 2], key="esc_threshold")
    row = curve.loc[curve["threshold"].round(3) == t].iloc[0]
    cols = st.columns(3)
    cols[0].metric("Escalated share", fmt(row["escalated_share"], "share"))
    cols[1].metric("Projected accuracy", fmt(row["projected_accuracy"], "share"))
    cols[2].metric("Projected cost per item", fmt(row["projected_cost_per_item"], "money"))
    fig = charts.curve_with_marker(curve, "threshold", [("projected_accuracy", "Projected accuracy"),
                                                        ("projected_cost_per_item", "Projected cost per item")],
                                   float(t), "Projected accuracy and cost by threshold", "Threshold")
    st.plotly_chart(fig, key="esc_whatif")
    table(access.query(escalation.items_escalated_at, filters, t=float(t), limit=200),
          "items_escalated_at_threshold", filters, key="esc_whatif_items")


def render(filters: Filters) -> None:
    st.title("Escalation")
    # One service level for the tile and the time-to-label table, so that the two never disagree.
    sla = float(st.slider("Service level (hours)", 4, 168, 48, step=4, key="esc_sla",
                          help="Sets the 'Resolved within' tile and the time-to-label table"))
    with guarded("Summarising escalations…"):
        if not _summary(filters, sla):
            return
    with guarded("Measuring gains…"):
        _gains(filters)
    with guarded("Timing escalations…"):
        _time(filters, sla)
    with guarded("Projecting thresholds…"):
        _whatif(filters)
