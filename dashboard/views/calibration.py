"""Calibration."""

from __future__ import annotations

import streamlit as st

from queries.filters import Filters


def render(filters: Filters) -> None:
    st.title("Calibration")
