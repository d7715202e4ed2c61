"""Drift: which branches' label distributions, agreement, confidence and model agreement moved, which
annotators drifted, and when the tree changed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

import pandas as pd
import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, guarded, link_button, table
from queries import drift, tree_view
from queries.filters import Filters
from queries.options import filter_options

METRICS = {"Jensen-Shannon distance": "js", "Population stability index": "psi", "Chi-squared": "chi2"}
ANNOTATOR_METRIC = "annotator_agreement"
# What an alert's size measures (queries.drift): sizes of different kinds are not comparable, so the alert
# chart shows each as a multiple of its own kind's threshold and says in the hover what the raw size is.
SIZE_MEANING = {
    "label_js": "Jensen-Shannon distance of the branch's mix of children",
    "label_share": "|ln(share / reference share)| of the node's share of its parent",
    "agreement": "drop in alpha",
    "confidence": "|Cohen's d| of self-reported confidence",
    "model_disagreement": "rise in the share of items where the model's label differs from consensus",
    ANNOTATOR_METRIC: "drop in the annotator's share of answers equal to consensus",
}
ALERT_LINKS = 5
# Annotators drawn by default when none alerts: the ones whose share agreeing with consensus fell most.
DEFAULT_ANNOTATORS = 5


class AlertLink(NamedTuple):
    label: str
    page: str
    filters: Filters


def alert_link(
    subject: str, metric: str, filters: Filters, branches: Collection[str], parents: Mapping[str, str]
) -> AlertLink:
    """Where an alert's button leads, as filters the sidebar keeps.

    Annotator alerts carry the annotator id in the branch column, so they open the Annotators page narrowed to
    that annotator. The sidebar's branch filter only offers internal nodes (``branches``): a share alert on a
    leaf opens its nearest ancestor among them (``parents``: node to parent), where the leaf's share is one of
    the children shown, and one with no such ancestor opens the whole tree.
    """
    if metric == ANNOTATOR_METRIC:
        return AlertLink(f"Look at annotator {subject}", "annotators",
                         filters.model_copy(update={"annotators": (subject,)}))
    node: str | None = subject
    seen: set[str] = set()
    while node is not None and node not in branches and node not in seen:
        seen.add(node)
        node = parents.get(node)
    if node is None or node not in branches:
        whole = filters.model_copy(update={"branch": None})
        return AlertLink(f"Open drift across the tree ({subject})", "drift", whole)
    label = f"Open drift in {node}" if node == subject else f"Open drift in {node} (around {subject})"
    return AlertLink(label, "drift", filters.model_copy(update={"branch": node}))


def alert_links(report: drift.DriftReport, filters: Filters, limit: int) -> list[AlertLink]:
    """alert_link of the first ``limit`` alerts, against the sidebar's branches and the report's tree."""
    branches = {b[0] for b in access.call(filter_options).branches}
    parents = dict(zip(report.shares["node"], report.shares["parent"], strict=True))
    return [alert_link(str(row.branch), str(row.metric), filters, branches, parents)
            for row in report.top_alerts(limit).itertuples()]


def relative_sizes(alerts: pd.DataFrame) -> pd.DataFrame:
    """The alerts with their kind's threshold, the size as a multiple of it, and what the size measures."""
    threshold = alerts["metric"].map(drift.ALERT_SIZE)
    return alerts.assign(
        label=alerts["branch"].astype(str) + " · " + alerts["metric"].astype(str),
        threshold=threshold,
        relative=alerts["size"] / threshold,
        measures=alerts["metric"].map(SIZE_MEANING),
    )


def shallowest(present: list[str], depths: Mapping[str, int]) -> list[str]:
    """The branches of ``present`` nearest the root (top-level areas unless a branch filter narrows)."""
    known = [depths[b] for b in present if b in depths]
    if not known:
        return present
    top = min(known)
    return [b for b in present if depths.get(b) == top]


def default_annotators(people: pd.DataFrame, alerts: pd.DataFrame, limit: int = DEFAULT_ANNOTATORS) -> list[str]:
    """The annotators with a drift alert, else the ``limit`` whose agreement with consensus fell most."""
    alerting = alerts.loc[alerts["metric"] == ANNOTATOR_METRIC, "branch"].astype(str).tolist()
    if alerting:
        return alerting
    drops = people.groupby("annotator_id")["change"].min().sort_values(kind="stable")
    return drops.head(limit).index.astype(str).tolist()


def _version_weeks() -> list[str]:
    changes = access.call(drift.tree_version_changes)
    return [] if changes.empty else changes["week"].dropna().astype(str).str[:10].tolist()


def _reference(report: drift.DriftReport) -> None:
    if report.reference is None or not report.compared_any_week:
        st.caption(f"Each week is compared with a reference: the first {drift.REFERENCE_WEEKS} weeks of the "
                   "filtered answers. No week after it has answers in these filters.")
        return
    start, end = report.reference
    st.caption(f"Reference window: the first {drift.REFERENCE_WEEKS} weeks of the filtered answers, {start} to {end}, "
               "pooled. Every later week is compared with it; change the dates in the sidebar to move it.")


def _matrix(filters: Filters, report: drift.DriftReport, marks: list[str]) -> None:
    label = st.radio("Measure", list(METRICS), horizontal=True, key="drift_metric")
    metric = METRICS[label]
    matrix = report.matrix_by(metric)
    if matrix.empty:
        empty_state("Not enough dated answers to compare weeks.",
                    "Drift needs annotations with created_at spanning several weeks; ingest them with timestamps.")
        return
    fig = charts.heatmap(matrix, "week", "branch", metric, f"{label} against the reference weeks, by branch and week",
                         "Week", "Branch", label)
    st.plotly_chart(charts.mark_weeks(fig, marks, "tree changed"), key="drift_heatmap")
    table(matrix, "drift_matrix", filters, key="drift_matrix_table")


