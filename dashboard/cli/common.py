"""Options and helpers shared by every command."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from typing import Any

import click
import duckdb

from governance.audit import append_event
from governance.roles import role_of


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def root() -> None:
    """labelgov: label quality governance over a DuckDB warehouse."""


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--db PATH``; falls back to $LABELGOV_DB, then ./warehouse/labelgov.duckdb."""
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False),
        default=None,
        help="Warehouse file (default: $LABELGOV_DB or ./warehouse/labelgov.duckdb).",
    )(func)


def current_user() -> str:
    """Who is acting, for the ingest record and the audit log when no --as is given."""
    explicit = os.environ.get("LABELGOV_USER")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def audit_recorder(user: str) -> Callable[[duckdb.DuckDBPyConnection, str, dict[str, Any]], None]:
    """Append an audit event for a command-line write, inside that write's transaction.

    The actor's role is the one the roles table gives them; someone with no role acts as the local
    operator who holds the warehouse file.
    """

    def record(con: duckdb.DuckDBPyConnection, action: str, payload: dict[str, Any]) -> None:
        role = role_of(con, user)
        append_event(con, actor=user, role=role.value if role else "operator", action=action, payload=payload)

    return record
