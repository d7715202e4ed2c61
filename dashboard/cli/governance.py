"""`labelgov propose`, `labelgov proposal ...` and `labelgov relabel export`: governed tree change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from dashboard.cli.common import current_user, db_option
from governance import apply as applying
from governance import proposals
from governance.impact import ImpactReport
from queries.connection import connect


def as_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--as USER``: who acts; defaults to $LABELGOV_USER or the login name. Roles are checked for it."""
    return click.option("--as", "user", default=None, help="Act as this user (default: $LABELGOV_USER or login).")(func)


def comment_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--comment", default=None, help="Why: recorded with the decision.")(func)


def _who(user: str | None) -> str:
    return user or current_user()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_report(report: ImpactReport, report_hash: str | None) -> list[str]:
    """The impact report as stewards read it before approving."""
    t = report.totals
    lines = [
        f"impact report {report_hash}",
        f"  base v{report.base_version} ({report.base_hash[:12]}) -> new tree {report.target_hash[:12]}, "
        f"class {report.compat_class.value}",
        f"  annotations {t['annotations']:,}: {t['unchanged']:,} unchanged, {t['mapped_automatically']:,} mapped "
        f"automatically, {t['needs_relabelling']:,} need relabelling ({t['items_to_relabel']:,} items)",
        f"  relabelling cost {_fmt(report.relabel_cost.low, 2)} .. {_fmt(report.relabel_cost.high, 2)} "
        f"(median {_fmt(report.relabel_cost.median, 2)}); hours {_fmt(report.relabel_hours.low, 1)} .. "
        f"{_fmt(report.relabel_hours.high, 1)}",
        f"  alpha overall {_fmt(report.alpha_before)} -> {_fmt(report.alpha_after)}",
    ]
    for b in report.branches:
        lines.append(
            f"  branch {b.branch}: alpha {_fmt(b.alpha_before)} -> {_fmt(b.alpha_after)}, entropy "
            f"{_fmt(b.entropy_before)} -> {_fmt(b.entropy_after)} bits"
        )
    for m in report.model_accuracy:
        lines.append(
            f"  model {m.model}@{m.model_version} accuracy vs gold {_fmt(m.accuracy_before)} -> "
            f"{_fmt(m.accuracy_after)} ({m.pairs} pairs)"
        )
    lines.append("  affected nodes:")
    for n in report.affected:
        preds = ", ".join(f"{k} {v}" for k, v in n.predictions.items()) or "none"
        lines.append(
            f"    {n.node_id}: {n.annotations:,} annotations, {n.items:,} items, {n.annotators:,} annotators, "
            f"{n.gold_labels:,} gold, predictions {preds}, {n.escalations_in_flight} escalations in flight"
        )
    for c in report.conflicts:
        lines.append(f"  conflict: {c.items} items had annotators choose several nodes merged into {c.new_node}")
    moved = [m for m in report.mapping if m.new_node != m.base_node or not m.automatic]
    lines.append(
        "  mapping: "
        + (", ".join(f"{m.base_node}->{m.new_node}{'' if m.automatic else ' (relabel)'}" for m in moved) or "identity")
    )
    lines.append(f"  reversible: {'yes' if report.reversible else 'no'} ({report.reversibility})")
    return lines


@click.command("propose")
@click.argument("file", type=click.Path(dir_okay=False))
@as_option
@db_option
def propose_command(file: str, user: str | None, db: str | None) -> None:
    """Create a draft change proposal from a YAML FILE (title, rationale, operations)."""
    spec, text = proposals.read_proposal_file(file)
    with connect(db) as con:
        created = proposals.create(con, spec, user=_who(user), source_text=text)
    click.echo(
        f"proposal {created.proposal_id} created as draft ({created.compat_class.value}, "
        f"{len(created.operations)} operations against tree v{created.base_version}); "
        f"next: `labelgov proposal submit {created.proposal_id}`"
    )


@click.group("proposal")
def proposal_group() -> None:
    """Review and apply change proposals."""


@proposal_group.command("list")
@db_option
def list_command(db: str | None) -> None:
    """Every proposal with its status and class."""
    with connect(db, read_only=True) as con:
        frame = proposals.list_proposals(con)
    click.echo("no proposals yet" if frame.empty else frame.astype(object).fillna("").to_string(index=False))