def _alerts(filters: Filters, report: drift.DriftReport) -> None:
    st.subheader("Alerts")
    alerts = report.top_alerts()
    if alerts.empty:
        st.success("No drift alerts for these filters.")
        return
    fig = charts.bars(
        relative_sizes(alerts), "label", "relative", "Drift alerts by size relative to their kind's threshold",
        "Alert (subject · kind)", "Size ÷ alert threshold (1 = threshold)", ids="branch",
        hover=[("measures", "Size measures"), ("size", "Size"), ("threshold", "Alert threshold"),
               ("week", "Since week"), ("p_adjusted", "Adjusted p")],
    )
    chart(fig, "drift_alerts_chart")
    table(alerts, "drift_alerts", filters, key="drift_alerts_table")
    for i, link in enumerate(alert_links(report, filters, ALERT_LINKS)):
        link_button(link.label, link.page, link.filters, widget_key=f"drift_alert_{i}")


def _distribution(filters: Filters, marks: list[str]) -> None:
    st.subheader("Label distribution over time")
    shares = access.query(tree_view.weekly_shares, filters)
    where = f"inside {filters.branch}" if filters.branch else "at the top level"
    fig = charts.trend(shares, "week", "share", f"Share of answers per week {where}", "Share of answers",
                       series="title")
    chart(charts.mark_weeks(fig, marks, "tree changed"), "drift_shares", filters, "week")
    table(shares, "weekly_label_shares", filters, key="drift_shares_table")


def _over_time(filters: Filters, report: drift.DriftReport, marks: list[str]) -> None:
    st.subheader("Agreement and confidence over time")
    agree, confidence = report.agreement, report.confidence
    branches = access.call(filter_options).branches
    rank = {b[0]: i for i, b in enumerate(branches)}
    # In tree order, as the sidebar lists them; branches of older tree versions last.
    present = sorted({*agree["branch"], *confidence["branch"]}, key=lambda b: (rank.get(b, len(rank)), b))
    depths = {b[0]: b[2] for b in branches}
    drawn = st.multiselect("Branches to draw", present, default=shallowest(present, depths), key="drift_branches",
                           help="Top-level branches by default; every branch is in the tables below.")
    left, right = st.columns(2)
    with left:
        fig = charts.trend(agree[agree["branch"].isin(drawn)], "week", "alpha", "Agreement (alpha) per week and branch",
                           "Alpha", series="branch")
        chart(charts.mark_weeks(fig, marks, "tree changed"), "drift_agreement", filters, "week")
    with right:
        fig = charts.trend(confidence[confidence["branch"].isin(drawn)], "week", "mean",
                           "Mean annotator confidence per week and branch", "Confidence", series="branch")
        chart(charts.mark_weeks(fig, marks, "tree changed"), "drift_confidence", filters, "week")
    table(agree, "agreement_drift", filters, key="drift_agreement_table")
    table(confidence, "confidence_drift", filters, key="drift_confidence_table")


def _model(filters: Filters, report: drift.DriftReport, marks: list[str]) -> None:
    st.subheader("Model against consensus over time")
    model = report.model
    if model.empty:
        empty_state("No dated model predictions for items in these filters, so model drift cannot be followed.",
                    "Ingest predictions with created_at (`labelgov ingest predictions FILE`), or widen the filters.")
        return
    fig = charts.trend(model, "week", "rate", "Share of items where the model's label differs from consensus, "
                       "per week and top-level branch", "Share of items disagreeing", series="branch")
    chart(charts.mark_weeks(fig, marks, "tree changed"), "drift_model", filters, "week")
    table(model, "model_disagreement_drift", filters, key="drift_model_table")


def _annotators(filters: Filters, report: drift.DriftReport, marks: list[str]) -> None:
    st.subheader("Annotators over time")
    people = report.annotators
    if people.empty:
        empty_state("No annotator has answers both in the reference weeks and after them in these filters.",
                    "Widen the dates so that they span more than the reference weeks, or ingest dated annotations.")
        return
    everyone = sorted(people["annotator_id"].astype(str).unique())
    drawn = st.multiselect("Annotators to draw", everyone, default=default_annotators(people, report.alerts),
                           key="drift_annotators", help="By default the annotators with a drift alert, else those "
                           "whose agreement with consensus fell most.")
    fig = charts.trend(people[people["annotator_id"].isin(drawn)], "week", "rate",
                       "Share of each annotator's answers equal to consensus, per week", "Share agreeing",
                       series="annotator_id")
    chart(charts.mark_weeks(fig, marks, "tree changed"), "drift_annotators_chart", filters, "week")
    table(people, "annotator_drift", filters, key="drift_annotators_table")


def render(filters: Filters) -> None:
    st.title("Drift")
    marks: list[str] = []
    with guarded("Finding tree version changes…"):
        marks = _version_weeks()
    report: drift.DriftReport | None = None
    with guarded("Comparing each week with its reference…"):
        # One computation for every drift view of these filters, shared with the overview's alerts.
        report = access.query(drift.drift_report, filters)
    if report is None:
        return
    _reference(report)
    with guarded("Drawing the drift matrix…"):
        _matrix(filters, report, marks)
    with guarded("Listing alerts…"):
        _alerts(filters, report)
    with guarded("Following the label distribution…"):
        _distribution(filters, marks)
    with guarded("Following agreement and confidence…"):
        _over_time(filters, report, marks)
    with guarded("Following the model against consensus…"):
        _model(filters, report, marks)
    with guarded("Following each annotator…"):
        _annotators(filters, report, marks)
