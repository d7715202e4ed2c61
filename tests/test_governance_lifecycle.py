"""Every lifecycle transition, the approval tiers, stale approvals, four eyes for every role, audit events."""

from __future__ import annotations

import pytest
from test_governance_fixtures import build, fresh_warehouse, insert_answers

from governance import apply as applying
from governance import proposals as P
from governance.roles import PermissionRefused, grant
from queries.errors import LabelgovError
from queries.taxonomy import latest_version

RENAME = {"op": "rename", "node_id": "dog", "title": "Dog"}
ADD = {"op": "add", "node_id": "owl", "parent_id": "bird"}
MOVE = {"op": "move", "node_id": "finch", "new_parent_id": "mammal"}
MERGE = {"op": "merge", "nodes": ["lynx"], "into": "cat"}
SPLIT = {"op": "split", "node_id": "dog", "into": [{"node_id": "small_dog"}, {"node_id": "big_dog"}]}

warehouse = pytest.fixture(fresh_warehouse, name="warehouse")


def spec(*ops: dict, title: str = "change", base: int | None = None) -> P.ProposalFile:
    return P.ProposalFile.model_validate(
        {"title": title, "rationale": "because", "base_version": base, "operations": list(ops)}
    )


def submitted(con, *ops: dict, user: str = "alice") -> P.Proposal:
    created = P.create(con, spec(*ops), user=user)
    return P.submit(con, created.proposal_id, user=user)


def audit_actions(con) -> list[str]:
    return [r[0] for r in con.execute("SELECT action FROM audit_log ORDER BY seq").fetchall()]


@pytest.mark.parametrize(("ops", "stewards", "ack"), [((RENAME,), 1, False), ((ADD,), 1, False)])
def test_cosmetic_and_additive_need_one_steward_without_acknowledgement(warehouse, ops, stewards, ack):
    p = submitted(warehouse, *ops)
    assert (p.approvals_needed, p.needs_acknowledgement) == (stewards, ack)
    assert P.approve(warehouse, p.proposal_id, user="bob").status == "approved"
    result = applying.apply(warehouse, p.proposal_id, user="bob")
    assert result.to_version == latest_version(warehouse) == 2


@pytest.mark.parametrize("ops", [(MOVE,), (MERGE,)])
def test_structural_and_lossy_need_the_report_hash(warehouse, ops):
    p = submitted(warehouse, *ops)
    assert (p.approvals_needed, p.needs_acknowledgement) == (1, True)
    with pytest.raises(PermissionRefused, match="impact-acknowledgement"):
        P.approve(warehouse, p.proposal_id, user="bob")
    with pytest.raises(PermissionRefused, match="impact-acknowledgement"):
        P.approve(warehouse, p.proposal_id, user="bob", ack_report="0" * 64)
    assert P.approve(warehouse, p.proposal_id, user="bob", ack_report=p.report_hash[:16]).status == "approved"


def test_needs_relabelling_needs_two_different_stewards(warehouse):
    p = submitted(warehouse, SPLIT)
    assert p.approvals_needed == 2
    once = P.approve(warehouse, p.proposal_id, user="bob", ack_report=p.report_hash)
    assert (once.status, once.approvers) == ("submitted", ["bob"])
    with pytest.raises(PermissionRefused, match="distinct-approvers"):
        P.approve(warehouse, p.proposal_id, user="bob", ack_report=p.report_hash)
    with pytest.raises(PermissionRefused, match="lifecycle"):
        applying.apply(warehouse, p.proposal_id, user="bob")
    twice = P.approve(warehouse, p.proposal_id, user="dave", ack_report=p.report_hash)
    assert (twice.status, twice.approvers) == ("approved", ["bob", "dave"])


@pytest.mark.parametrize("role", ["proposer", "steward", "admin"])
def test_four_eyes_the_proposer_never_approves(role):
    con = build()
    grant(con, admin_user="root", user="pat", role=role)
    p = submitted(con, RENAME, user="pat")
    rule = "role-required" if role == "proposer" else "four-eyes"
    with pytest.raises(PermissionRefused, match=rule):
        P.approve(con, p.proposal_id, user="pat")
    assert P.load(con, p.proposal_id).status == "submitted"


