"""Roles: bootstrap, admin-only changes, refusals that name their rule, and every change in the audit log."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from dashboard.cli import main
from governance import audit, roles
from governance.roles import CAPABILITIES, Capability, PermissionRefused, Role
from queries.connection import data_version, memory
from queries.errors import LabelgovError


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


def test_local_identity_reads_and_validates_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABELGOV_ROLE", raising=False)
    monkeypatch.setenv("LABELGOV_USER", "kim")
    assert roles.local_identity() == ("kim", Role.VIEWER)
    monkeypatch.setenv("LABELGOV_ROLE", "Steward")
    assert roles.local_identity() == ("kim", Role.STEWARD)
    monkeypatch.setenv("LABELGOV_ROLE", "superuser")
    with pytest.raises(LabelgovError, match="LABELGOV_ROLE 'superuser' is not a role: use one of viewer, proposer"):
        roles.local_identity()
    monkeypatch.setenv("LABELGOV_ROLE", "admin")
    monkeypatch.setenv("LABELGOV_USER", "bad\nname")
    with pytest.raises(LabelgovError, match="LABELGOV_USER"):
        roles.local_identity()


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
