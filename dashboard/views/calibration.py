"""Calibration: does the model's stated confidence match how often it is right, per level, and what fixes it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import access, charts
from dashboard.components import empty_state, fmt, guarded, table
from queries import calibration
from queries.filters import Filters

AGAINST = {"Gold labels": "gold", "Crowd soft labels": "soft"}


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


def _fit(filters: Filters, model: str | None) -> str | None:
    """The fitted temperature's figures; returns the model shown, None when there is nothing to show."""
    fit = access.query(calibration.fit_temperature, filters, model=model)
    if fit is None:
        empty_state(
            "No model predictions on gold items in scope.",
            "Ingest predictions (`labelgov ingest predictions FILE`) and gold labels (`labelgov ingest gold "
            "FILE`), then run `labelgov refresh`.",
        )
        return None
    cols = st.columns(4)
    cols[0].metric("Model", fit.model)
    cols[1].metric(
        "Fitted temperature",
        fmt(fit.temperature, "ratio"),
        help="Above 1 the model is over-confident; below 1 under-confident.",
    )
    cols[2].metric("Log loss before → after", f"{fit.nll_before:.3f} → {fit.nll_after:.3f}")
    cols[3].metric("Gold items", f"{fit.n:,}")
    return fit.model


def _diagram(filters: Filters, model: str) -> None:
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


def _table(filters: Filters, model: str) -> None:
    st.subheader("Calibration error and Brier score")
    frame = access.query(calibration.calibration_table, filters, model=model)
    table(frame, "calibration", filters, key="cal_table")


def render(filters: Filters) -> None:
    st.title("Calibration")
    model: str | None = None
    with guarded("Fitting the temperature…"):
        model = _fit(filters, _model())
    if model is None:
        return
    with guarded("Binning confidence…"):
        _diagram(filters, model)
    with guarded("Scoring calibration…"):
        _table(filters, model)
