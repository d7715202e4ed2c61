"""Overview: the headline numbers against the previous period, accuracy measured on gold, their weekly trends,
and what needs a look (drift alerts, data-quality checks with the rows behind them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pandas as pd
import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, fmt, fmt_delta, guarded, link_button, table
from dashboard.views.drift import alert_links
from queries import agreement, data_quality, drift, hierarchy_accuracy, overview
from queries.filters import Filters

TILES_PER_ROW = 4
# A higher escalation rate or cost is worse; the tile arrows say so in colour.
LOWER_IS_BETTER = {"escalation_rate", "cost_per_item"}
# Added to a tile's help where the name alone could be misread.
HELP_NOTES = {
    "estimated_accuracy": " This is the model's own confidence in its labels, not accuracy measured on gold: "
                          "see Accuracy on gold below.",
}
# The final consensus methods of hierarchical_accuracy, as the accuracy-on-gold tiles name them.
CONSENSUS = {"majority": "Majority vote", "dawid_skene": "Dawid-Skene"}
ALERT_LINKS = 3


class CheckTable(NamedTuple):
    """The rows behind data-quality checks (queries.data_quality), shown under the checks table."""

    title: str
    query: Callable[..., pd.DataFrame]
    name: str
    empty: str


CHECK_TABLES = (
    CheckTable("Items in several splits", data_quality.cross_split_duplicates, "cross_split_duplicates",
               "No item id or content hash occurs in more than one split."),
    CheckTable("Missing metadata", data_quality.missing_metadata, "missing_metadata",
               "No answers or items in these filters."),
    CheckTable("Too-fast annotators", data_quality.too_fast_annotators,
               "too_fast_annotators", "No annotator answers suspiciously fast."),
    CheckTable("Source divergence", data_quality.source_divergence, "source_divergence",
               "No source in these filters."),
)
NO_CHECK = "(none)"
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
            help=tile.help + HELP_NOTES.get(tile.key, ""),
            border=True,
        )


def level_accuracy(scores: pd.DataFrame) -> pd.DataFrame:
    """hierarchical_accuracy's level_<d> columns as rows (method, n, level, accuracy), for one bar per level
    and method."""
    levels = [c for c in scores.columns if c.startswith("level_")]
    long = scores.melt(id_vars=["method", "n"], value_vars=levels, var_name="level", value_name="accuracy")
    return long.assign(level="Level " + long["level"].str.removeprefix("level_")).dropna(subset=["accuracy"])


def _gold(filters: Filters) -> None:
    st.subheader("Accuracy on gold")
    scores = access.query(hierarchy_accuracy.hierarchical_accuracy, filters)
    final = scores[scores["method"].isin(list(CONSENSUS))]
    if final.empty:
        empty_state("No gold labels for the items in these filters, so accuracy cannot be measured.",
                    "Ingest gold labels with `labelgov ingest gold FILE`, or widen the filters.")
        return
    cols = st.columns(TILES_PER_ROW)
    for col, row in zip(cols, final.itertuples(), strict=False):
        col.metric(
            f"{CONSENSUS[str(row.method)]} on gold",
            fmt(float(row.exact), "share"),
            help=f"Share of the {int(row.n):,} gold items in these filters (all their dates, not only the period "
                 "above) whose final label equals the gold label exactly.",
            border=True,
        )
    with st.expander("Accuracy along the tree, per method"):
        st.caption("Exact: the final label equals gold. Level d: both agree on the node at depth d. hP, hR, hF: "
                   "hierarchical precision, recall and F (shared ancestors count). Mean tree distance: edges "
                   "between the label and gold. Models are scored on the gold items they predicted.")
        table(scores, "hierarchical_accuracy", filters, key="ov_hier_table")
        fig = charts.bars(level_accuracy(scores), "level", "accuracy", "Accuracy on gold per tree level and method",
                          "Tree level", "Accuracy (share of gold items)", series="method", hover=[("n", "Gold items")])
        chart(fig, "ov_hier_chart")


def _trends(filters: Filters) -> None:
    # The weekly agreement table is the Label tree page's too: one computation per filter serves both.
    weekly = overview.with_alpha(
        access.query(overview.weekly_counts, filters), access.query(agreement.agreement_table, filters, by="week")
    )
    st.subheader("Weekly trends")
    st.caption("Select points on a chart to narrow the dashboard to those weeks.")
    left, right = st.columns(2)
    for i, (column, title, label) in enumerate(TRENDS):
        target = left if i % 2 == 0 else right
        with target:
            shown = weekly.dropna(subset=[column]) if column in weekly else weekly.iloc[0:0]
            chart(charts.trend(shown, "week", column, title, label), key="ov_trend_" + column,
                  filters=filters, dimension="week")


def flagged_annotators(fast: pd.DataFrame, filters: Filters) -> Filters:
    """The Annotators page's filters for the too-fast annotators: the same filters narrowed to them."""
    return filters.model_copy(update={"annotators": tuple(sorted(fast["annotator_id"].astype(str)))})


def _alerts(filters: Filters) -> None:
    st.subheader("Top drift alerts")
    # The drift page's report of the same filters: computed once for both pages.
    report = access.query(drift.drift_report, filters)
    alerts = report.top_alerts(5)
    if alerts.empty:
        st.success("No drift alerts for these filters.")
        return
    table(alerts, "drift_alerts", filters, key="ov_alerts")
    for i, link in enumerate(alert_links(report, filters, ALERT_LINKS)):
        link_button(link.label, link.page, link.filters, widget_key=f"ov_alert_{i}")


def _quality(filters: Filters) -> None:
    st.subheader("Quality risks")
    checks = access.query(data_quality.check_counts, filters)
    if checks[checks["severity"] != "ok"].empty:
        st.success("Every data-quality check passes for these filters.")
    table(checks, "quality_checks", filters, key="ov_checks")
    # One check's rows at a time, on request: under a filter on answers each table is a scan of the answers,
    # and the overview is the first page leadership opens.
    titles = [NO_CHECK, *(check.title for check in CHECK_TABLES)]
    picked = st.selectbox("Show the rows behind a check", titles, key="ov_dq_pick")
    check = next((c for c in CHECK_TABLES if c.title == picked), None)
    if check is None:
        return
    rows = access.query(check.query, filters)
    if rows.empty:
        st.caption(check.empty)
        return
    table(rows, check.name, filters, key="ov_dq_" + check.name)
    if check.query is data_quality.too_fast_annotators:
        link_button("Look at the too-fast annotators", "annotators", flagged_annotators(rows, filters),
                    widget_key="ov_check_too_fast_annotators")


def render(filters: Filters) -> None:
    st.title("Overview")
    with guarded("Computing the headline numbers…"):
        _tiles(filters)
    with guarded("Measuring accuracy on gold…"):
        _gold(filters)
    with guarded("Computing the weekly trends…"):
        _trends(filters)
    left, right = st.columns(2)
    with left, guarded("Looking for drift…"):
        _alerts(filters)
    with right, guarded("Running the data-quality checks…"):
        _quality(filters)
    link_button("Open the disagreement explorer", "disagreements", filters, widget_key="ov_to_disagreements")
