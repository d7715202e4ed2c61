"""Who the dashboard thinks is looking: local mode, signed out, signed in with and without a role.

``resolve`` is checked directly with the roles table of a real warehouse as the lookup; the app is
checked in AppTest, which cannot run an OpenID Connect round trip but can seed ``st.user`` and the
secrets, so every branch the browser test cannot reach cheaply is covered here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.cli.serve import LOOPBACK, auth_in_files, bind_address
from dashboard.identity import Identity, account_of, local_identity, resolve
from dashboard.navigation import PAGES, ROLE_PAGES
from governance import roles
from governance.roles import Role
from queries.connection import connect, memory
from queries.errors import LabelgovError

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a-test-cookie-secret-of-some-length",
    "client_id": "labelgov-test",
    "client_secret": "test-secret",
    "server_metadata_url": "http://localhost:9/.well-known/openid-configuration",
}


@pytest.fixture
def table() -> duckdb.DuckDBPyConnection:
    con = memory()
    roles.grant(con, admin_user="ann@example.org", user="ann@example.org", role="admin")
    for user, role in [("sam@example.org", "steward"), ("lee@example.org", "leadership"), ("42", "analyst")]:
        roles.grant(con, admin_user="ann@example.org", user=user, role=role)
    return con


def lookup(con: duckdb.DuckDBPyConnection) -> Callable[[str], Role | None]:
    return lambda user: roles.role_of(con, user)


def never_local() -> Identity:
    raise AssertionError("the local identity must not be consulted once sign-in is configured")


def test_local_mode_uses_the_configuration_and_never_the_provider(table: duckdb.DuckDBPyConnection) -> None:
    asked: list[str] = []

    def spy(user: str) -> Role | None:
        asked.append(user)
        return roles.role_of(table, user)

    signed_in = {"is_logged_in": True, "email": "sam@example.org"}
    found = resolve(sign_in=False, user_info=signed_in, role_of=spy,
                    local=lambda: local_identity({"LABELGOV_USER": "kim", "LABELGOV_ROLE": "Auditor"}, {}))
    assert found == Identity(user="kim", role=Role.AUDITOR, local_mode=True)
    assert asked == []


def test_signed_out_visitor_has_no_identity(table: duckdb.DuckDBPyConnection) -> None:
    for user_info in ({}, {"is_logged_in": False}, {"email": "test@example.com"}):
        assert resolve(sign_in=True, user_info=user_info, role_of=lookup(table), local=never_local) is None


def test_signed_in_role_comes_from_the_roles_table(table: duckdb.DuckDBPyConnection) -> None:
    def who(**claims: object) -> Identity | None:
        return resolve(sign_in=True, user_info={"is_logged_in": True, **claims}, role_of=lookup(table),
                       local=never_local)

    assert who(email="sam@example.org", sub="s-1") == Identity(user="sam@example.org", role=Role.STEWARD,
                                                               local_mode=False)
    # leadership and analyst live in the same table as the governance roles
    assert who(email="lee@example.org").role is Role.LEADERSHIP
    assert who(sub="42").role is Role.ANALYST
    assert who(email="stranger@example.org") == Identity(user="stranger@example.org", role=None, local_mode=False)
    roles.revoke(table, admin_user="ann@example.org", user="sam@example.org")
    assert who(email="sam@example.org").role is None


def test_account_is_the_verified_email_else_the_subject() -> None:
    assert account_of({"email": "a@x.org", "sub": "1"}) == "a@x.org"
    assert account_of({"email": "a@x.org", "email_verified": True, "sub": "1"}) == "a@x.org"
    assert account_of({"email": "a@x.org", "email_verified": False, "sub": "1"}) == "1"
    assert account_of({"sub": "1"}) == "1"
    assert account_of({"name": "A"}) is None
    with pytest.raises(LabelgovError, match="neither an email nor a subject"):
        resolve(sign_in=True, user_info={"is_logged_in": True, "name": "A"}, role_of=lambda u: None,
                local=never_local)


def test_local_identity_environment_wins_over_secrets_and_bad_values_say_where() -> None:
    settings = {"user": "sec", "role": "steward"}
    assert local_identity({}, settings) == Identity(user="sec", role=Role.STEWARD, local_mode=True)
    assert local_identity({"LABELGOV_USER": "env", "LABELGOV_ROLE": "viewer"}, settings).model_dump() == {
        "user": "env", "role": Role.VIEWER, "local_mode": True}
    assert local_identity({"LABELGOV_USER": "env"}, {}).role is Role.ANALYST
    with pytest.raises(LabelgovError, match="LABELGOV_ROLE 'superuser' is not a role: use one of viewer, leadership"):
        local_identity({"LABELGOV_ROLE": "superuser"}, {})
    with pytest.raises(LabelgovError, match=r"\[labelgov\] role 'boss' is not a role"):
        local_identity({}, {"role": "boss"})
    with pytest.raises(LabelgovError, match="LABELGOV_USER 'bad\\\\nname' is not a valid user id"):
        local_identity({"LABELGOV_USER": "bad\nname"}, {})


def test_serve_binds_loopback_unless_sign_in_is_configured(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[labelgov]\nrole = "viewer"\n')
    assert not auth_in_files([tmp_path / "missing.toml", secrets])
    assert bind_address(None, sign_in=False) == LOOPBACK
    assert bind_address("::1", sign_in=False) == "::1"
    with pytest.raises(LabelgovError, match=r"--address 0\.0\.0\.0 needs sign-in"):
        bind_address("0.0.0.0", sign_in=False)
    secrets.write_text('[auth]\nredirect_uri = "http://x/oauth2callback"\n')
    assert auth_in_files([secrets])
    assert bind_address("0.0.0.0", sign_in=True) == "0.0.0.0"
    assert bind_address(None, sign_in=True) == LOOPBACK
    secrets.write_text("[auth\n")
    with pytest.raises(LabelgovError, match="is not valid TOML"):
        auth_in_files([secrets])


# --- the app in AppTest ------------------------------------------------------------------------------


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """A new warehouse (schema only, analytics never computed) with an admin and a viewer."""
    db = tmp_path / "w.duckdb"
    with connect(db) as con:
        roles.grant(con, admin_user="ann@example.org", user="ann@example.org", role="admin")
        roles.grant(con, admin_user="ann@example.org", user="val@example.org", role="viewer")
    return db


def app(db: Path, monkeypatch: pytest.MonkeyPatch, *, user: dict[str, object] | None = None) -> AppTest:
    """The app as ``user`` would see it with sign-in configured, or in local mode when ``user`` is None."""
    monkeypatch.setenv("LABELGOV_DB", str(db))
    monkeypatch.setenv("LABELGOV_USER", "kim")
    monkeypatch.setenv("LABELGOV_ROLE", "admin")
    at = AppTest.from_file(APP, default_timeout=120)
    if user is not None:
        at.secrets["auth"] = AUTH
        at.user = user
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_names(at: AppTest) -> set[str]:
    return {info.get("page_name") for info in at._registered_pages.values()} & {p.title for p in PAGES.values()}


def test_local_mode_banner_on_every_page(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(warehouse, monkeypatch)
    assert page_names(at) == {PAGES[k].title for k in ROLE_PAGES[Role.ADMIN]} == {p.title for p in PAGES.values()}
    seen = set()
    for page_hash, info in list(at._registered_pages.items()):
        if info.get("page_name") not in page_names(at):
            continue
        at._page_hash = page_hash
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        banner = [i.value for i in at.info if "Local mode" in i.value]
        assert len(banner) == 1, f"{info['page_name']}: {[i.value for i in at.info]}"
        assert "**kim**" in banner[0] and "**admin**" in banner[0] and "Sign-in is not configured" in banner[0]
        seen.add(info["page_name"])
    assert seen == {p.title for p in PAGES.values()}
    assert "kim · admin · local mode" in [c.value for c in at.sidebar.caption]


def test_sign_in_configured_shows_only_the_sign_in_page(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(warehouse, monkeypatch, user={})
    assert [t.value for t in at.title] == ["labelgov"]
    assert [b.label for b in at.button] == ["Sign in"]
    assert page_names(at) == set()
    assert not any("Local mode" in i.value for i in at.info)


def test_account_without_role_sees_only_whom_to_ask(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(warehouse, monkeypatch, user={"is_logged_in": True, "email": "nobody@example.org", "sub": "n-1"})
    assert [t.value for t in at.title] == ["No role yet"]
    assert "nobody@example.org" in at.warning[0].value
    assert "labelgov roles grant nobody@example.org" in at.markdown[0].value and "admin" in at.markdown[0].value
    assert [b.label for b in at.button] == ["Sign out"]
    assert page_names(at) == set()
    assert not at.dataframe and not at.metric and not at.sidebar.caption


def test_signed_in_pages_follow_the_table_not_the_local_role(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(warehouse, monkeypatch, user={"is_logged_in": True, "email": "val@example.org"})
    assert page_names(at) == {PAGES[k].title for k in ROLE_PAGES[Role.VIEWER]}
    assert "Governance" not in page_names(at) and "Roles" not in page_names(at)
    assert "val@example.org · viewer · signed in" in [c.value for c in at.sidebar.caption]
    assert not any("Local mode" in i.value for i in at.info)
    assert "Sign out" in [b.label for b in at.sidebar.button]


def test_unreadable_secrets_stop_the_app_instead_of_falling_back_to_local_mode(tmp_path: Path) -> None:
    """Streamlit treats a broken secrets.toml like a missing one; a typo in [auth] must not open the app."""
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[auth\nredirect_uri = "x"\n')
    probe = (
        "from dashboard.identity import sign_in_configured\n"
        "from queries.errors import LabelgovError\n"
        "try:\n    print('configured', sign_in_configured())\n"
        "except LabelgovError as exc:\n    print('refused', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("refused Error parsing secrets file at ") and "secrets.toml.example" in done.stdout
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[labelgov]\nrole = "viewer"\n')
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "configured False"
