"""Streamlit entry point: the warehouse at a glance until the page set lands."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from queries import info
from queries.connection import connect
from queries.errors import LabelgovError

st.set_page_config(page_title="labelgov", layout="wide")
st.title("labelgov")
try:
    with connect(read_only=True) as con:
        summary = info.summary(con)
        versions = info.tree_versions(con)
except LabelgovError as exc:
    st.error(str(exc))
    st.stop()

counts = summary["counts"]
cols = st.columns(4)
for col, key in zip(cols, ("items", "annotations", "annotators", "gold_labels"), strict=True):
    col.metric(key.replace("_", " ").capitalize(), f"{counts[key]:,}")
st.dataframe(pd.DataFrame({"table": list(counts), "rows": list(counts.values())}), hide_index=True)
st.dataframe(versions, hide_index=True)
