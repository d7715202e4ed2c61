"""Who is looking at the dashboard.

Until sign-in is configured the app runs in an explicit local mode: one identity and role from
configuration (``LABELGOV_USER`` / ``LABELGOV_ROLE``, or ``[labelgov] role`` in .streamlit/secrets.toml),
never from a widget that a visitor could change.
"""

from __future__ import annotations

import getpass
import os

import streamlit as st
from pydantic import BaseModel

from dashboard.navigation import Role
from queries.errors import LabelgovError


class Identity(BaseModel):
    user: str
    role: Role
    local_mode: bool = True


def _configured_role() -> str:
    env = os.environ.get("LABELGOV_ROLE")
    if env:
        return env
    try:
        return str(st.secrets.get("labelgov", {}).get("role", "analyst"))
    except (FileNotFoundError, KeyError, AttributeError):
        return "analyst"


def current_identity() -> Identity:
    raw = _configured_role().strip().lower()
    try:
        role = Role(raw)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in Role)
        raise LabelgovError(f"LABELGOV_ROLE={raw!r} is not a role; use one of {allowed}") from exc
    user = os.environ.get("LABELGOV_USER") or getpass.getuser()
    return Identity(user=user, role=role, local_mode=True)
