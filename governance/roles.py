"""Who may do what: roles, the capability table and role changes.

Each user holds at most one role (the ``roles`` table); the history of grants and revocations is the
audit log, written in the same transaction as the change. Only an admin changes roles, with one
exception that makes a new warehouse usable: while no role has been granted at all, the local operator
(whoever can write the warehouse file, e.g. ``labelgov roles grant alice admin --as alice``) may make the
first admin. That event is recorded with the role ``operator``. The last admin cannot be revoked or
demoted, so the warehouse never returns to a state where nobody can manage roles.

The capability table is the single place that says which role may perform which governance action.
Admins can do everything stewards can; no role bypasses the four-eyes rule on proposals, which is
enforced where proposals are approved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

import duckdb
from pydantic import BaseModel, TypeAdapter, ValidationError

from governance.audit import AuditEvent, Name, append_event
from queries import audit_store as store
from queries.connection import bump_data_version, transaction
from queries.errors import LabelgovError

OPERATOR = "operator"


class Role(StrEnum):
    """Every role the roles table can hold; the dashboard shows each its own pages.

    Leadership, viewer and analyst only read; the capability table gives them no governance action.
    """

    VIEWER = "viewer"
    LEADERSHIP = "leadership"
    ANALYST = "analyst"
    PROPOSER = "proposer"
    STEWARD = "steward"
    ADMIN = "admin"
    AUDITOR = "auditor"


class Capability(StrEnum):
    PROPOSE = "propose"
    EDIT = "edit"
    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_CHANGES = "request_changes"
    WITHDRAW = "withdraw"
    APPLY = "apply"
    MANAGE_ROLES = "manage_roles"
    READ_AUDIT = "read_audit"


_AUTHORS = frozenset({Role.PROPOSER, Role.STEWARD, Role.ADMIN})
_REVIEWERS = frozenset({Role.STEWARD, Role.ADMIN})

CAPABILITIES: Mapping[Capability, frozenset[Role]] = MappingProxyType(
    {
        Capability.PROPOSE: _AUTHORS,
        Capability.EDIT: _AUTHORS,
        Capability.SUBMIT: _AUTHORS,
        Capability.WITHDRAW: _AUTHORS,
        Capability.APPROVE: _REVIEWERS,
        Capability.REJECT: _REVIEWERS,
        Capability.REQUEST_CHANGES: _REVIEWERS,
        Capability.APPLY: _REVIEWERS,
        Capability.MANAGE_ROLES: frozenset({Role.ADMIN}),
        Capability.READ_AUDIT: frozenset({Role.STEWARD, Role.ADMIN, Role.AUDITOR}),
    }
)


class PermissionRefused(LabelgovError):
    """A refusal that names the rule which made it, so the person refused knows what to ask for."""

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        super().__init__(f"refused by rule {rule}: {detail}")


class RoleGrant(BaseModel):
    user_id: str
    role: Role
    granted_by: str
    granted_at: datetime


_NAME = TypeAdapter(Name)


def user_id(value: str, what: str = "user") -> str:
    """The value as a user id, or one message saying what a user id may contain."""
    try:
        return _NAME.validate_python(value)
    except ValidationError as exc:
        raise LabelgovError(
            f"{what} {value!r} is not a valid user id: use 1-128 characters without control characters "
            "or surrounding spaces"
        ) from exc


def parse_role(text: str, source: str = "role") -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise LabelgovError(f"{source} {text!r} is not a role: use one of {', '.join(Role)}") from None


def role_of(con: duckdb.DuckDBPyConnection, user: str) -> Role | None:
    found = store.role_of(con, user)
    return Role(found) if found else None


def lookup_role(con: duckdb.DuckDBPyConnection, user: str) -> Role | None:
    """``role_of`` for a read-only handle, which cannot migrate: an old warehouse gets a clear message."""
    store.require_tables(con)
    return role_of(con, user)


def _either(roles: list[Role]) -> str:
    names = [r.value for r in Role if r in roles]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def require(con: duckdb.DuckDBPyConnection, user: str, *allowed: Role, action: str) -> Role:
    """The user's role if it is one of ``allowed``; otherwise PermissionRefused under rule role-required."""
    if not allowed:
        raise ValueError("require needs at least one allowed role")
    role = role_of(con, user)
    if role in allowed:
        return role
    has = f"has role {role}" if role else "has no role"
    raise PermissionRefused("role-required", f"user {user!r} {has}; {action} needs {_either(list(allowed))}")


