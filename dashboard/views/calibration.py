"""Calibration: does the model's stated confidence match how often it is right, per level and branch, against
gold and against the crowd, what a temperature would fix, and do annotators' own confidences mean anything."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import access, charts
from dashboard.components import chart, empty_state, filter_names, fmt, guarded, table
from queries import calibration
from queries.filters import Filters

AGAINST = {"Gold labels": "gold", "Crowd soft labels": "soft"}
# What an annotator's answer is checked against, as the radio reads: "An answer is right when it equals ...".
ANNOTATOR_AGAINST = {"the gold label": "gold", "the consensus label": "consensus"}
# Branch rows that stand for no branch of the tree: they stay in the table but cannot narrow the filters.
NOT_A_BRANCH = ("all", "none")


def _scope_caption(filters: Filters) -> None:
    # A prediction, a gold label and a soft label belong to the item, so an item is scored when any of its
    # answers matches, and its scores do not change.
    fields = filters.answer_fields()
    if fields:
        st.caption(
            f"{filter_names(fields)}: on the model sections these filters only choose which items are scored (items "
            "with at least one matching answer); predictions, gold and soft labels are per item and use all its "
            "answers. The annotators' confidence section filters the answers themselves."
        )


def _model() -> str | None:
    """The model version to show: versions of one classifier are calibrated apart, so the user picks one."""
    choices = access.call(calibration.models)
    if not choices:
        return None
    return st.selectbox(
        "Model version",
        choices,
        key="cal_model",
        help="Each version is scored and fitted on its own predictions; the first scored the most items.",
    )


def _effect(temperature: float) -> str:
    """What the temperature does in words; within 5% of 1 the change is too small to call a direction."""
    if temperature > 1.05:
        return "softening its probabilities: the model is over-confident"
    if temperature < 0.95:
        return "sharpening its probabilities: the model is under-confident"
    return "barely changing its probabilities: the model is about calibrated"


def _overall(scores: pd.DataFrame) -> dict[str, float | None]:
    """The overall (leaf-level) row of a calibration table, missing numbers as None so that they read n/a."""
    rows = scores[scores["scope"] == "overall"]
    columns = ["ece", "ece_after_temperature", "brier", "brier_after_temperature"]
    if rows.empty:
        return dict.fromkeys(columns)
    row = rows.iloc[0]
    return {c: None if pd.isna(row[c]) else float(row[c]) for c in columns}


def _fit(filters: Filters, model: str | None) -> str | None:
    """The fitted temperature and what it would give; returns the model shown, None when there is nothing."""
    fit = access.query(calibration.fit_temperature, filters, model=model)
    if fit is None:
        empty_state(
            "No model predictions on gold items in scope.",
            "Ingest predictions (`labelgov ingest predictions FILE`) and gold labels (`labelgov ingest gold "
            "FILE`), then run `labelgov refresh`.",
        )
        return None
    scores = access.query(calibration.calibration_table, filters, model=fit.model)
    overall = _overall(scores)
    st.subheader("Temperature scaling")
    cols = st.columns(5)
    cols[0].metric("Model", fit.model)
    cols[1].metric(
        "Fitted temperature",
        fmt(fit.temperature, "ratio"),
        help="Above 1 the model is over-confident; below 1 under-confident.",
    )
    cols[2].metric(
        "Log loss before → after",
        f"{fit.nll_before:.3f} → {fit.nll_after:.3f}",
        help="Mean negative log-likelihood of the gold leaf, in nats per item; lower is better.",
    )
    cols[3].metric(
        "Leaf ECE before → after",
        f"{fmt(overall['ece'], 'share')} → {fmt(overall['ece_after_temperature'], 'share')}",
        help="Expected calibration error at the leaf level against gold: the mean gap between stated "
        "confidence and accuracy, in percentage points; 0 is perfect.",
    )
    cols[4].metric("Gold items", f"{fit.n:,}")
    ece = f"{fmt(overall['ece'], 'share')} to {fmt(overall['ece_after_temperature'], 'share')}"
    brier = f"{fmt(overall['brier'], 'ratio')} to {fmt(overall['brier_after_temperature'], 'ratio')}"
    st.markdown(
        f"Dividing the model's log-probabilities by **T = {fmt(fit.temperature, 'ratio')}** "
        f"({_effect(fit.temperature)}) would change, on the {fit.n:,} gold items: the log loss from "
        f"{fit.nll_before:.3f} to {fit.nll_after:.3f} nats per item, the leaf-level expected calibration error "
        f"from {ece}, and the Brier score from {brier} (0 to 2, lower is better). The leaf with the highest "
        "probability stays the same, so leaf-level accuracy does not change."
    )
    return fit.model


def _diagram(filters: Filters, model: str) -> str:
    """The reliability diagram against the reference the reader picks, which is returned for the branch chart."""
    st.subheader("Reliability diagram")
    against = AGAINST[st.radio("Compare with", list(AGAINST), horizontal=True, key="cal_against")]
    scores = access.query(calibration.calibration_table, filters, model=model)
    levels = sorted(int(v) for v in scores.loc[scores["scope"] == "level", "name"].unique())
    parts = [
        access.query(calibration.reliability_bins, filters, level=lv, against=against, model=model) for lv in levels
    ]
    shown = [p for p in parts if not p.empty]
    bins = pd.concat(shown, ignore_index=True) if shown else pd.DataFrame()
    st.plotly_chart(charts.reliability_diagram(bins, "Reliability diagram per tree level"), key="cal_diagram")
    # The bins carry no model column, so the download's name says which model they are.
    table(bins, f"reliability_bins_{against}_{model}", filters, key="cal_bins")
    return against


def _table(filters: Filters, model: str) -> None:
    st.subheader("Calibration against gold, before and after temperature")
    st.caption(
        "ECE is a share of items (0 to 1); Brier is the multi-class score (0 to 2). Overall and level rows use "
        "one temperature fitted on all gold items in scope; each branch row uses a temperature fitted on that "
        "branch alone, at the leaf level."
    )
    frame = access.query(calibration.calibration_table, filters, model=model)
    table(frame, "calibration", filters, key="cal_table")


def _by_branch(filters: Filters, model: str, against: str) -> None:
    st.subheader("Per branch and tree level, against gold and against crowd soft labels")
    frame = access.query(calibration.calibration_by_branch, filters, model=model)
    reference = next(name for name, key in AGAINST.items() if key == against).lower()
    title = f"Expected calibration error per branch and tree level, against {reference}"
    branches = frame[~frame["branch"].isin(NOT_A_BRANCH) & frame["n_" + against].gt(0)]
    if branches.empty:
        source = "gold labels (`labelgov ingest gold FILE`)" if against == "gold" else "annotations"
        fig = charts.empty_figure(
            title, f"No branch has items scored against {reference} in scope: widen the filters or ingest {source}"
        )
    else:
        named = branches.assign(level_name="Level " + branches["level"].astype(str))
        fig = charts.bars(
            named,
            "branch",
            "ece_" + against,
            title,
            "Top-level branch (consensus)",
            "Expected calibration error (0 to 1)",
            ids="branch",
            series="level_name",
            hover=[("n_" + against, "Items scored")],
        )
    chart(fig, "cal_branch_chart", filters, dimension="branch")
    st.caption(
        "Select a branch to narrow the filters to it. Against soft labels every scored item with answers counts; "
        "against gold only gold items do. Branch `all` pools every item in scope; `none` is items without a "
        "consensus."
    )
    table(frame, f"calibration_by_branch_{model}", filters, key="cal_branch_table")


def _annotators(filters: Filters) -> None:
    st.subheader("Annotators' self-reported confidence")
    choice = st.radio(
        "An answer is right when it equals", list(ANNOTATOR_AGAINST), horizontal=True, key="cal_ann_against"
    )
    against = ANNOTATOR_AGAINST[choice]
    per = access.query(calibration.annotator_confidence_calibration, filters, against=against)
    if per.empty:
        empty_state(
            f"No answers in scope carry a self-reported confidence and have {choice} to compare it with.",
            "Ingest annotations with a `confidence` column (a number from 0 to 1)"
            + (", ingest gold labels or compare with the consensus label" if against == "gold" else "")
            + ", or widen the filters.",
        )
        return
    bins = access.query(calibration.annotator_confidence_bins, filters, against=against)
    fig = charts.stated_confidence_diagram(
        bins,
        f"Stated confidence against answers equal to {choice}, per annotator tier",
        "tier",
        "Share of answers right (0 to 1)",
        "No answers with a stated confidence in scope",
    )
    chart(fig, "cal_ann_diagram", filters, dimension="tier")
    st.caption(
        "Per annotator: overconfidence is mean stated confidence minus accuracy; ECE is a share (0 to 1); Brier "
        "is the binary score of confidence against being right (0 to 1). Select a tier to narrow the filters."
    )
    table(per, f"annotator_confidence_{against}", filters, key="cal_ann_table")


def render(filters: Filters) -> None:
    st.title("Calibration")
    _scope_caption(filters)
    model: str | None = None
    with guarded("Fitting the temperature…"):
        model = _fit(filters, _model())
    if model is not None:
        against = "gold"
        with guarded("Binning confidence…"):
            against = _diagram(filters, model)
        with guarded("Scoring calibration…"):
            _table(filters, model)
        with guarded("Scoring branches…"):
            _by_branch(filters, model, against)
    with guarded("Scoring annotators' confidence…"):
        _annotators(filters)
