"""Change proposals: the file format, the lifecycle and the rules on who may move a proposal along.

Lifecycle: draft -> submitted -> approved -> applied, with changes_requested (back to the authors),
rejected and withdrawn as ends, and stale when the base version moved on or the proposal or its report
changed after approval. Each step checks the actor's role, refuses with the name of the rule that
refused it, and writes its history row and audit event in the step's own transaction.

Approval tiers follow the proposal's compatibility class: one steward for cosmetic and additive changes,
one steward who acknowledges the impact report by its hash for structural and lossy ones, and two
stewards for changes that need relabelling. Four eyes: nobody who proposed or edited a proposal may
approve it, whatever their role.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from governance.audit import append_event
from governance.impact import ImpactReport, compute_report
from governance.operations import CompatClass, Operation, play
from governance.roles import PermissionRefused, require_capability
from queries import governance_store as store
from queries.connection import transaction
from queries.errors import LabelgovError
from queries.governance_versions import require_version
from queries.taxonomy import latest_version, load_tree

MIN_ACK_CHARS = 12
_OPERATIONS = TypeAdapter(list[Operation])

# Which statuses each action may start from; anything else is refused by the "lifecycle" rule.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "edit": ("draft", "submitted", "changes_requested", "approved", "stale"),
    "submit": ("draft", "changes_requested", "stale"),
    "approve": ("submitted",),
    "reject": ("submitted", "changes_requested", "approved", "stale"),
    "request_changes": ("submitted", "approved"),
    "withdraw": store.OPEN_STATUSES,
    "apply": ("approved",),
}


class ProposalFile(BaseModel):
    """What `labelgov propose FILE` reads: a batch of operations against a base version, with a rationale."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    rationale: str = Field(min_length=1)
    base_version: int | None = None
    operations: list[Operation] = Field(min_length=1)


class Proposal(BaseModel):
    """A stored proposal as front ends show it."""

    proposal_id: int
    title: str
    rationale: str
    base_version: int
    proposer: str
    status: str
    compat_class: CompatClass
    proposal_hash: str
    target_hash: str
    report_hash: str | None
    applied_version: int | None
    operations: list[Operation]
    editors: list[str]
    approvers: list[str]
    approvals_needed: int
    needs_acknowledgement: bool

    def report(self, con: duckdb.DuckDBPyConnection) -> ImpactReport | None:
        raw = store.get_proposal(con, self.proposal_id)["report"]
        return None if raw is None else ImpactReport.model_validate_json(raw)


def approvals_needed(compat: CompatClass) -> int:
    return 2 if compat is CompatClass.NEEDS_RELABEL else 1


def needs_acknowledgement(compat: CompatClass) -> bool:
    return compat.rank >= CompatClass.STRUCTURAL.rank


