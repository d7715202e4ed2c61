"""Who is looking at the dashboard, and with which role.

Two modes, chosen by whether ``[auth]`` is in .streamlit/secrets.toml:

- sign-in: Streamlit's OpenID Connect login (``st.login``). The account is the provider's ``email``
  claim, or its ``sub`` when it sends no email or says the email is unverified, and the role is
  whatever the roles table grants that account, read fresh on every run so that a revocation takes
  effect on the next click. An account without a grant gets a role of None and sees only a page
  saying whom to ask.
- local: no sign-in configured. One identity and role from configuration (``LABELGOV_USER`` /
  ``LABELGOV_ROLE``, or ``user`` / ``role`` under ``[labelgov]`` in .streamlit/secrets.toml), never
  from a widget a visitor could change. The role only chooses the pages; governance actions are still
  checked against the roles table for that user.

``resolve`` decides from plain inputs, so every branch is testable without a provider.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import streamlit as st
from pydantic import BaseModel

from dashboard import access
from governance import roles
from governance.roles import Role
from queries.errors import LabelgovError

ENV_USER = "LABELGOV_USER"
ENV_ROLE = "LABELGOV_ROLE"
LOCAL_DEFAULT_ROLE = Role.ANALYST
_RUN_IDENTITY = "labelgov_identity"


class Identity(BaseModel):
    user: str
    # None: signed in, but the roles table grants this account nothing.
    role: Role | None
    local_mode: bool


def account_of(user_info: Mapping[str, Any]) -> str | None:
    """The roles-table key for a signed-in account: a verified email, else the subject.

    An email the provider marks unverified is not trusted as a key, since anyone could claim one.
    """
    email = user_info.get("email")
    if isinstance(email, str) and email and user_info.get("email_verified") is not False:
        return email
    sub = user_info.get("sub")
    return str(sub) if sub else None


def local_identity(env: Mapping[str, str], settings: Mapping[str, Any]) -> Identity:
    """The configured local identity: the environment wins over ``[labelgov]`` in the secrets."""
    user = env.get(ENV_USER) or str(settings.get("user") or "") or _login_name()
    role = env.get(ENV_ROLE) or str(settings.get("role") or "") or LOCAL_DEFAULT_ROLE.value
    return Identity(
        user=roles.user_id(user, ENV_USER if env.get(ENV_USER) else "[labelgov] user"),
        role=roles.parse_role(role, ENV_ROLE if env.get(ENV_ROLE) else "[labelgov] role"),
        local_mode=True,
    )


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def resolve(
    *,
    sign_in: bool,
    user_info: Mapping[str, Any],
    role_of: Callable[[str], Role | None],
    local: Callable[[], Identity],
) -> Identity | None:
    """This visitor's identity; None when sign-in is configured and they have not signed in."""
    if not sign_in:
        return local()
    if not user_info.get("is_logged_in"):
        return None
    account = account_of(user_info)
    if account is None:
        raise LabelgovError(
            "the sign-in provider sent neither an email nor a subject (sub) claim: add the `openid` and "
            "`email` scopes under [auth] in .streamlit/secrets.toml"
        )
    return Identity(user=account, role=role_of(roles.user_id(account, "signed-in account")), local_mode=False)


# --- reading the configuration ----------------------------------------------------------------------


def _secrets_section(name: str) -> Mapping[str, Any]:
    """A section of the secrets; a secrets file that exists but cannot be read is an error, never local mode.

    Streamlit reports a missing file and an unparsable one with the same exception, and falling back to
    local mode because of a typo in [auth] would open the dashboard to anyone who can reach it.
    """
    try:
        section = st.secrets.get(name)
    except FileNotFoundError as exc:
        if any(Path(path).is_file() for path in st.get_option("secrets.files")):
            raise LabelgovError(f"{exc} (see .streamlit/secrets.toml.example)") from None
        return {}
    return section if isinstance(section, Mapping) else {}


def sign_in_configured() -> bool:
    """Sign-in is on exactly when the secrets hold an ``[auth]`` section (what ``st.login`` reads)."""
    return bool(_secrets_section("auth"))


def _table_role(user: str) -> Role | None:
    with access.reading() as con:
        return roles.lookup_role(con, user)


def establish() -> Identity | None:
    """Resolve the identity for this script run and keep it for the views that act on it."""
    identity = resolve(
        sign_in=sign_in_configured(),
        user_info=st.user.to_dict(),
        role_of=_table_role,
        local=lambda: local_identity(os.environ, _secrets_section("labelgov")),
    )
    st.session_state[_RUN_IDENTITY] = identity
    return identity


def current_identity() -> Identity:
    """The identity this run resolved; views call this to act as the person looking at the page."""
    identity = st.session_state.get(_RUN_IDENTITY)
    if not isinstance(identity, Identity):
        identity = establish()
    if identity is None or identity.role is None:
        raise LabelgovError("sign in with an account that has a role first")
    return identity