@pytest.mark.parametrize("role", ["steward", "admin"])
def test_four_eyes_an_editor_never_approves(role):
    con = build()
    grant(con, admin_user="root", user="ed", role=role)
    p = P.create(con, spec(RENAME), user="alice")
    P.edit(con, p.proposal_id, spec(RENAME, ADD), user="ed")
    p = P.submit(con, p.proposal_id, user="alice")
    assert p.editors == ["alice", "ed"]
    with pytest.raises(PermissionRefused, match="four-eyes"):
        P.approve(con, p.proposal_id, user="ed")
    assert P.approve(con, p.proposal_id, user="bob").status == "approved"


@pytest.mark.parametrize("user", ["vic", "aud", "alice", "nobody"])
def test_roles_without_approval_capability_are_refused(warehouse, user):
    p = submitted(warehouse, RENAME, user="bob")
    with pytest.raises(PermissionRefused, match="role-required"):
        P.approve(warehouse, p.proposal_id, user=user)


@pytest.mark.parametrize("user", ["vic", "aud", "nobody"])
def test_viewers_and_auditors_cannot_propose(warehouse, user):
    with pytest.raises(PermissionRefused, match="role-required"):
        P.create(warehouse, spec(RENAME), user=user)


def test_request_changes_edit_resubmit(warehouse):
    p = submitted(warehouse, MERGE)
    with pytest.raises(LabelgovError, match="needs a comment"):
        P.request_changes(warehouse, p.proposal_id, user="bob", comment=None)
    back = P.request_changes(warehouse, p.proposal_id, user="bob", comment="also rename cat")
    assert back.status == "changes_requested"
    with pytest.raises(PermissionRefused, match="lifecycle"):
        P.approve(warehouse, p.proposal_id, user="bob", ack_report=p.report_hash)
    edited = P.edit(
        warehouse, p.proposal_id, spec(MERGE, {"op": "rename", "node_id": "cat", "title": "Felid"}), user="alice"
    )
    assert edited.status == "draft" and edited.proposal_hash != p.proposal_hash
    again = P.submit(warehouse, p.proposal_id, user="alice")
    assert again.status == "submitted" and again.report_hash != p.report_hash
    history = P.history(warehouse, p.proposal_id)
    assert history["to_status"].tolist() == ["draft", "submitted", "changes_requested", "draft", "submitted"]


def test_rejection_never_alters_the_tree_and_is_final(warehouse):
    before = warehouse.execute("SELECT count(*) FROM tree_nodes").fetchall()
    p = submitted(warehouse, MERGE)
    assert P.reject(warehouse, p.proposal_id, user="bob", comment="no").status == "rejected"
    assert warehouse.execute("SELECT count(*) FROM tree_nodes").fetchall() == before
    assert latest_version(warehouse) == 1
    for action in (
        lambda: P.submit(warehouse, p.proposal_id, user="alice"),
        lambda: P.withdraw(warehouse, p.proposal_id, user="alice"),
        lambda: applying.apply(warehouse, p.proposal_id, user="bob"),
    ):
        with pytest.raises(PermissionRefused, match="lifecycle"):
            action()


def test_only_the_proposer_withdraws(warehouse):
    p = submitted(warehouse, RENAME)
    with pytest.raises(PermissionRefused, match="proposer-withdraws"):
        P.withdraw(warehouse, p.proposal_id, user="bob")
    assert P.withdraw(warehouse, p.proposal_id, user="alice").status == "withdrawn"
    with pytest.raises(PermissionRefused, match="lifecycle"):
        P.approve(warehouse, p.proposal_id, user="bob")


def test_invalid_transitions_are_refused_by_the_lifecycle_rule(warehouse):
    p = P.create(warehouse, spec(RENAME), user="alice")
    with pytest.raises(PermissionRefused, match="lifecycle"):
        P.approve(warehouse, p.proposal_id, user="bob")
    with pytest.raises(PermissionRefused, match="lifecycle"):
        applying.apply(warehouse, p.proposal_id, user="bob")
    with pytest.raises(PermissionRefused, match="lifecycle"):
        P.reject(warehouse, p.proposal_id, user="bob", comment="draft")