def parse_proposal(text: str, source: str = "proposal file") -> ProposalFile:
    """Validate a proposal's YAML; one LabelgovError naming the place at fault."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabelgovError(f"{source}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise LabelgovError(f"{source}: expected a mapping with keys title, rationale and operations")
    try:
        return ProposalFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise LabelgovError(f"{source}: {where}: {first['msg']}") from exc


def read_proposal_file(path: str | Path) -> tuple[ProposalFile, str]:
    file = Path(path)
    if not file.is_file():
        raise LabelgovError(f"{file}: no such proposal file")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelgovError(f"{file}: not UTF-8 text; save the proposal file as UTF-8") from exc
    return parse_proposal(text, str(file)), text


def proposal_hash(title: str, rationale: str, base_version: int, operations: list[Any]) -> str:
    body = {
        "title": title,
        "rationale": rationale,
        "base_version": base_version,
        "operations": [op.model_dump(mode="json") for op in operations],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load(con: duckdb.DuckDBPyConnection, proposal_id: int) -> Proposal:
    rec = store.get_proposal(con, proposal_id)
    ops = _OPERATIONS.validate_python([json.loads(s) for s in store.operations(con, proposal_id)["spec"]])
    compat = CompatClass(rec["compat_class"])
    base_hash = require_version(con, int(rec["base_version"]))
    return Proposal(
        proposal_id=int(rec["proposal_id"]),
        title=rec["title"],
        rationale=rec["rationale"],
        base_version=int(rec["base_version"]),
        proposer=rec["proposer"],
        status=rec["status"],
        compat_class=compat,
        proposal_hash=rec["proposal_hash"],
        target_hash=rec["target_hash"],
        report_hash=rec["report_hash"],
        applied_version=None if rec["applied_version"] is None else int(rec["applied_version"]),
        operations=ops,
        editors=sorted(store.editors(con, proposal_id)),
        approvers=store.valid_approvers(con, proposal_id, rec["proposal_hash"], rec["report_hash"], base_hash),
        approvals_needed=approvals_needed(compat),
        needs_acknowledgement=needs_acknowledgement(compat),
    )


def list_proposals(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return store.list_proposals(con)


def check_lifecycle(proposal: Proposal, action: str) -> None:
    if proposal.status not in ALLOWED_FROM[action]:
        allowed = ", ".join(ALLOWED_FROM[action])
        raise PermissionRefused(
            "lifecycle",
            f"cannot {action.replace('_', ' ')} proposal {proposal.proposal_id} while it is {proposal.status} "
            f"(allowed from: {allowed})",
        )


def record_transition(
    con: duckdb.DuckDBPyConnection,
    proposal: Proposal,
    *,
    actor: str,
    role: str,
    action: str,
    to_status: str,
    comment: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Status change, history row and audit event: always written together, in the caller's transaction."""
    store.set_status(con, proposal.proposal_id, to_status)
    store.add_event(
        con,
        proposal.proposal_id,
        actor=actor,
        action=action,
        from_status=proposal.status,
        to_status=to_status,
        comment=comment,
    )
    append_event(
        con,
        actor=actor,
        role=role,
        action=f"proposal.{action}",
        payload={
            "proposal_id": proposal.proposal_id,
            "from_status": proposal.status,
            "to_status": to_status,
            "proposal_hash": proposal.proposal_hash,
            "comment": comment,
            **(extra or {}),
        },
    )


def role_name(role: Any) -> str:
    return str(getattr(role, "value", role))


def _write(
    con: duckdb.DuckDBPyConnection, proposal_id: int, spec: ProposalFile, base_version: int, source_text: str | None
) -> None:
    """Play the operations now, so that a proposal that cannot apply to its base is refused at once."""
    batch = play(load_tree(con, base_version), spec.operations)
    ops = pd.DataFrame(
        {
            "seq": range(1, len(spec.operations) + 1),
            "op": [op.op for op in spec.operations],
            "compat_class": [c.value for c in batch.classes],
            "spec": [json.dumps(op.model_dump(mode="json"), sort_keys=True) for op in spec.operations],
        }
    )
    store.write_content(
        con,
        proposal_id,
        title=spec.title,
        rationale=spec.rationale,
        base_version=base_version,
        compat_class=batch.compat_class.value,
        proposal_hash=proposal_hash(spec.title, spec.rationale, base_version, spec.operations),
        target_hash=batch.tree.content_hash(),
        source_text=source_text,
        operations=ops,
    )


def _base_of(con: duckdb.DuckDBPyConnection, spec: ProposalFile) -> int:
    latest = latest_version(con)
    if latest is None:
        raise LabelgovError("the warehouse has no label tree yet: run `labelgov tree import FILE` first")
    base = spec.base_version if spec.base_version is not None else latest
    require_version(con, base)
    if base != latest:
        raise LabelgovError(
            f"base version {base} is not the current tree (version {latest}); write the proposal against "
            f"version {latest} or leave base_version out"
        )
    return base


def create(
    con: duckdb.DuckDBPyConnection, spec: ProposalFile, *, user: str, source_text: str | None = None
) -> Proposal:
    """A new draft; the proposer is its first author and so can never approve it."""
    role = require_capability(con, user, "propose")
    with transaction(con):
        base = _base_of(con, spec)
        proposal_id = store.next_proposal_id(con)
        store.insert_proposal(con, proposal_id, user, "draft")
        _write(con, proposal_id, spec, base, source_text)
        store.add_editor(con, proposal_id, user)
        created = load(con, proposal_id)
        store.add_event(
            con, proposal_id, actor=user, action="propose", from_status=None, to_status="draft", comment=None
        )
        append_event(
            con,
            actor=user,
            role=role_name(role),
            action="proposal.propose",
            payload={
                "proposal_id": proposal_id,
                "base_version": base,
                "proposal_hash": created.proposal_hash,
                "compat_class": created.compat_class.value,
                "operations": len(spec.operations),
            },
        )
    return load(con, proposal_id)


