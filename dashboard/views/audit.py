"""Audit log: the hash-chained record of every governance action, and whether it is still intact."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import access
from dashboard.components import empty_state, guarded, table
from governance import audit
from queries.filters import Filters


def _verification() -> None:
    result = access.call(audit.verify)
    if result.ok:
        st.success(result.message)
    else:
        st.error(result.message)


def _events(filters: Filters) -> None:
    limit = st.number_input("Newest events", min_value=10, max_value=10_000, value=200, step=50, key="audit_limit")
    events = access.call(audit.recent_events, int(limit))
    if not events:
        empty_state("The audit log is empty.", "Governance actions (`labelgov propose`, `roles grant`) write to it.")
        return
    frame = pd.DataFrame([e.model_dump(mode="json") for e in events])
    frame["payload"] = frame["payload"].astype(str)
    table(frame.iloc[::-1], "audit_log", filters, key="audit_table")


def render(filters: Filters) -> None:
    st.title("Audit log")
    with guarded("Verifying the hash chain…"):
        _verification()
    with guarded("Loading events…"):
        _events(filters)
