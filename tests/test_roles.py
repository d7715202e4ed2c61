"""Roles: bootstrap, admin-only changes, refusals that name their rule, every change in the audit log, and the
admin's Roles page, which changes roles only through the same checks."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.cli import main
from dashboard.navigation import may_open
from governance import audit, roles
from governance.roles import CAPABILITIES, Capability, PermissionRefused, Role
from queries.connection import connect, data_version, memory
from queries.errors import LabelgovError
from tests.test_identity import APP, AUTH


def audit_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    return con.execute("SELECT actor, role, action FROM audit_log ORDER BY seq").fetchall()


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    """ann is admin, sam steward, pat proposer, val viewer, aud auditor."""
    con = memory()
    roles.grant(con, admin_user="ann", user="ann", role=Role.ADMIN)
    for user, role in [("sam", "steward"), ("pat", "proposer"), ("val", "viewer"), ("aud", "auditor")]:
        roles.grant(con, admin_user="ann", user=user, role=role)
    return con


def test_first_grant_must_make_an_admin_and_is_recorded_as_operator() -> None:
    con = memory()
    with pytest.raises(PermissionRefused, match="refused by rule bootstrap-admin") as refused:
        roles.grant(con, admin_user="bob", user="bob", role="steward")
    assert refused.value.rule == "bootstrap-admin"
    assert con.execute("SELECT count(*) FROM roles").fetchone()[0] == 0
    event = roles.grant(con, admin_user="root", user="ann", role="admin")
    assert event is not None and event.seq == 1
    assert (event.actor, event.role, event.action) == ("root", "operator", "role.grant")
    assert event.payload == {"user": "ann", "role": "admin", "previous_role": None}
    assert roles.role_of(con, "ann") is Role.ADMIN
    # Once anyone holds a role, bootstrapping is over: root has no role and is refused.
    with pytest.raises(PermissionRefused, match="user 'root' has no role; manage_roles needs admin"):
        roles.grant(con, admin_user="root", user="root", role="admin")


def test_non_admin_cannot_grant_or_revoke_and_nothing_changes(con: duckdb.DuckDBPyConnection) -> None:
    before = audit_rows(con)
    version = data_version(con)
    with pytest.raises(PermissionRefused) as refused:
        roles.grant(con, admin_user="sam", user="val", role="steward")
    assert str(refused.value) == "refused by rule role-required: user 'sam' has role steward; manage_roles needs admin"
    with pytest.raises(PermissionRefused, match="role-required"):
        roles.revoke(con, admin_user="pat", user="val")
    assert roles.role_of(con, "val") is Role.VIEWER
    assert audit_rows(con) == before and data_version(con) == version


def test_role_changes_are_audited_in_order_and_the_chain_verifies(con: duckdb.DuckDBPyConnection) -> None:
    changed = roles.grant(con, admin_user="ann", user="val", role="proposer")
    assert changed is not None and changed.payload == {"user": "val", "role": "proposer", "previous_role": "viewer"}
    gone = roles.revoke(con, admin_user="ann", user="pat")
    assert gone.payload == {"user": "pat", "role": None, "previous_role": "proposer"}
    assert roles.role_of(con, "pat") is None and roles.role_of(con, "val") is Role.PROPOSER
    assert audit_rows(con) == [("ann", "operator", "role.grant")] + [("ann", "admin", "role.grant")] * 5 + [
        ("ann", "admin", "role.revoke")
    ]
    assert audit.verify(con).ok and audit.verify(con).events == 7


def test_granting_the_same_role_again_changes_nothing(con: duckdb.DuckDBPyConnection) -> None:
    count = len(audit_rows(con))
    assert roles.grant(con, admin_user="ann", user="sam", role="STEWARD") is None
    assert len(audit_rows(con)) == count


def test_last_admin_cannot_be_revoked_or_demoted(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(PermissionRefused, match="refused by rule last-admin"):
        roles.revoke(con, admin_user="ann", user="ann")
    with pytest.raises(PermissionRefused, match="last-admin"):
        roles.grant(con, admin_user="ann", user="ann", role="viewer")
    roles.grant(con, admin_user="ann", user="sam", role="admin")
    roles.revoke(con, admin_user="sam", user="ann")
    assert roles.role_of(con, "ann") is None


def test_revoking_a_user_without_a_role_is_an_error(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(LabelgovError, match="'nobody' has no role to revoke"):
        roles.revoke(con, admin_user="ann", user="nobody")


def test_role_change_rolls_back_when_its_audit_event_cannot_be_written(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("ALTER TABLE audit_log RENAME TO audit_log_hidden")
    with pytest.raises(duckdb.CatalogException, match="audit_log"):
        roles.grant(con, admin_user="ann", user="val", role="steward")
    assert roles.role_of(con, "val") is Role.VIEWER
    con.execute("ALTER TABLE audit_log_hidden RENAME TO audit_log")
    assert audit.verify(con).events == 5


def test_bad_user_ids_are_refused(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(LabelgovError, match=re.escape("user 'new\\tuser' is not a valid user id")):
        roles.grant(con, admin_user="ann", user="new\tuser", role="steward")
    with pytest.raises(LabelgovError, match="--as ' ann' is not a valid user id"):
        roles.grant(con, admin_user=" ann", user="newuser", role="steward")


def test_require_names_the_rule_and_the_roles_needed(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(PermissionRefused) as refused:
        roles.require(con, "val", Role.STEWARD, Role.ADMIN, action="approve")
    assert str(refused.value) == (
        "refused by rule role-required: user 'val' has role viewer; approve needs steward or admin"
    )
    assert isinstance(refused.value, LabelgovError) and refused.value.rule == "role-required"
    assert roles.require(con, "sam", Role.STEWARD, Role.ADMIN, action="approve") is Role.STEWARD
    with pytest.raises(PermissionRefused, match="user 'ghost' has no role; apply needs steward or admin"):
        roles.require_capability(con, "ghost", "apply")


def test_capability_table_matches_the_rules(con: duckdb.DuckDBPyConnection) -> None:
    users = {Role.ADMIN: "ann", Role.STEWARD: "sam", Role.PROPOSER: "pat", Role.VIEWER: "val", Role.AUDITOR: "aud"}
    allowed = {role: set() for role in Role}
    for capability in Capability:
        for role, user in users.items():
            try:
                assert roles.require_capability(con, user, capability) is role
                allowed[role].add(capability)
            except PermissionRefused as refused:
                assert refused.rule == "role-required" and f"{capability.value} needs" in str(refused)
    assert set(CAPABILITIES) == set(Capability)
    assert allowed[Role.VIEWER] == set()
    assert allowed[Role.AUDITOR] == {Capability.READ_AUDIT}
    assert allowed[Role.PROPOSER] == {Capability.PROPOSE, Capability.EDIT, Capability.SUBMIT, Capability.WITHDRAW}
    assert allowed[Role.PROPOSER] < allowed[Role.STEWARD] < allowed[Role.ADMIN]
    reviewing = {Capability.APPROVE, Capability.REJECT, Capability.REQUEST_CHANGES, Capability.APPLY}
    assert reviewing <= allowed[Role.STEWARD]
    assert allowed[Role.ADMIN] - allowed[Role.STEWARD] == {Capability.MANAGE_ROLES}
    with pytest.raises(ValueError, match="unknown capability"):
        roles.require_capability(con, "ann", "delete_everything")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_grant_revoke_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "w.duckdb")
    code, _, err = run(["roles", "grant", "bob", "steward", "--as", "bob", "--db", db], capsys)
    assert code == 2 and "refused by rule bootstrap-admin" in err
    code, out, _ = run(["roles", "grant", "ann", "admin", "--as", "ann", "--db", db], capsys)
    assert code == 0 and "granted admin to 'ann' (audit seq 1)" in out
    code, out, _ = run(["roles", "grant", "bob", "steward", "--as", "ann", "--db", db], capsys)
    assert code == 0 and "audit seq 2" in out
    code, _, err = run(["roles", "grant", "cat", "admin", "--as", "bob", "--db", db], capsys)
    assert code == 2 and "refused by rule role-required: user 'bob' has role steward" in err
    code, _, err = run(["roles", "grant", "cat", "wizard", "--as", "ann", "--db", db], capsys)
    assert code == 2 and "wizard" in err
    code, out, _ = run(["roles", "list", "--db", db], capsys)
    listed = [line.split()[:2] for line in out.strip().splitlines()]
    assert code == 0 and listed == [["ann", "admin"], ["bob", "steward"]]
    code, out, _ = run(["roles", "revoke", "bob", "--as", "ann", "--db", db], capsys)
    assert code == 0 and "revoked steward from 'bob' (audit seq 3)" in out
    code, out, _ = run(["audit", "verify", "--db", db], capsys)
    assert code == 0 and "3 events" in out


def test_cli_grants_the_dashboard_audiences_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "w.duckdb")
    run(["roles", "grant", "ann", "admin", "--as", "ann", "--db", db], capsys)
    for user, role in (("lee", "leadership"), ("ana", "Analyst")):
        code, out, err = run(["roles", "grant", user, role, "--as", "ann", "--db", db], capsys)
        assert code == 0, err
    code, out, _ = run(["roles", "list", "--db", db], capsys)
    assert [line.split()[:2] for line in out.strip().splitlines()] == [
        ["ana", "analyst"], ["ann", "admin"], ["lee", "leadership"]]


def test_only_admins_get_the_roles_page() -> None:
    assert [role for role in Role if may_open(role, "roles")] == [Role.ADMIN]


# --- the Roles page ----------------------------------------------------------------------------------


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """A new warehouse whose first admin is ann and where sam is a steward."""
    db = tmp_path / "w.duckdb"
    with connect(db) as con:
        roles.grant(con, admin_user="ann@example.org", user="ann@example.org", role="admin")
        roles.grant(con, admin_user="ann@example.org", user="sam@example.org", role="steward")
    return db


def roles_page(db: Path, monkeypatch: pytest.MonkeyPatch, *, signed_in: str | None = None) -> AppTest:
    """The Roles page as the signed-in ``signed_in``, or in local mode as sam claiming to be an admin."""
    monkeypatch.setenv("LABELGOV_DB", str(db))
    monkeypatch.setenv("LABELGOV_USER", "sam@example.org")
    monkeypatch.setenv("LABELGOV_ROLE", "admin")
    at = AppTest.from_file(APP, default_timeout=120)
    if signed_in is not None:
        at.secrets["auth"] = AUTH
        at.user = {"is_logged_in": True, "email": signed_in}
    at.run()
    for page_hash, info in at._registered_pages.items():
        if info.get("url_pathname") == "roles" or info.get("page_name") == "Roles":
            at._page_hash = page_hash
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            assert at.title[0].value == "Roles"
            return at
    raise AssertionError("the Roles page is not registered")


def listed(at: AppTest) -> dict[str, str]:
    frame = at.dataframe[0].value
    return dict(zip(frame["user_id"], frame["role"], strict=True))


def test_admin_grants_changes_and_revokes_on_the_page_as_themselves(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = roles_page(warehouse, monkeypatch, signed_in="ann@example.org")
    assert listed(at) == {"ann@example.org": "admin", "sam@example.org": "steward"}
    at.text_input(key="roles_user").set_value("  bob@example.org ")
    at.selectbox(key="roles_role").set_value(Role.LEADERSHIP)
    at.button(key="roles_grant").click().run()
    assert "bob@example.org now has role leadership" in at.success[0].value
    assert listed(at)["bob@example.org"] == "leadership"
    at.selectbox(key="roles_role").set_value(Role.ANALYST)
    at.button(key="roles_grant").click().run()
    assert listed(at)["bob@example.org"] == "analyst"
    at.button(key="roles_grant").click().run()
    assert "already has role analyst" in at.info[-1].value
    at.selectbox(key="roles_revoke_user").set_value("bob@example.org")
    at.button(key="roles_revoke").click().run()
    assert "bob@example.org no longer has a role" in at.success[0].value
    assert "bob@example.org" not in listed(at)
    at.selectbox(key="roles_revoke_user").set_value("ann@example.org")
    at.button(key="roles_revoke").click().run()
    assert "refused by rule last-admin" in at.error[0].value
    with connect(warehouse, read_only=True) as con:
        rows = audit_rows(con)
        assert roles.role_of(con, "ann@example.org") is Role.ADMIN
    assert rows[2:] == [("ann@example.org", "admin", "role.grant")] * 2 + [("ann@example.org", "admin", "role.revoke")]


def test_page_rechecks_the_table_behind_a_local_admin_claim(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = roles_page(warehouse, monkeypatch)
    at.text_input(key="roles_user").set_value("eve@example.org")
    at.selectbox(key="roles_role").set_value(Role.ADMIN)
    at.button(key="roles_grant").click().run()
    assert at.error[0].value == (
        "refused by rule role-required: user 'sam@example.org' has role steward; manage_roles needs admin"
    )
    with connect(warehouse, read_only=True) as con:
        assert roles.role_of(con, "eve@example.org") is None and len(audit_rows(con)) == 2