def edit(
    con: duckdb.DuckDBPyConnection, proposal_id: int, spec: ProposalFile, *, user: str, source_text: str | None = None
) -> Proposal:
    """Replace the content; the editor joins the authors and every approval so far becomes void."""
    role = require_capability(con, user, "edit")
    mark_stale_if_base_moved(con, proposal_id, user=user)
    with transaction(con):
        proposal = load(con, proposal_id)
        check_lifecycle(proposal, "edit")
        _write(con, proposal_id, spec, _base_of(con, spec), source_text)
        store.add_editor(con, proposal_id, user)
        store.void_reviews(con, proposal_id)
        to_status = "stale" if proposal.status == "approved" else "draft"
        record_transition(
            con,
            proposal,
            actor=user,
            role=role_name(role),
            action="edit",
            to_status=to_status,
            extra={"new_proposal_hash": load(con, proposal_id).proposal_hash},
        )
    return load(con, proposal_id)


def mark_stale_if_base_moved(con: duckdb.DuckDBPyConnection, proposal_id: int, *, user: str) -> bool:
    """Detect a base that moved on before any action, and commit the stale state on its own.

    The stale mark is a fact about the proposal, not part of the refused action, so it must survive the
    refusal that usually follows.
    """
    proposal = load(con, proposal_id)
    if proposal.status not in ("submitted", "changes_requested", "approved", "draft"):
        return False
    if proposal.base_version == latest_version(con):
        return False
    with transaction(con):
        make_stale(con, proposal, actor=user, reason="base version moved on")
    return True


def make_stale(con: duckdb.DuckDBPyConnection, proposal: Proposal, *, actor: str, reason: str) -> None:
    """Void every approval; the caller owns the transaction."""
    store.void_reviews(con, proposal.proposal_id)
    record_transition(con, proposal, actor=actor, role="system", action="stale", to_status="stale", comment=reason)


def submit(con: duckdb.DuckDBPyConnection, proposal_id: int, *, user: str, comment: str | None = None) -> Proposal:
    """Compute and store the impact report; a stale proposal is replayed on the current tree first."""
    role = require_capability(con, user, "submit")
    mark_stale_if_base_moved(con, proposal_id, user=user)
    with transaction(con):
        proposal = load(con, proposal_id)
        check_lifecycle(proposal, "submit")
        latest = latest_version(con)
        if latest is not None and proposal.base_version != latest:
            spec = ProposalFile(
                title=proposal.title, rationale=proposal.rationale, base_version=latest, operations=proposal.operations
            )
            _write(con, proposal_id, spec, latest, store.get_proposal(con, proposal_id)["source_text"])
            proposal = load(con, proposal_id)
        report = compute_report(
            con,
            proposal_id=proposal_id,
            proposal_hash=proposal.proposal_hash,
            base_version=proposal.base_version,
            operations=proposal.operations,
        )
        digest = report.digest()
        store.write_report(con, proposal_id, report.model_dump(mode="json"), digest)
        store.void_reviews(con, proposal_id)
        record_transition(
            con,
            proposal,
            actor=user,
            role=role_name(role),
            action="submit",
            to_status="submitted",
            comment=comment,
            extra={"report_hash": digest, "base_version": proposal.base_version},
        )
    return load(con, proposal_id)


def approve(
    con: duckdb.DuckDBPyConnection,
    proposal_id: int,
    *,
    user: str,
    ack_report: str | None = None,
    comment: str | None = None,
) -> Proposal:
    """Sign the proposal, its report and its base; approved once the class's tier is met."""
    role = require_capability(con, user, "approve")
    mark_stale_if_base_moved(con, proposal_id, user=user)
    with transaction(con):
        proposal = load(con, proposal_id)
        check_lifecycle(proposal, "approve")
        if user == proposal.proposer or user in proposal.editors:
            raise PermissionRefused(
                "four-eyes",
                f"{user} proposed or edited proposal {proposal_id} and may not approve it, whatever their role; "
                "another steward must",
            )
        if user in proposal.approvers:
            raise PermissionRefused(
                "distinct-approvers",
                f"{user} has already approved proposal {proposal_id}; "
                f"it needs {proposal.approvals_needed} different stewards",
            )
        acknowledged = _acknowledged(proposal, ack_report)
        store.add_review(
            con,
            proposal_id,
            reviewer=user,
            decision="approve",
            comment=comment,
            proposal_hash=proposal.proposal_hash,
            report_hash=proposal.report_hash,
            base_version=proposal.base_version,
            base_hash=require_version(con, proposal.base_version),
            acknowledged_report=acknowledged,
        )
        approvers = load(con, proposal_id).approvers
        done = len(approvers) >= proposal.approvals_needed
        record_transition(
            con,
            proposal,
            actor=user,
            role=role_name(role),
            action="approve",
            to_status="approved" if done else "submitted",
            comment=comment,
            extra={
                "report_hash": proposal.report_hash,
                "approvals": len(approvers),
                "approvals_needed": proposal.approvals_needed,
                "acknowledged_report": acknowledged,
            },
        )
    return load(con, proposal_id)


