"""`labelgov refresh`, `report` and `export`: the analytics from the command line."""

from __future__ import annotations

import click

from dashboard.cli.common import audit_recorder, current_user, db_option
from queries.connection import connect
from queries.refresh import refresh


@click.command("refresh")
@db_option
@click.option("--full", is_flag=True, help="Recompute everything, not only items touched by new batches.")
def refresh_command(db: str | None, full: bool) -> None:
    """Materialise the derived tables that the dashboard and reports read."""
    with connect(db) as con:
        report = refresh(con, full=full, record=audit_recorder(current_user()))
    mode = "full" if report.full else f"incremental ({report.touched_items:,} items touched)"
    click.echo(f"refreshed data version {report.data_version}: {mode} in {report.seconds:.1f} s")
    for step in report.steps:
        click.echo(f"  {step.step:<16}{step.mode:<14}{step.seconds:>8.2f} s")


def register(root: click.Group) -> None:
    root.add_command(refresh_command)
