"""Small pieces every page uses: state banners, empty states, downloads, tiles."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from dashboard import access
from queries.filters import Filters
from queries.refresh import is_stale, refreshed_version


def announce_state() -> None:
    """Say when the derived tables are missing or older than the data, with the command that fixes it."""
    with access.reading() as con:
        never = refreshed_version(con) is None
        stale = is_stale(con)
    if never:
        st.warning("The analytics have not been computed for this warehouse yet: run `labelgov refresh`.")
    elif stale:
        st.info("New data arrived since the last refresh; figures below predate it. Run `labelgov refresh`.")


def empty_state(what: str, remedy: str) -> None:
    """One sentence saying what is missing and what to ingest or change."""
    st.info(f"{what} {remedy}")


def download_buttons(frame: pd.DataFrame, name: str, filters: Filters, key: str) -> None:
    """CSV and Parquet downloads that record the filters that produced them."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    provenance = {"table": name, "filters": filters.to_query_params(), "exported_at": stamp}
    left, right = st.columns(2)
    csv = "# " + json.dumps(provenance, sort_keys=True) + "\n" + frame.to_csv(index=False)
    left.download_button("Download CSV", csv, file_name=f"{name}.csv", mime="text/csv", key=key + "_csv")
    buffer = io.BytesIO()
    table = frame.copy()
    table.attrs = {}
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"labelgov": json.dumps(provenance)})
    pq.write_table(arrow, buffer)
    right.download_button(
        "Download Parquet",
        buffer.getvalue(),
        file_name=f"{name}.parquet",
        mime="application/octet-stream",
        key=key + "_parquet",
    )