@proposal_group.command("show")
@click.argument("proposal_id", type=int)
@db_option
def show_command(proposal_id: int, db: str | None) -> None:
    """A proposal, its operations, approvals, impact report and history."""
    with connect(db, read_only=True) as con:
        p = proposals.load(con, proposal_id)
        report = p.report(con)
        history = proposals.history(con, proposal_id)
    click.echo(f"proposal {p.proposal_id}: {p.title} [{p.status}]")
    click.echo(f"  proposer {p.proposer}; editors {', '.join(p.editors)}; base v{p.base_version}")
    click.echo(f"  rationale: {p.rationale}")
    click.echo(
        f"  class {p.compat_class.value}: needs {p.approvals_needed} steward approval(s)"
        f"{' acknowledging the report hash' if p.needs_acknowledgement else ''}; "
        f"valid approvals: {', '.join(p.approvers) or 'none'}"
    )
    for seq, op in enumerate(p.operations, start=1):
        click.echo(f"  {seq}. {op.model_dump_json(exclude_none=True)}")
    if report is not None:
        for line in render_report(report, p.report_hash):
            click.echo(line)
    click.echo("  history:")
    for rec in history.to_dict("records"):
        note = f" ({rec['comment']})" if rec["comment"] else ""
        click.echo(f"    {rec['created_at']} {rec['actor']} {rec['action']} -> {rec['to_status']}{note}")


def _step(name: str, action: Callable[..., proposals.Proposal], help_text: str, ack: bool = False) -> None:
    """Register one lifecycle command; they differ only in the action they call."""

    def command(proposal_id: int, user: str | None, comment: str | None, db: str | None, **extra: Any) -> None:
        with connect(db) as con:
            result = action(con, proposal_id, user=_who(user), comment=comment, **extra)
        click.echo(f"proposal {proposal_id} is now {result.status}")
        if name == "submit" and result.report_hash:
            click.echo(f"impact report {result.report_hash}; review it with `labelgov proposal show {proposal_id}`")

    if ack:
        command = click.option("--ack-report", "ack_report", default=None, help="Hash of the impact report read.")(
            command
        )
    decorated = db_option(comment_option(as_option(click.argument("proposal_id", type=int)(command))))
    proposal_group.command(name, help=help_text)(decorated)


_step("submit", proposals.submit, "Submit a proposal for review; computes and stores its impact report.")
_step("approve", proposals.approve, "Approve a submitted proposal (not your own).", ack=True)
_step("reject", proposals.reject, "Reject a proposal; the tree is not changed.")
_step("request-changes", proposals.request_changes, "Send a proposal back to its authors.")
_step("withdraw", proposals.withdraw, "Withdraw your own proposal.")


@proposal_group.command("edit")
@click.argument("proposal_id", type=int)
@click.argument("file", type=click.Path(dir_okay=False))
@as_option
@db_option
def edit_command(proposal_id: int, file: str, user: str | None, db: str | None) -> None:
    """Replace a proposal's content with FILE; approvals so far become void."""
    spec, text = proposals.read_proposal_file(file)
    with connect(db) as con:
        result = proposals.edit(con, proposal_id, spec, user=_who(user), source_text=text)
    click.echo(f"proposal {proposal_id} edited; it is now {result.status}")


@proposal_group.command("apply")
@click.argument("proposal_id", type=int)
@as_option
@db_option
def apply_command(proposal_id: int, user: str | None, db: str | None) -> None:
    """Apply an approved proposal: new tree version, mapping of every annotation, checks, relabelling queue."""
    with connect(db) as con:
        result = applying.apply(con, proposal_id, user=_who(user))
    if result.already_applied:
        click.echo(f"proposal {proposal_id} was already applied as tree v{result.to_version}; nothing to do")
        return
    click.echo(
        f"applied proposal {proposal_id}: tree v{result.from_version} -> v{result.to_version}, "
        f"{result.annotations_mapped:,} annotations mapped, {result.items_to_relabel:,} items queued for "
        f"relabelling, checksum {result.checksum[:16]}"
    )


@click.group("relabel")
def relabel_group() -> None:
    """The relabelling queue left by splits and meaning-changing guidelines."""


@relabel_group.command("export")
@click.argument("proposal_id", type=int)
@click.argument("file", type=click.Path(dir_okay=False))
@db_option
def export_command(proposal_id: int, file: str, db: str | None) -> None:
    """Write the items proposal PROPOSAL_ID queued for relabelling to FILE (CSV)."""
    with connect(db, read_only=True) as con:
        rows = applying.export_relabel_queue(con, proposal_id, file)
    click.echo(f"wrote {rows:,} queued items to {file}")


def register(root: click.Group) -> None:
    for command in (propose_command, proposal_group, relabel_group):
        root.add_command(command)
