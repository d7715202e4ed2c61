"""Small pieces every page uses: state banners, empty states, downloads, tiles."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from dashboard import access, filters_ui
from dashboard.selection import Dimension, selection_to_drill
from queries.errors import LabelgovError
from queries.filters import Filters


def announce_state() -> None:
    """Say when the derived tables are missing or older than the data, with the command that fixes it."""
    state = access.begin_run()
    never, stale = state.never_refreshed, state.stale
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


PAGES_KEY = "labelgov_pages"
ITEM_PARAM = "item"
ITEM_ID = re.compile(r"^[\w.:@/+-]{1,200}$")


def register_pages(pages: dict[str, st.Page]) -> None:
    """The app records this session's pages so that a view can send the reader to another one."""
    st.session_state[PAGES_KEY] = pages


def page_for(key: str) -> st.Page | None:
    return st.session_state.get(PAGES_KEY, {}).get(key)


def go_to(key: str, filters: Filters, item: str | None = None) -> None:
    """Switch to another page of this role with ``filters`` in force (and in its URL); no-op if not allowed."""
    page = page_for(key)
    if page is None:
        st.warning("That page is not available to your role.")
        return
    filters_ui.set_filters(filters)
    params = filters.to_query_params()
    if item is not None:
        params[ITEM_PARAM] = item
    for widget in filters_ui.WIDGET_KEYS:
        st.session_state.pop(widget, None)
    st.switch_page(page, query_params=params)


def link_button(label: str, key: str, filters: Filters, widget_key: str, item: str | None = None) -> None:
    """A button that opens page ``key`` with the given filters, shown only when the role has that page."""
    if page_for(key) is not None and st.button(label, key=widget_key, icon=":material/arrow_forward:"):
        go_to(key, filters, item)


def narrowed(filters: Filters, **update: Any) -> Filters:
    """``filters`` with some fields replaced, validated again: the values come from table rows, not the sidebar."""
    return Filters.model_validate({**filters.model_dump(), **update})


# The sidebar's names for Filters fields, in sidebar order, for sentences about which filters a number follows.
FILTER_LABELS = {
    "start": "Date range",
    "end": "Date range",
    "tree_version": "Tree version",
    "branch": "Branch",
    "sources": "Source",
    "segments": "Segment",
    "tiers": "Annotator tier",
    "stages": "Stage",
    "annotators": "Annotators",
}


def filter_names(fields: list[str]) -> str:
    """Filters field names as the sidebar calls them, once each, in sidebar order: "Annotator tier and Stage"."""
    names = list(dict.fromkeys(FILTER_LABELS[f] for f in FILTER_LABELS if f in fields))
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def chart(fig: go.Figure, key: str, filters: Filters | None = None, dimension: Dimension | None = None) -> None:
    """Draw a figure; with a ``dimension`` a selection narrows the filters, or opens the selected item."""
    if dimension is None or filters is None:
        st.plotly_chart(fig, key=key, config={"displaylogo": False})
        return
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode=("points", "box"),
                            config={"displaylogo": False})
    drill = selection_to_drill(event, dimension, filters)
    if drill.item_id is not None:
        go_to("disagreements", filters, drill.item_id)
    elif drill.changed(filters):
        filters_ui.apply_filters(drill.filters)


def table(frame: pd.DataFrame, name: str, filters: Filters, key: str, **kwargs: Any) -> Any:
    """A table with its CSV and Parquet downloads; extra arguments go to st.dataframe (e.g. on_select)."""
    event = st.dataframe(frame, hide_index=True, key=key, **kwargs)
    download_buttons(frame, name, filters, key=key + "_dl")
    return event


def selected_value(event: Any, frame: pd.DataFrame, column: str) -> str | None:
    """``column`` of the first row selected in a table drawn with on_select; None when nothing is selected."""
    selection = getattr(event, "selection", None)
    rows = getattr(selection, "rows", None) or []
    if not rows or int(rows[0]) >= len(frame):
        return None
    return str(frame.iloc[int(rows[0])][column])


def fmt(value: float | None, kind: str) -> str:
    """A number as people read it: counts with separators, shares as percentages, money with 2 decimals, hours."""
    if value is None:
        return "n/a"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "share":
        return f"{value:.1%}"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "hours":
        return f"{value:,.1f} h"
    return f"{value:.3f}"


def fmt_delta(delta: float | None, kind: str) -> str | None:
    if delta is None:
        return None
    if kind == "share":
        return f"{delta * 100:+.1f} pp"
    if kind == "count":
        return f"{delta:+,.0f}"
    if kind == "money":
        return f"{delta:+,.2f}"
    return f"{delta:+.3f}"


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """A spinner around slow work; an expected fault inside becomes one readable message, not a traceback."""
    try:
        with st.spinner(what):
            yield
    except LabelgovError as exc:
        st.error(str(exc))
