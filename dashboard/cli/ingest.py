"""`labelgov ingest annotations|gold|predictions|escalations FILE`."""

from __future__ import annotations

from pathlib import Path

import click

from dashboard.cli.common import audit_recorder, current_user, db_option
from queries.connection import connect
from queries.ingest import ingest_file
from queries.ingest_fields import KINDS
from queries.ingest_readers import FORMATS
from queries.ingest_report import IngestReport

_HELP = {
    "annotations": "Load human annotations (columns item_id, annotator_id, label, ...).",
    "gold": "Load gold (true) labels (columns item_id, label, optional source).",
    "predictions": "Load model predictions (columns item_id, model, model_version, label and/or probabilities).",
    "escalations": "Load the escalation log (columns item_id, trigger, created_at, optional routed_to, resolved_at).",
}


@click.group("ingest")
def ingest_group() -> None:
    """Load a file into the warehouse as one batch; bad rows are quarantined with a reason."""


def _phase(message: str) -> None:
    click.echo(f"labelgov: {message} ...", err=True)


def _print(report: IngestReport, file: str) -> None:
    if report.duplicate_of_batch is not None:
        click.echo("; ".join(report.messages))
        return
    click.echo(
        f"{report.kind} from {file} ({report.format}, tree version {report.tree_version}): "
        f"{report.rows_read:,} rows read, {report.rows_accepted:,} accepted, {report.rows_quarantined:,} quarantined"
    )
    for reason, count in report.quarantined.items():
        click.echo(f"  {reason:<18} {count:>12,}")
    for example in report.examples:
        click.echo(f"  e.g. {example}")
    created = f"{report.new_items:,} new items"
    if report.kind == "annotations":
        created += f", {report.new_annotators:,} new annotators"
    if report.dry_run:
        click.echo(f"dry run: nothing written (would add {created})")
    else:
        # Every written batch makes the analytics stale (the dashboard says so), even one wholly quarantined.
        click.echo(f"batch {report.batch_id} written: {created}; run `labelgov refresh` to update the analytics")


def _make_command(kind: str) -> click.Command:
    @click.argument("file", type=click.Path())
    @db_option
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                  help="File format (default: from the extension; .json is a Label Studio export).")
    @click.option("--map", "mapping", default=None, metavar="FIELD=COLUMN,...",
                  help="Columns named differently, e.g. item=question,annotator=worker,label=answer.")
    @click.option("--tree-version", type=int, default=None, help="Tree version the labels refer to (default: latest).")
    @click.option("--dry-run", is_flag=True, help="Validate and report without writing anything.")
    def command(file: str, db: str | None, fmt: str | None, mapping: str | None, tree_version: int | None,
                dry_run: bool) -> None:
        with connect(db) as con:
            report = ingest_file(
                con, kind, Path(file), fmt=fmt, mapping=mapping, tree_version=tree_version, dry_run=dry_run,
                actor=current_user(), progress=_phase, record=audit_recorder(current_user()),
            )
        _print(report, file)

    command.__doc__ = _HELP[kind]
    return ingest_group.command(kind)(command)


for _kind in KINDS:
    _make_command(_kind)


def register(root: click.Group) -> None:
    root.add_command(ingest_group)
