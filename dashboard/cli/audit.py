"""`labelgov audit ...` (the tamper-evident log) and `labelgov roles ...` (who may do what).

Checkpoints written by `labelgov audit checkpoint` belong OUTSIDE the warehouse directory (another
disk, a ticket, a signed commit): whoever can rewrite the warehouse could rewrite a checkpoint stored
next to it, and then verifying against it proves nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from dashboard.cli.common import current_user, db_option
from governance import audit, roles
from queries.connection import connect


@click.group("audit")
def audit_group() -> None:
    """The append-only, hash-chained audit log."""


@audit_group.command("verify")
@click.option(
    "--checkpoint", "checkpoint_files", multiple=True, type=click.Path(dir_okay=False),
    help="A checkpoint file the log must still extend (repeatable).",
)
@db_option
def verify_command(checkpoint_files: tuple[str, ...], db: str | None) -> None:
    """Check every hash and link; exit 1 naming the first bad event."""
    checkpoints = [audit.read_checkpoint(path) for path in checkpoint_files]
    with connect(db, read_only=True) as con:
        result = audit.verify(con, checkpoints)
    if not result.ok:
        click.echo(result.message, err=True)
        sys.exit(1)  # not ctx.exit: the entry point runs click with standalone_mode=False, which drops it
    click.echo(result.message)


@audit_group.command("checkpoint")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="File to write; keep it "
              "outside the warehouse directory.")
@db_option
def checkpoint_command(out: str, db: str | None) -> None:
    """Record the head of a verified log (seq, hash, time) in a JSON file kept outside the warehouse."""
    with connect(db, read_only=True) as con:
        point = audit.checkpoint(con)
    audit.write_checkpoint(point, out)
    click.echo(f"checkpoint at seq {point.seq} hash {point.hash} written to {out}")


@audit_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@db_option
def export_command(file: str, fmt: audit.ExportFormat, db: str | None) -> None:
    """Write every event, with its payload and hashes, for an outside auditor."""
    with connect(db, read_only=True) as con:
        count = audit.export(con, file, fmt)
    click.echo(f"exported {count} events to {file}")


@audit_group.command("show")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@db_option
def show_command(limit: int, db: str | None) -> None:
    """The newest events, oldest first."""
    with connect(db, read_only=True) as con:
        events = audit.recent_events(con, limit)
    if not events:
        click.echo("the audit log is empty")
    for event in events:
        payload = json.dumps(event.payload, sort_keys=True, ensure_ascii=False)
        click.echo(
            f"{event.seq:>6}  {event.time:%Y-%m-%d %H:%M:%S}Z  {event.actor} ({event.role})  {event.action}  "
            f"{event.hash[:12]}  {payload}"
        )


@click.group("roles")
def roles_group() -> None:
    """Grant, revoke and list roles; admins only, every change audited. Users are sign-in emails (or subjects)."""


def _as_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--as", "admin_user", default=None, help="The admin making the change (default: $LABELGOV_USER or login)."
    )(func)


@roles_group.command("grant")
@click.argument("user")
@click.argument("role", type=click.Choice([r.value for r in roles.Role], case_sensitive=False))
@_as_option
@db_option
def grant_command(user: str, role: str, admin_user: str | None, db: str | None) -> None:
    """Give USER the ROLE (replacing any other). The very first grant must make an admin."""
    with connect(db) as con:
        event = roles.grant(con, admin_user=admin_user or current_user(), user=user, role=role)
    if event is None:
        click.echo(f"user {user!r} already has role {role.lower()}; nothing to do")
    else:
        click.echo(f"granted {role.lower()} to {user!r} (audit seq {event.seq})")


@roles_group.command("revoke")
@click.argument("user")
@_as_option
@db_option
def revoke_command(user: str, admin_user: str | None, db: str | None) -> None:
    """Take away USER's role."""
    with connect(db) as con:
        event = roles.revoke(con, admin_user=admin_user or current_user(), user=user)
    click.echo(f"revoked {event.payload['previous_role']} from {user!r} (audit seq {event.seq})")


@roles_group.command("list")
@db_option
def list_command(db: str | None) -> None:
    """Every user with a role."""
    with connect(db, read_only=True) as con:
        grants = roles.list_roles(con)
    if not grants:
        click.echo("no roles granted yet: bootstrap with `labelgov roles grant YOU admin --as YOU`")
    for g in grants:
        click.echo(f"{g.user_id:<24}{g.role.value:<12}granted by {g.granted_by} at {g.granted_at:%Y-%m-%d %H:%M:%S}Z")


def register(root: click.Group) -> None:
    root.add_command(audit_group)
    root.add_command(roles_group)
