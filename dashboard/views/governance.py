"""Governance: change proposals with their impact reports, decisions, and the tree's version history.

Decisions are checked by the governance layer itself (roles, lifecycle, acknowledgement); the page only
passes the signed-in user and shows a refusal as the message the governance layer wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from dashboard import access
from dashboard.components import empty_state, fmt, guarded, table
from dashboard.identity import current_identity
from governance import proposals, versions
from governance.impact import ImpactReport
from governance.proposals import Proposal
from queries.errors import LabelgovError
from queries.filters import Filters


def proposal_with_report(con: duckdb.DuckDBPyConnection, proposal_id: int) -> tuple[Proposal, ImpactReport | None]:
    proposal = proposals.load(con, proposal_id)
    return proposal, proposal.report(con)


def _decide(action: Callable[..., Any], proposal_id: int, **kwargs: Any) -> None:
    """Run one decision as the signed-in user; a refusal is shown, never raised."""
    user = current_identity().user
    try:
        with access.writing() as con:
            result = action(con, proposal_id, user=user, **kwargs)
    except LabelgovError as exc:
        st.error(str(exc))
        return
    st.success(f"Proposal {proposal_id} is now {result.status}.")


def _report(report: ImpactReport | None) -> None:
    if report is None:
        st.caption("No impact report yet: it is computed when the proposal is submitted.")
        return
    cols = st.columns(4)
    cols[0].metric("Compatibility", str(report.compat_class))
    cols[1].metric("Alpha before → after", f"{fmt(report.alpha_before, 'ratio')} → {fmt(report.alpha_after, 'ratio')}")
    cost = report.relabel_cost
    cols[2].metric("Relabel cost", f"{fmt(cost.low, 'money')}–{fmt(cost.high, 'money')}")
    cols[3].metric("Reversible", "yes" if report.reversible else "no", help=report.reversibility)
    st.dataframe(pd.DataFrame([op.model_dump() for op in report.operations]), hide_index=True)
    if report.affected:
        st.dataframe(pd.DataFrame([n.model_dump() for n in report.affected]), hide_index=True)
    if report.conflicts:
        st.warning("Conflicts: " + "; ".join(str(c.model_dump()) for c in report.conflicts))
    st.caption(f"Report hash {report.digest()}")


def _rules(proposal: Proposal) -> None:
    """The checks an approval must pass, stated before anyone clicks; governance/ enforces them again."""
    user = current_identity().user
    blocked = sorted({proposal.proposer, *proposal.editors})
    lines = [
        f"Needs {proposal.approvals_needed} steward approval(s); valid so far: "
        + (", ".join(proposal.approvers) or "none") + ".",
        "Four eyes: " + ", ".join(blocked) + " proposed or edited it and cannot approve it, whatever their role.",
    ]
    if proposal.needs_acknowledgement:
        lines.append("The approval must acknowledge this impact report (its hash is signed with the approval).")
    if user in blocked:
        lines.append(f"You ({user}) cannot approve this proposal.")
    st.caption("  \n".join(lines))


def _actions(proposal: Proposal) -> None:
    st.markdown("**Decision**")
    _rules(proposal)
    comment = st.text_area("Comment", key=f"gov_comment_{proposal.proposal_id}")
    ack = None
    readable = proposal.needs_acknowledgement and proposal.report_hash
    if readable and st.checkbox("I have read the impact report above", key=f"gov_ack_{proposal.proposal_id}"):
        ack = proposal.report_hash
    cols = st.columns(3)
    pid = proposal.proposal_id
    if cols[0].button("Approve", key=f"gov_approve_{pid}", type="primary"):
        _decide(proposals.approve, pid, ack_report=ack, comment=comment or None)
    if cols[1].button("Reject", key=f"gov_reject_{pid}"):
        _decide(proposals.reject, pid, comment=comment or None)
    if cols[2].button("Comment and request changes", key=f"gov_changes_{pid}"):
        _decide(proposals.request_changes, pid, comment=comment or None)


def _proposals(filters: Filters) -> None:
    listing = access.call(proposals.list_proposals)
    if listing.empty:
        empty_state("No change proposals yet.", "Create one with `labelgov propose FILE`.")
        return
    table(listing, "proposals", filters, key="gov_list")
    pid = st.selectbox("Proposal", listing["proposal_id"].tolist(), format_func=lambda i: f"#{i} · " + str(
        listing.loc[listing["proposal_id"] == i, "title"].iloc[0]), key="gov_pick")
    proposal, report = access.call(proposal_with_report, int(pid))
    st.markdown(f"**#{proposal.proposal_id} {proposal.title}** — {proposal.status}, by {proposal.proposer}; "
                f"approvals {len(proposal.approvers)}/{proposal.approvals_needed}")
    st.write(proposal.rationale)
    _report(report)
    table(access.call(proposals.history, int(pid)), f"proposal_{pid}_history", filters, key="gov_history")
    _actions(proposal)


def _versions(filters: Filters) -> None:
    st.subheader("Tree versions")
    listing = access.call(versions.versions)
    table(listing, "tree_versions", filters, key="gov_versions")
    numbers = listing["tree_version"].astype(int).tolist()
    if len(numbers) < 2:
        st.caption("Only one tree version so far: nothing to compare.")
        return
    left, right = st.columns(2)
    old = left.selectbox("From version", numbers[:-1], index=len(numbers) - 2, key="gov_diff_old")
    new = right.selectbox("To version", [n for n in numbers if n > old], key="gov_diff_new")
    table(access.call(versions.diff, int(old), int(new)), f"tree_diff_{old}_{new}", filters, key="gov_diff")


def render(filters: Filters) -> None:
    st.title("Governance")
    with guarded("Loading proposals…"):
        _proposals(filters)
    with guarded("Loading tree versions…"):
        _versions(filters)
