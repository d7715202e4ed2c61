"""Drift: which branches' label distributions, agreement and confidence moved, and when the tree changed."""

from __future__ import annotations

import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, guarded, table
from queries import drift, tree_view
from queries.filters import Filters

METRICS = {"Jensen-Shannon distance": "js", "Population stability index": "psi", "Chi-squared": "chi2"}


def _version_weeks() -> list[str]:
    changes = access.call(drift.tree_version_changes)
    return [] if changes.empty else changes["week"].dropna().astype(str).str[:10].tolist()


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
    fig = charts.bars(alerts.assign(label=alerts["branch"] + " · " + alerts["metric"]), "label", "size",
                      "Drift alerts by size (select to filter to the branch)", "Alert", "Size", ids="branch",
                      hover=[("week", "Since week"), ("p_adjusted", "Adjusted p")])
    chart(fig, "drift_alerts_chart", filters, "branch")
    table(alerts, "drift_alerts", filters, key="drift_alerts_table")


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
    left, right = st.columns(2)
    with left:
        agree = report.agreement
        fig = charts.trend(agree, "week", "alpha", "Agreement (alpha) per week and branch", "Alpha", series="branch")
        chart(charts.mark_weeks(fig, marks, "tree changed"), "drift_agreement", filters, "week")
    with right:
        confidence = report.confidence
        fig = charts.trend(confidence, "week", "mean", "Mean annotator confidence per week and branch", "Confidence",
                           series="branch")
        chart(charts.mark_weeks(fig, marks, "tree changed"), "drift_confidence", filters, "week")
    table(agree, "agreement_drift", filters, key="drift_agreement_table")
    table(confidence, "confidence_drift", filters, key="drift_confidence_table")


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
    with guarded("Drawing the drift matrix…"):
        _matrix(filters, report, marks)
    with guarded("Listing alerts…"):
        _alerts(filters, report)
    with guarded("Following the label distribution…"):
        _distribution(filters, marks)
    with guarded("Following agreement and confidence…"):
        _over_time(filters, report, marks)
