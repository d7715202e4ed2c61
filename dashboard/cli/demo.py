"""`labelgov demo`: build the simulated moderation warehouse, then serve the dashboard on it."""

from __future__ import annotations

import click

from dashboard.cli.common import audit_recorder, current_user, db_option
from dashboard.cli.serve import serve
from queries.connection import connect
from queries.demo import build_demo
from queries.demo_config import demo_config

DEMO_PORT = 8501


@click.command("demo")
@click.option("--scale", default="small", show_default=True,
              help="small (~20k items), medium (~200k), large (1M) or a number of items.")
@click.option("--seed", default=7, show_default=True, type=int, help="Same seed, same rows.")
@db_option
@click.option("--no-serve", is_flag=True, help="Build the warehouse and stop; do not start the dashboard.")
@click.option("--no-events", is_flag=True,
              help="A control warehouse: no drift, no guideline change, no degrading annotator.")
@click.option("--force", is_flag=True, help="Delete an existing warehouse file first.")
@click.option("--no-refresh", is_flag=True, help="Leave the analytics uncomputed (run `labelgov refresh` later).")
def demo_command(
    scale: str, seed: int, db: str | None, no_serve: bool, no_events: bool, force: bool, no_refresh: bool
) -> None:
    """Simulate 26 weeks of a content-moderation labelling operation with planted truth."""
    config = demo_config(scale, seed, events=not no_events)
    result = build_demo(db, config, force=force, created_by=current_user())
    counts = ", ".join(f"{count:,} {table}" for table, count in result.counts.items())
    click.echo(f"demo warehouse {result.path} built in {result.seconds:.1f} s: {counts}")
    facts = result.manifest
    if facts["events"]:
        drift, change, degrading = facts["drift"], facts["guideline_change"], facts["degrading"]
        click.echo(
            f"planted: drift in {drift['branch']} from {drift['date']} (new source {drift['source']}), "
            f"guideline {change['from']}->{change['to']} in {change['branch']} from {change['date']}, "
            f"{degrading['id']} degrades from week {degrading['from_week']}, "
            f"{len(facts['spammers'])} spammers; the full truth is in table demo_manifest"
        )
    else:
        click.echo(f"control warehouse: no planted events; {len(facts['spammers'])} spammers")
    if not no_refresh:
        from queries.refresh import refresh  # the analytics load only when they run

        with connect(result.path) as con:
            report = refresh(con, record=audit_recorder(current_user()))
        click.echo(f"analytics computed in {report.seconds:.1f} s")
    if not no_serve:
        serve(result.path, port=DEMO_PORT)


def register(root: click.Group) -> None:
    root.add_command(demo_command)
