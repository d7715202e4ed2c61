"""Streamlit entry point: identity, role-filtered navigation, the global filters, then the page.

Run with `labelgov serve`. Pages live in dashboard/views/ (not pages/, which Streamlit would route by
itself); each page module exposes ``render(filters)``. A visitor who is not signed in, or is signed in
without a role, never reaches st.navigation, so no page of the dashboard has a route for them.
"""

from __future__ import annotations

import importlib

import streamlit as st
from streamlit.errors import StreamlitAuthError

from dashboard import access, filters_ui
from dashboard.components import announce_state, empty_state, register_pages
from dashboard.identity import Identity, establish
from dashboard.navigation import PageSpec, pages_for
from queries.errors import LabelgovError

st.set_page_config(page_title="labelgov", page_icon=":material/label:", layout="wide")


def _page(spec: PageSpec, default: bool) -> st.Page:
    def run() -> None:
        module = importlib.import_module("dashboard.views." + spec.key)
        filters = filters_ui.sidebar()
        state = st.session_state.get(access.RUN_STATE)
        if spec.needs_analytics and isinstance(state, access.RunState) and state.never_refreshed:
            st.title(spec.title)
            empty_state("This page reads the derived analytics, which are not computed yet.", "Run `labelgov refresh`.")
            return
        module.render(filters)

    run.__name__ = spec.key
    return st.Page(run, title=spec.title, icon=spec.icon, url_path=spec.key, default=default)


def _sign_in_page() -> None:
    st.title("labelgov")
    st.write("Sign in to open the label-quality dashboard.")
    if st.button("Sign in", key="sign_in", type="primary"):
        try:
            st.login()
        except StreamlitAuthError as exc:
            st.error(f"Sign-in is misconfigured in .streamlit/secrets.toml: {exc}")


def _sign_out_button() -> None:
    if st.button("Sign out", key="sign_out"):
        st.logout()


def _no_role_page(identity: Identity) -> None:
    st.title("No role yet")
    st.warning(
        f"You are signed in as **{identity.user}**, but no role has been granted to this account, so there "
        "is nothing here you may open."
    )
    st.write(
        "Ask a labelgov admin to grant you a role, either on the dashboard's Roles page or with "
        f"`labelgov roles grant {identity.user} viewer` (or analyst, steward, …)."
    )
    _sign_out_button()


def _local_banner(identity: Identity) -> None:
    assert identity.role is not None
    st.info(
        f"**Local mode**: acting as **{identity.user}** with role **{identity.role.value}** from configuration "
        "(LABELGOV_USER / LABELGOV_ROLE or [labelgov] in .streamlit/secrets.toml). Sign-in is not configured: "
        "add an [auth] section to .streamlit/secrets.toml to require it.",
        icon=":material/computer:",
    )


def _navigation(identity: Identity) -> st.Page:
    assert identity.role is not None
    nav: dict[str, list[st.Page]] = {}
    by_key: dict[str, st.Page] = {}
    for section, specs in pages_for(identity.role).items():
        nav[section] = []
        for spec in specs:
            by_key[spec.key] = _page(spec, default=not by_key)
            nav[section].append(by_key[spec.key])
    register_pages(by_key)
    return st.navigation(nav)


def main() -> None:
    try:
        identity = establish()
    except LabelgovError as exc:
        st.error(str(exc))
        st.stop()
    if identity is None:
        _sign_in_page()
        return
    if identity.role is None:
        _no_role_page(identity)
        return
    page = _navigation(identity)
    with st.sidebar:
        mode = "local mode" if identity.local_mode else "signed in"
        st.caption(f"{identity.user} · {identity.role.value} · {mode}")
        if not identity.local_mode:
            _sign_out_button()
    if identity.local_mode:
        _local_banner(identity)
    try:
        announce_state()
        page.run()
    except LabelgovError as exc:
        st.error(str(exc))


main()
