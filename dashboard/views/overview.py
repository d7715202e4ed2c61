"""Overview: the warehouse at a glance."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import access
from queries import info
from queries.filters import Filters


def render(filters: Filters) -> None:
    st.title("Overview")
    summary = access.call(info.summary)
    counts = summary["counts"]
    cols = st.columns(4)
    for col, key in zip(cols, ("items", "annotations", "annotators", "gold_labels"), strict=True):
        col.metric(key.replace("_", " ").capitalize(), f"{counts[key]:,}")
    st.dataframe(pd.DataFrame({"table": list(counts), "rows": list(counts.values())}), hide_index=True)
