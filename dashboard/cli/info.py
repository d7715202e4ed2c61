"""`labelgov info`: what the warehouse holds."""

from __future__ import annotations

import json

import click

from dashboard.cli.common import db_option
from queries import info as info_queries
from queries.connection import connect, resolve_db_path


@click.command("info")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info_command(db: str | None, as_json: bool) -> None:
    """Counts per table, whether the analytics are current, tree versions, date range and the last ingest."""
    from queries.refresh import is_stale, refreshed_version  # loads the analytic modules: only this command needs them

    with connect(db, read_only=True) as con:
        summary = info_queries.summary(con)
        versions = info_queries.tree_versions(con)
        summary["refreshed_data_version"] = refreshed_version(con)
        summary["stale"] = is_stale(con)
    if as_json:
        summary["tree_versions"] = versions.to_dict("records")
        click.echo(json.dumps(summary, default=str, indent=2))
        return
    click.echo(f"warehouse      {resolve_db_path(db)} (data version {summary['data_version']})")
    click.echo(f"analytics      {_analytics_state(summary['data_version'], summary['refreshed_data_version'])}")
    for table, count in summary["counts"].items():  # type: ignore[union-attr]
        click.echo(f"{table:<15}{count:>12,}")
    click.echo(f"annotations    {summary['first_annotation']} .. {summary['last_annotation']}")
    if versions.empty:
        click.echo("tree           none: run `labelgov tree import FILE`")
    for rec in versions.to_dict("records"):
        click.echo(
            f"tree v{rec['tree_version']:<8}{rec['taxonomy']} ({rec['nodes']} nodes, {rec['leaves']} leaves, "
            f"depth {rec['depth']}, hash {rec['content_hash']})"
        )
    last = summary["last_ingest"]
    if last:
        click.echo(
            f"last ingest    batch {last['batch_id']} {last['kind']} {last['file_name']}: "
            f"{last['rows_accepted']:,} accepted, {last['rows_quarantined']:,} quarantined "
            f"by {last['ingested_by']} at {last['ingested_at']}"
        )


def _analytics_state(current: object, refreshed: object) -> str:
    """The dashboard and reports read the derived tables, so say whether they show the data above."""
    if refreshed is None:
        return "never refreshed: run `labelgov refresh` before opening the dashboard or a report"
    if refreshed != current:
        return f"refreshed at data version {refreshed}; stale, new data since the last refresh: run `labelgov refresh`"
    return f"refreshed at data version {refreshed}; up to date"


def register(root: click.Group) -> None:
    root.add_command(info_command)