def require_capability(con: duckdb.DuckDBPyConnection, user: str, capability: Capability | str) -> Role:
    try:
        wanted = Capability(capability)
    except ValueError:
        raise ValueError(f"unknown capability {capability!r}; known: {', '.join(Capability)}") from None
    return require(con, user, *CAPABILITIES[wanted], action=wanted.value)


def list_roles(con: duckdb.DuckDBPyConnection) -> list[RoleGrant]:
    store.require_tables(con)
    return [
        RoleGrant(user_id=u, role=Role(r), granted_by=by, granted_at=at.replace(tzinfo=UTC))
        for u, r, by, at in store.list_roles(con)
    ]


def _actor_role(con: duckdb.DuckDBPyConnection, admin_user: str, new_role: Role | None) -> str:
    """The acting user's role for the audit event; bootstraps the first admin on an empty table."""
    if store.role_counts(con):
        return require_capability(con, admin_user, Capability.MANAGE_ROLES).value
    if new_role is not Role.ADMIN:
        raise PermissionRefused(
            "bootstrap-admin",
            f"no roles have been granted yet; the first grant must make an admin "
            f"(`labelgov roles grant {admin_user} admin --as {admin_user}`)",
        )
    return OPERATOR


def _keep_an_admin(con: duckdb.DuckDBPyConnection, user: str, previous: Role | None, new_role: Role | None) -> None:
    if previous is Role.ADMIN and new_role is not Role.ADMIN and store.role_counts(con).get(Role.ADMIN.value, 0) == 1:
        raise PermissionRefused(
            "last-admin", f"user {user!r} is the only admin; grant admin to someone else first"
        )


def _change(con: duckdb.DuckDBPyConnection, *, admin_user: str, user: str, role: Role | None) -> AuditEvent | None:
    """Grant (role) or revoke (None) as one transaction with its audit event and data-version bump."""
    admin_user, user = user_id(admin_user, "--as"), user_id(user)
    with transaction(con):
        actor_role = _actor_role(con, admin_user, role)
        previous = role_of(con, user)
        if role is None and previous is None:
            raise LabelgovError(f"user {user!r} has no role to revoke (see `labelgov roles list`)")
        if previous is role:
            return None
        _keep_an_admin(con, user, previous, role)
        if role is None:
            store.delete_role(con, user)
        else:
            now = datetime.now(UTC).replace(tzinfo=None)
            store.set_role(con, user=user, role=role.value, granted_by=admin_user, granted_at=now)
        event = append_event(
            con,
            actor=admin_user,
            role=actor_role,
            action="role.grant" if role else "role.revoke",
            payload={"user": user, "role": role, "previous_role": previous},
        )
        bump_data_version(con)
    return event


def grant(con: duckdb.DuckDBPyConnection, *, admin_user: str, user: str, role: Role | str) -> AuditEvent | None:
    """Give ``user`` the role, replacing any other; None (and no event) when the user already has it."""
    return _change(con, admin_user=admin_user, user=user, role=parse_role(role))


def revoke(con: duckdb.DuckDBPyConnection, *, admin_user: str, user: str) -> AuditEvent:
    """Take away the user's role; a user without one is an error, not a silent no-op."""
    event = _change(con, admin_user=admin_user, user=user, role=None)
    assert event is not None  # a revoke either changes something or raises
    return event
