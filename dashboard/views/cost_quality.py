"""Cost versus quality: what each labelling strategy buys, where today sits, and how many labels each branch needs."""

from __future__ import annotations

import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, fmt, guarded, table
from queries import cost_quality
from queries.filters import Filters


def _frontier(filters: Filters) -> bool:
    points = access.query(cost_quality.pareto_frontier, filters)
    if points.empty:
        empty_state("No gold labels in scope, so accuracy cannot be measured.",
                    "Ingest gold labels with `labelgov ingest gold FILE`, then run `labelgov refresh`.")
        return False
    now = points[points["is_current"]]
    if not now.empty:
        cols = st.columns(2)
        cols[0].metric("Today: cost per item", fmt(float(now["cost_per_item"].iloc[0]), "money"))
        cols[1].metric("Today: accuracy on gold", fmt(float(now["accuracy"].iloc[0]), "share"))
    chart(charts.frontier(points, "Accuracy against cost per item, by strategy"), "cq_frontier")
    table(points, "cost_quality_frontier", filters, key="cq_points")
    return True


def _recommended(filters: Filters) -> None:
    st.subheader("Recommended labels per item, by branch")
    tolerance = st.slider("Accept accuracy within this much of the best", 0.0, 0.05, 0.01, step=0.005,
                          key="cq_tolerance")
    rec = access.query(cost_quality.recommended_k, filters, tolerance=float(tolerance))
    fig = charts.bars(rec[rec["branch"] != "all"], "branch", "recommended_k",
                      "Fewest labels per item within tolerance of the best (select to filter)", "Branch",
                      "Labels per item", ids="branch", series="method",
                      hover=[("accuracy", "Accuracy"), ("cost_per_item", "Cost per item"), ("n_items", "Gold items")])
    chart(fig, "cq_recommended", filters, "branch")
    table(rec, "recommended_labels", filters, key="cq_rec_table")
    curve = access.query(cost_quality.redundancy_curve, filters)
    overall = curve[curve["branch"] == "all"]
    st.plotly_chart(charts.trend(overall.assign(week=overall["k"]), "week", "accuracy",
                                 "Accuracy as labels per item grow", "Accuracy on gold", series="method")
                    .update_xaxes(title_text="Labels per item"), key="cq_curve")
    table(curve, "redundancy_curve", filters, key="cq_curve_table")


def _per_correct(filters: Filters) -> None:
    st.subheader("Cost of one correct label")
    per = access.query(cost_quality.cost_per_correct, filters, by="tier")
    table(per, "cost_per_correct_by_tier", filters, key="cq_per_correct")


def render(filters: Filters) -> None:
    st.title("Cost versus quality")
    with guarded("Replaying labelling strategies…"):
        if not _frontier(filters):
            return
    with guarded("Choosing labels per branch…"):
        _recommended(filters)
    with guarded("Pricing correct labels…"):
        _per_correct(filters)
