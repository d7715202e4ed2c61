"""Annotators: who is reliable (against gold and by the model), how fast and at what cost, and who agrees."""

from __future__ import annotations

import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, guarded, link_button, narrowed, table
from queries import agreement, reliability
from queries.filters import Filters


def _table(filters: Filters) -> list[str]:
    people = access.query(reliability.annotator_table, filters)
    if people.empty:
        empty_state("No annotators match these filters.", "Widen the filters or ingest annotations.")
        return []
    table(people, "annotators", filters, key="ann_table")
    if people["gold_answers"].sum() == 0:
        empty_state("No gold labels in scope, so accuracy against gold is blank; the model's estimate remains.",
                    "Ingest gold labels with `labelgov ingest gold FILE` to measure it directly.")
    else:
        fig = charts.interval_bars(
            people.sort_values("gold_accuracy"), "annotator_id", "gold_accuracy", "wilson_low", "wilson_high",
            "Accuracy against gold, with 95% intervals", "Annotator", "Accuracy on gold", ids="annotator_id",
            empty="No gold labels to measure accuracy against",
        )
        chart(fig, "ann_gold_accuracy", filters, "annotator")
    fig = charts.scatter(
        people.dropna(subset=["ds_accuracy"]), "median_duration_s", "ds_accuracy",
        "Speed against estimated accuracy (select to filter)", "Median seconds per answer", "Estimated accuracy",
        ids="annotator_id", series="tier", hover=[("answers", "Answers"), ("spammer_score", "Spammer score"),
                                                  ("cost_per_answer", "Cost per answer")],
    )
    chart(fig, "ann_speed", filters, "annotator")
    return people.sort_values("answers", ascending=False)["annotator_id"].tolist()


def _one(filters: Filters, annotators: list[str]) -> None:
    st.subheader("One annotator")
    who = st.selectbox("Annotator", annotators, key="ann_pick")
    link_button(f"Open the items of {who} in the disagreement explorer", "disagreements",
                narrowed(filters, annotators=(who,)), widget_key="ann_to_disagreements")
    left, right = st.columns(2)
    with left:
        confusion = access.query(reliability.confusion_matrix, filters, annotator_id=who)
        fig = charts.heatmap(confusion, "answered_node", "true_node", "p", f"Confusion matrix of {who}",
                             "Answered", "True label (model)", "P(answered | true)", zmin=0, zmax=1)
        st.plotly_chart(fig, key="ann_confusion")
    with right:
        over_time = access.query(reliability.reliability_over_time, filters, annotator_id=who)
        if not over_time.empty:
            over_time = over_time.assign(week=over_time["week"].astype(str).str[:10])
        long = over_time.melt(id_vars=["week"], value_vars=["gold_accuracy", "ds_agreement"],
                              var_name="measure", value_name="value").dropna() if not over_time.empty else over_time
        if not long.empty:
            long["measure"] = long["measure"].map({"gold_accuracy": "Accuracy on gold",
                                                   "ds_agreement": "Agreement with consensus"})
        st.plotly_chart(charts.trend(long, "week", "value", f"Reliability of {who} over time", "Share",
                                     series="measure"), key="ann_over_time")
    table(over_time, f"annotator_{who}_weekly", filters, key="ann_weekly")


def _pairs(filters: Filters) -> None:
    st.subheader("Pairwise agreement")
    pairs = access.query(agreement.pairwise_kappa, filters)
    fig = charts.heatmap(pairs, "annotator_b", "annotator_a", "kappa", "Cohen's kappa between the busiest annotators",
                         "Annotator", "Annotator", "Kappa", diverging=True, zmin=-1, zmax=1)
    st.plotly_chart(fig, key="ann_kappa")
    table(pairs, "pairwise_kappa", filters, key="ann_pairs")


def render(filters: Filters) -> None:
    st.title("Annotators")
    annotators: list[str] = []
    with guarded("Measuring annotator reliability…"):
        annotators = _table(filters)
    if annotators:
        with guarded("Loading the annotator's detail…"):
            _one(filters, annotators)
        with guarded("Computing pairwise kappa…"):
            _pairs(filters)
