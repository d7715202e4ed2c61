"""Options and helpers shared by every command."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from typing import Any

import click


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
