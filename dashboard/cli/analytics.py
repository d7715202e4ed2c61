"""`labelgov refresh`, `report` and `export`: the analytics from the command line.

The analytic modules (numpy, scipy, every query) are imported inside the commands that use them, so
that every other `labelgov` command starts without loading them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import click

from dashboard.cli.common import audit_recorder, current_user, db_option
from queries.connection import connect
from queries.filters import Filters

if TYPE_CHECKING:
    from queries.refresh import RefreshReport


@click.command("refresh")
@db_option
@click.option("--full", is_flag=True, help="Recompute every step in full, even with nothing new since the last run.")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    metavar="VERSION|latest",
    help="Compute the analytics in this tree version, every answer mapped to it (default: keep the choice).",
)
def refresh_command(db: str | None, full: bool, as_of: str | None) -> None:
    """Materialise the derived tables that the dashboard and reports read."""
    from queries.refresh import refresh

    chosen: int | Literal["latest"] | None = None
    if as_of is not None:
        if as_of != "latest" and not as_of.isdigit():
            raise click.BadParameter("a tree version number, or 'latest'", param_hint="--as-of")
        chosen = "latest" if as_of == "latest" else int(as_of)
    with connect(db) as con:
        report = refresh(con, full=full, as_of=chosen, record=audit_recorder(current_user()))
    tree = "no label tree yet" if report.as_of_version is None else f"tree v{report.as_of_version}"
    click.echo(f"refreshed data version {report.data_version} as of {tree}: {_modes(report)} in {report.seconds:.1f} s")
    for step in report.steps:
        click.echo(f"  {step.step:<20}{step.mode:<14}{step.seconds:>8.2f} s   peak {step.peak_gb:.2f} GB")


def _modes(report: RefreshReport) -> str:
    """What the steps listed below did, summed up: "incremental" alone would hide that most ran in full."""
    if report.up_to_date:
        return "already up to date, nothing new since the last refresh; nothing recomputed (--full recomputes)"
    partial = [s.step for s in report.steps if s.mode != "full"]
    if not partial:
        return "full"
    touched = f"{report.touched_items:,} items with new answers" if report.touched_items else "no new answers"
    rest = len(report.steps) - len(partial)
    return f"incremental for {', '.join(partial)} ({touched}), full for the other {rest} steps"


def _print_headline(figures: dict[str, Any]) -> None:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    def num(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    counts = figures["counts"]
    click.echo(
        f"items {counts['items']:,} · annotations {counts['annotations']:,} · annotators {counts['annotators']:,}"
        f" · gold {counts['gold_labels']:,}"
    )
    levels = ", ".join(f"L{k} {num(v)}" for k, v in figures["alpha_by_level"].items())
    per_level = f"; {levels}" if levels else ""
    click.echo(f"Krippendorff's alpha {num(figures['alpha'])} (tree distance {num(figures['alpha_tree'])}{per_level})")
    for method, accuracy in [*figures["accuracy_vs_gold"].items(), *figures["model_accuracy_vs_gold"].items()]:
        click.echo(f"accuracy vs gold   {method:<34}{pct(accuracy)}")
    click.echo(
        f"escalation rate {pct(figures['escalation_rate'])}, gain {pct(figures['escalation_gain'])} "
        f"(from {pct(figures['escalation_accuracy_before'])} to {pct(figures['escalation_accuracy_after'])})"
    )
    click.echo(f"cost per item {num(figures['cost_per_item'], 3)}")
    for alert in figures["top_drift_alerts"]:
        click.echo(
            f"drift alert  {alert['metric']:<20}{alert['branch']:<28}week of {alert['week']}  "
            f"size {alert['size']:.3f}  p_adj {alert['p_adjusted']:.1e}"
        )


@click.command("report")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output; the key names are stable.")
@click.option("--alerts", default=5, show_default=True, type=click.IntRange(0, 100), help="Drift alerts to list.")
def report_command(db: str | None, as_json: bool, alerts: int) -> None:
    """Headline figures: counts, agreement, accuracy against gold, escalation, cost, drift alerts."""
    from queries import report as headline_report
    from queries.refresh import is_stale

    with connect(db, read_only=True) as con:
        # headline refuses a warehouse that was never refreshed, so stale here means newer data only.
        figures = headline_report.headline(con, Filters(), alerts=alerts)
        if is_stale(con):
            click.echo("note: new data since the last refresh; run `labelgov refresh` for current figures", err=True)
    if as_json:
        click.echo(json.dumps(figures, indent=2, default=str))
    else:
        _print_headline(figures)


@click.group("export")
def export_group() -> None:
    """Export results for pipelines downstream."""


@export_group.command("labels")
@click.argument("file", type=click.Path(dir_okay=False))
@db_option
@click.option("--method", type=click.Choice(["dawid-skene", "majority"]), default="dawid-skene", show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "jsonl"]),
    default=None,
    help="Default: from the file's extension (.csv, .parquet, .jsonl or .ndjson, any case); csv without one.",
)
def export_labels_command(file: str, db: str | None, method: str, fmt: str | None) -> None:
    """One row per item: consensus at every level, soft distribution, confidence, provenance."""
    from queries import export as label_export

    chosen = fmt or label_export.guess_format(file)
    with connect(db, read_only=True) as con:
        frame = label_export.labels(con, method)  # type: ignore[arg-type]
    rows = label_export.write(frame, file, chosen)  # type: ignore[arg-type]
    click.echo(f"wrote {rows:,} items to {file} ({chosen}, method {method})")


def register(root: click.Group) -> None:
    root.add_command(refresh_command)
    root.add_command(report_command)
    root.add_command(export_group)
