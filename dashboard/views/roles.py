"""Roles: who holds which role, and an admin's controls to grant, change or revoke one.

Only admins get this page, but the page is not the check: every change goes through governance.roles,
which looks up the acting user's role again, keeps the last admin, and writes the audit event with the
signed-in user as actor in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import access
from dashboard.components import empty_state, guarded, table
from dashboard.identity import current_identity
from governance import roles
from governance.roles import Role, RoleGrant
from queries.errors import LabelgovError
from queries.filters import Filters


def _change(action: Callable[..., Any], done: str, **kwargs: Any) -> bool:
    """Run one role change as the signed-in admin; a refusal is shown, never raised. True if it changed."""
    admin = current_identity().user
    try:
        with access.writing() as con:
            event = action(con, admin_user=admin, **kwargs)
    except LabelgovError as exc:
        st.error(str(exc))
        return False
    if event is None:
        st.info(f"{kwargs['user']} already has role {kwargs['role']}; nothing changed.")
        return False
    st.success(f"{done} (audit event {event.seq}).")
    return True


def _grant_controls() -> bool:
    st.subheader("Grant or change a role")
    user = st.text_input(
        "Account", key="roles_user",
        help="With sign-in: the email the provider sends (its subject when it sends no email). "
        "In local mode: the LABELGOV_USER name.",
    )
    role = st.selectbox("Role", list(Role), format_func=lambda r: r.value, key="roles_role")
    if not st.button("Grant", key="roles_grant", type="primary"):
        return False
    account = user.strip()
    return _change(roles.grant, f"{account} now has role {role.value}", user=account, role=role)


def _revoke_controls(grants: list[RoleGrant]) -> bool:
    st.subheader("Revoke a role")
    if not grants:
        st.caption("Nobody holds a role yet.")
        return False
    user = st.selectbox("Account", [g.user_id for g in grants], key="roles_revoke_user")
    if not st.button("Revoke", key="roles_revoke"):
        return False
    return _change(roles.revoke, f"{user} no longer has a role", user=user)


def _listing(grants: list[RoleGrant], filters: Filters) -> None:
    if not grants:
        empty_state("No roles granted yet.", "The first grant must make an admin: "
                    "`labelgov roles grant YOU admin --as YOU`.")
        return
    frame = pd.DataFrame([g.model_dump(mode="json") for g in grants])
    table(frame, "roles", filters, key="roles_table")


def render(filters: Filters) -> None:
    st.title("Roles")
    st.caption("Each change is checked again by the governance layer (admins only; the last admin stays) and "
               "recorded in the audit log with you as the actor. `labelgov roles` does the same from a shell.")
    listing = st.container()
    with guarded("Loading roles…"):
        grants = access.call(roles.list_roles)
        left, right = st.columns(2)
        with left:
            changed = _grant_controls()
        with right:
            changed = _revoke_controls(grants) or changed
        if changed:
            grants = access.call(roles.list_roles)
        with listing:
            _listing(grants, filters)
