"""Overview: the headline numbers against the previous period, their weekly trends, and what needs a look."""

from __future__ import annotations

import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, fmt, fmt_delta, guarded, link_button, table
from queries import data_quality, drift, overview
from queries.filters import Filters

TILES_PER_ROW = 4
# A higher escalation rate or cost is worse; the tile arrows say so in colour.
LOWER_IS_BETTER = {"escalation_rate", "cost_per_item"}
# Where a failing data-quality check can be looked into.
CHECK_PAGES = {
    "too_fast_annotators": ("Look at the too-fast annotators", "annotators"),
    "diverging_sources": ("Look at where sources diverge", "drift"),
}
TRENDS = (
    ("annotations", "Annotations per week", "Annotations"),
    ("alpha", "Agreement (alpha) per week", "Alpha"),
    ("estimated_accuracy", "Estimated accuracy per week", "Estimated accuracy"),
    ("escalation_rate", "Share of items escalated per week", "Share escalated"),
    ("cost_per_item", "Cost per item per week", "Cost per item"),
    ("items", "Items labelled per week", "Items"),
)


def _tiles(filters: Filters) -> None:
    result = access.query(overview.overview, filters)
    if result.period is None:
        empty_state("No answers match these filters.", "Widen the filters, or ingest annotations with "
                    "`labelgov ingest annotations FILE`.")
    else:
        p = result.period
        st.caption(f"{p.start} to {p.end}, compared with {p.previous_start} to {p.previous_end}.")
    cols = [*st.columns(TILES_PER_ROW), *st.columns(TILES_PER_ROW)]
    for col, tile in zip(cols, result.tiles, strict=False):
        col.metric(
            tile.label,
            fmt(tile.value, tile.kind),
            delta=fmt_delta(tile.delta, tile.kind),
            delta_color="inverse" if tile.key in LOWER_IS_BETTER else "normal",
            help=tile.help,
            border=True,
        )


def _trends(filters: Filters) -> None:
    weekly = access.query(overview.weekly_trends, filters)
    st.subheader("Weekly trends")
    st.caption("Select points on a chart to narrow the dashboard to those weeks.")
    left, right = st.columns(2)
    for i, (column, title, label) in enumerate(TRENDS):
        target = left if i % 2 == 0 else right
        with target:
            shown = weekly.dropna(subset=[column]) if column in weekly else weekly.iloc[0:0]
            chart(charts.trend(shown, "week", column, title, label), key="ov_trend_" + column,
                  filters=filters, dimension="week")


def _alerts(filters: Filters) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Top drift alerts")
        # The drift page's report of the same filters: computed once for both pages.
        alerts = access.query(drift.drift_report, filters).top_alerts(5)
        if alerts.empty:
            st.success("No drift alerts for these filters.")
        else:
            table(alerts, "drift_alerts", filters, key="ov_alerts")
            for i, row in enumerate(alerts.head(3).itertuples()):
                link_button(f"Open drift in {row.branch}", "drift", filters.model_copy(update={"branch": row.branch}),
                            widget_key=f"ov_alert_{i}")
    with right:
        st.subheader("Quality risks")
        checks = access.query(data_quality.check_counts, filters)
        flagged = checks[checks["severity"] != "ok"]
        if flagged.empty:
            st.success("Every data-quality check passes for these filters.")
        table(checks, "quality_checks", filters, key="ov_checks")
        for check in flagged["check"]:
            if check in CHECK_PAGES:
                label, page = CHECK_PAGES[check]
                link_button(label, page, filters, widget_key="ov_check_" + check)
    link_button("Open the disagreement explorer", "disagreements", filters, widget_key="ov_to_disagreements")


def render(filters: Filters) -> None:
    st.title("Overview")
    with guarded("Computing the headline numbers…"):
        _tiles(filters)
    with guarded("Computing the weekly trends…"):
        _trends(filters)
    with guarded("Looking for drift and data-quality problems…"):
        _alerts(filters)