def _acknowledged(proposal: Proposal, ack_report: str | None) -> bool:
    """Structural and heavier changes need the steward to name the report they read, by its hash."""
    if ack_report is None:
        if proposal.needs_acknowledgement:
            raise PermissionRefused(
                "impact-acknowledgement",
                f"proposal {proposal.proposal_id} is {proposal.compat_class.value}; read its impact report "
                f"(`labelgov proposal show {proposal.proposal_id}`) and pass --ack-report {proposal.report_hash}",
            )
        return False
    ack = ack_report.strip().lower()
    if len(ack) < MIN_ACK_CHARS or not (proposal.report_hash or "").startswith(ack):
        raise PermissionRefused(
            "impact-acknowledgement",
            f"{ack_report!r} is not the hash of proposal {proposal.proposal_id}'s current impact report "
            f"({proposal.report_hash}); read the report again and pass its hash (at least {MIN_ACK_CHARS} "
            "characters)",
        )
    return True


def _review(
    con: duckdb.DuckDBPyConnection, proposal_id: int, *, user: str, action: str, to_status: str, comment: str | None
) -> Proposal:
    """Reject or request changes: a recorded decision with a reason; the tree is never touched."""
    if not comment or not comment.strip():
        raise LabelgovError(f"{action.replace('_', ' ')} needs a comment saying why (--comment TEXT)")
    role = require_capability(con, user, action)
    with transaction(con):
        proposal = load(con, proposal_id)
        check_lifecycle(proposal, action)
        store.add_review(
            con,
            proposal_id,
            reviewer=user,
            decision=action,
            comment=comment,
            proposal_hash=proposal.proposal_hash,
            report_hash=proposal.report_hash,
            base_version=proposal.base_version,
            base_hash=require_version(con, proposal.base_version),
            acknowledged_report=False,
        )
        store.void_reviews(con, proposal_id)
        record_transition(
            con, proposal, actor=user, role=role_name(role), action=action, to_status=to_status, comment=comment
        )
    return load(con, proposal_id)


def reject(con: duckdb.DuckDBPyConnection, proposal_id: int, *, user: str, comment: str | None) -> Proposal:
    return _review(con, proposal_id, user=user, action="reject", to_status="rejected", comment=comment)


def request_changes(con: duckdb.DuckDBPyConnection, proposal_id: int, *, user: str, comment: str | None) -> Proposal:
    return _review(
        con, proposal_id, user=user, action="request_changes", to_status="changes_requested", comment=comment
    )


def withdraw(con: duckdb.DuckDBPyConnection, proposal_id: int, *, user: str, comment: str | None = None) -> Proposal:
    role = require_capability(con, user, "withdraw")
    with transaction(con):
        proposal = load(con, proposal_id)
        if user != proposal.proposer:
            raise PermissionRefused(
                "proposer-withdraws",
                f"only the proposer ({proposal.proposer}) may withdraw proposal {proposal_id}; "
                "a steward rejects it instead",
            )
        check_lifecycle(proposal, "withdraw")
        store.void_reviews(con, proposal_id)
        record_transition(
            con, proposal, actor=user, role=role_name(role), action="withdraw", to_status="withdrawn", comment=comment
        )
    return load(con, proposal_id)


def history(con: duckdb.DuckDBPyConnection, proposal_id: int) -> pd.DataFrame:
    store.get_proposal(con, proposal_id)
    return store.events(con, proposal_id)


def reviews(con: duckdb.DuckDBPyConnection, proposal_id: int) -> pd.DataFrame:
    store.get_proposal(con, proposal_id)
    return store.reviews(con, proposal_id)
