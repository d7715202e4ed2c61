"""The global filters in the sidebar, mirrored in the URL.

The URL is the source of truth on load (so a bookmarked or shared link reproduces the view exactly)
and is rewritten from the widgets after every change. Query parameters are untrusted strings: they go
through the Filters model, and a bad link is reported and ignored rather than crashing the page.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import access
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.options import FilterOptions, filter_options

STATE_KEY = "labelgov_filters"
WIDGET_KEYS = ("f_dates", "f_version", "f_branch", "f_sources", "f_segments", "f_tiers", "f_stages", "f_annotators")


def _from_url() -> Filters:
    try:
        return Filters.from_query_params({k: st.query_params.get_all(k) for k in st.query_params})
    except LabelgovError as exc:
        st.sidebar.warning(f"Ignored the link's filters: {exc}")
        return Filters()


def current_filters() -> Filters:
    """The filters in force for this run: the session's, else the URL's."""
    saved = st.session_state.get(STATE_KEY)
    return saved if isinstance(saved, Filters) else _from_url()


def set_filters(filters: Filters) -> None:
    """Record the filters for this session and mirror them in the URL."""
    st.session_state[STATE_KEY] = filters
    _write_url(filters)


def apply_filters(filters: Filters) -> None:
    """Replace the filters from outside the sidebar (a chart selection, a link) and rerun.

    The widgets are reset so that they are drawn again from the new filters instead of keeping
    their previous values.
    """
    for key in WIDGET_KEYS:
        st.session_state.pop(key, None)
    set_filters(filters)
    st.rerun()


def _write_url(filters: Filters) -> None:
    wanted = filters.to_query_params()
    for key in [k for k in st.query_params if k in Filters.model_fields and k not in wanted]:
        del st.query_params[key]
    for key, value in wanted.items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value


def _multiselect(label: str, options: list[str], chosen: tuple[str, ...], key: str) -> tuple[str, ...]:
    known = [v for v in chosen if v in options]
    return tuple(st.multiselect(label, options, default=known, key=key))


def _version_help(as_of: int | None) -> str:
    """The filter is easily read as "show tree version N": say that it selects answers, not the tree."""
    text = "Keeps only the answers given under this tree version. It does not change the tree shown"
    if as_of is None:
        return text + "."
    return (
        f"{text}: every answer is still mapped to tree v{as_of}, the version the analytics are computed in "
        "(`labelgov refresh --as-of VERSION` chooses it)."
    )


def sidebar(options: FilterOptions | None = None) -> Filters:
    """Draw the filter widgets and return the validated filters."""
    opts = options if options is not None else access.call(filter_options)
    current = current_filters()
    with st.sidebar.expander("Filters", expanded=not current.is_empty()):
        values: dict[str, Any] = {}
        if opts.first_day and opts.last_day:
            start = current.start or opts.first_day
            end = current.end or opts.last_day
            picked = st.date_input(
                "Date range",
                value=(max(start, opts.first_day), min(end, opts.last_day)),
                min_value=opts.first_day,
                max_value=opts.last_day,
                key="f_dates",
            )
            if isinstance(picked, tuple) and len(picked) == 2:
                s, e = picked
                values["start"] = s if s != opts.first_day else None
                values["end"] = e if e != opts.last_day else None
        versions = ["all", *[str(v) for v in opts.tree_versions]]
        chosen_version = str(current.tree_version) if current.tree_version else "all"
        version = st.selectbox(
            "Tree version",
            versions,
            index=versions.index(chosen_version) if chosen_version in versions else 0,
            key="f_version",
            help=_version_help(opts.as_of_version),
        )
        values["tree_version"] = None if version == "all" else int(version)
        branch_ids = ["(whole tree)", *[b[0] for b in opts.branches]]
        titles = {b[0]: ("  " * (b[2] - 1)) + b[1] for b in opts.branches}
        branch = st.selectbox(
            "Branch",
            branch_ids,
            index=branch_ids.index(current.branch) if current.branch in branch_ids else 0,
            format_func=lambda v: titles.get(v, v),
            key="f_branch",
        )
        values["branch"] = None if branch == "(whole tree)" else branch
        values["sources"] = _multiselect("Source", opts.sources, current.sources, "f_sources")
        values["segments"] = _multiselect("Segment", opts.segments, current.segments, "f_segments")
        values["tiers"] = _multiselect("Annotator tier", opts.tiers, current.tiers, "f_tiers")
        values["stages"] = _multiselect("Stage", opts.stages, current.stages, "f_stages")
        values["annotators"] = _multiselect("Annotators", opts.annotators, current.annotators, "f_annotators")
        if st.button("Reset filters", key="f_reset"):
            apply_filters(Filters())
    filters = Filters.model_validate(values)
    set_filters(filters)
    return filters

