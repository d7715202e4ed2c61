"""Streamlit entry point: identity, role-filtered navigation, the global filters, then the page.

Run with `labelgov serve`. Pages live in dashboard/views/ (not pages/, which Streamlit would route by
itself); each page module exposes ``render(filters)``.
"""

from __future__ import annotations

import importlib

import streamlit as st

from dashboard import access, filters_ui
from dashboard.components import announce_state, empty_state, register_pages
from dashboard.identity import current_identity
from dashboard.navigation import PageSpec, pages_for
from queries.errors import LabelgovError

st.set_page_config(page_title="labelgov", page_icon=":material/label:", layout="wide")


def _page(spec: PageSpec, default: bool) -> st.Page:
    def run() -> None:
        module = importlib.import_module("dashboard.views." + spec.key)
        filters = filters_ui.sidebar()
        state = st.session_state.get(access.RUN_STATE)
        if isinstance(state, access.RunState) and state.never_refreshed:
            st.title(spec.title)
            empty_state("This page reads the derived analytics, which are not computed yet.", "Run `labelgov refresh`.")
            return
        module.render(filters)

    run.__name__ = spec.key
    return st.Page(run, title=spec.title, icon=spec.icon, url_path=spec.key, default=default)


def main() -> None:
    try:
        identity = current_identity()
    except LabelgovError as exc:
        st.error(str(exc))
        st.stop()
    grouped = pages_for(identity.role)
    first = True
    nav: dict[str, list[st.Page]] = {}
    by_key: dict[str, st.Page] = {}
    for section, specs in grouped.items():
        nav[section] = []
        for spec in specs:
            by_key[spec.key] = _page(spec, default=first)
            nav[section].append(by_key[spec.key])
            first = False
    register_pages(by_key)
    page = st.navigation(nav)
    with st.sidebar:
        mode = "local mode" if identity.local_mode else "signed in"
        st.caption(f"{identity.user} · {identity.role.value} · {mode}")
    try:
        announce_state()
        page.run()
    except LabelgovError as exc:
        st.error(str(exc))


main()