def test_base_moving_on_makes_other_proposals_stale_and_voids_approvals(warehouse):
    first = submitted(warehouse, RENAME)
    second = submitted(warehouse, ADD)
    P.approve(warehouse, second.proposal_id, user="carol")
    P.approve(warehouse, first.proposal_id, user="bob")
    applying.apply(warehouse, first.proposal_id, user="bob")
    stale = P.load(warehouse, second.proposal_id)
    assert (stale.status, stale.approvers) == ("stale", [])
    with pytest.raises(PermissionRefused, match="lifecycle"):
        applying.apply(warehouse, second.proposal_id, user="bob")
    rebased = P.submit(warehouse, second.proposal_id, user="alice")
    assert (rebased.status, rebased.base_version) == ("submitted", 2)
    P.approve(warehouse, second.proposal_id, user="carol")
    assert applying.apply(warehouse, second.proposal_id, user="carol").from_version == 2


def test_editing_after_approval_makes_it_stale(warehouse):
    p = submitted(warehouse, RENAME)
    P.approve(warehouse, p.proposal_id, user="bob")
    edited = P.edit(warehouse, p.proposal_id, spec(RENAME, ADD), user="alice")
    assert (edited.status, edited.approvers) == ("stale", [])


def test_report_changing_after_approval_voids_it_at_apply(warehouse):
    p = submitted(warehouse, MERGE)
    P.approve(warehouse, p.proposal_id, user="bob", ack_report=p.report_hash)
    answers = warehouse.execute("SELECT item_id, annotator_id, node_id FROM annotations LIMIT 5").df()
    insert_answers(warehouse, answers.assign(annotator_id="late"), 1, prefix="late")
    with pytest.raises(PermissionRefused, match="signed-report"):
        applying.apply(warehouse, p.proposal_id, user="bob")
    assert P.load(warehouse, p.proposal_id).status == "stale"
    assert latest_version(warehouse) == 1
    fresh = P.submit(warehouse, p.proposal_id, user="alice")
    assert fresh.report_hash != p.report_hash
    P.approve(warehouse, p.proposal_id, user="bob", ack_report=fresh.report_hash)
    assert applying.apply(warehouse, p.proposal_id, user="bob").to_version == 2


def test_a_proposal_against_an_old_base_is_refused(warehouse):
    p = submitted(warehouse, RENAME)
    P.approve(warehouse, p.proposal_id, user="bob")
    applying.apply(warehouse, p.proposal_id, user="bob")
    with pytest.raises(LabelgovError, match="base version 1 is not the current tree"):
        P.create(warehouse, spec(ADD, base=1), user="alice")


def test_every_action_appends_an_audit_event(warehouse):
    start = len(audit_actions(warehouse))
    p = P.create(warehouse, spec(MERGE), user="alice")
    P.submit(warehouse, p.proposal_id, user="alice")
    P.request_changes(warehouse, p.proposal_id, user="bob", comment="why")
    P.submit(warehouse, p.proposal_id, user="alice")
    p = P.approve(warehouse, p.proposal_id, user="bob", ack_report=P.load(warehouse, p.proposal_id).report_hash)
    applying.apply(warehouse, p.proposal_id, user="carol")
    assert audit_actions(warehouse)[start:] == [
        "proposal.propose",
        "proposal.submit",
        "proposal.request_changes",
        "proposal.submit",
        "proposal.approve",
        "proposal.apply",
        "tree.version",
    ]


def test_a_refused_action_writes_nothing(warehouse):
    p = submitted(warehouse, RENAME)
    before = (len(audit_actions(warehouse)), len(P.history(warehouse, p.proposal_id)))
    with pytest.raises(PermissionRefused):
        P.approve(warehouse, p.proposal_id, user="alice")
    assert (len(audit_actions(warehouse)), len(P.history(warehouse, p.proposal_id))) == before
