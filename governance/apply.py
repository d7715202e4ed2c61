"""Applying an approved proposal: a new tree version, the stored mapping, checks, all in one transaction.

Applying is idempotent: a proposal applied before returns its recorded migration. Before writing anything,
the impact report is recomputed; if the data moved so that it no longer matches the report the stewards
signed, the proposal goes stale instead. After writing, the stored mapping is read back and checked
(every annotation keeps a landing place, counts are conserved along the mapping, nothing active points at
a replaced node); a failed check rolls the whole migration back. Undoing is a new, compensating proposal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import BaseModel

from governance.audit import append_event
from governance.impact import compute_report
from governance.operations import PlayedBatch, play
from governance.proposals import (
    Proposal,
    check_lifecycle,
    load,
    make_stale,
    mark_stale_if_base_moved,
    record_transition,
    role_name,
)
from governance.roles import PermissionRefused, require_capability
from queries import governance_apply as checks
from queries import governance_store as store
from queries.connection import bump_data_version, transaction
from queries.errors import LabelgovError
from queries.governance_versions import require_version, store_closure
from queries.taxonomy import load_tree, store_tree


class MigrationResult(BaseModel):
    proposal_id: int
    migration_id: int
    from_version: int
    to_version: int
    checksum: str
    annotations_mapped: int
    annotations_to_relabel: int
    items_to_relabel: int
    already_applied: bool = False


class CheckFailed(LabelgovError):
    """A post-apply check found the migration unsound; the transaction is rolled back."""


def _result(record: dict[str, Any], already: bool) -> MigrationResult:
    fields = {k: record[k] for k in MigrationResult.model_fields if k in record}
    return MigrationResult.model_validate({**fields, "already_applied": already})


def check_conservation(con: duckdb.DuckDBPyConnection, base_version: int, new_version: int, batch: PlayedBatch) -> None:
    """Counts as of the new version equal base counts carried along the mapping (a merge target = sum)."""
    missing = checks.unmapped_annotations(con, new_version)
    if missing:
        raise CheckFailed(f"conservation check: {missing} annotations have no node in version {new_version}")
    before = checks.counts_as_of(con, base_version)
    after = checks.counts_as_of(con, new_version).set_index("node_id")["annotations"]
    expected = (
        before.merge(batch.edge_frame(), left_on="node_id", right_on="base_node", how="left")
        .groupby("new_node")["annotations"]
        .sum()
    )
    compared = pd.concat({"expected": expected, "found": after}, axis=1).fillna(0)
    wrong = compared[compared["expected"] != compared["found"]]
    if not wrong.empty:
        detail = ", ".join(f"{n}: expected {int(r.expected)}, found {int(r.found)}" for n, r in wrong.iterrows())
        raise CheckFailed(f"conservation check: annotation counts not conserved in version {new_version}: {detail}")


def check_replacements(con: duckdb.DuckDBPyConnection, new_version: int) -> None:
    dangling = checks.stale_references(con, new_version)
    if not dangling.empty:
        detail = ", ".join(f"{r.referrer} -> {r.refers_to}" for r in dangling.itertuples())
        raise CheckFailed(f"replacement check: still pointing at replaced nodes in version {new_version}: {detail}")


def migration_checksum(con: duckdb.DuckDBPyConnection, migration_id: int, head: dict[str, Any]) -> str:
    """SHA-256 over what the migration decided: versions, hashes and every stored mapping row."""
    rows = store.migration_mapping(con, migration_id)
    body = {**head, "mapping": rows.astype({"automatic": bool}).values.tolist()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def verify_migration(con: duckdb.DuckDBPyConnection, proposal_id: int) -> bool:
    """Recompute a stored migration's checksum: false means its mapping rows were altered since."""
    record = store.migration_for(con, proposal_id)
    if record is None:
        raise LabelgovError(f"proposal {proposal_id} has not been applied")
    return record["checksum"] == migration_checksum(con, int(record["migration_id"]), _head(con, record))


def _head(con: duckdb.DuckDBPyConnection, record: dict[str, Any]) -> dict[str, Any]:
    """What the checksum binds besides the mapping rows: the signed proposal and report, both versions."""
    proposal = store.get_proposal(con, int(record["proposal_id"]))
    old, new = int(record["from_version"]), int(record["to_version"])
    return {
        "proposal_hash": proposal["proposal_hash"],
        "report_hash": proposal["report_hash"],
        "from_version": old,
        "to_version": new,
        "from_hash": require_version(con, old),
        "to_hash": require_version(con, new),
    }


def apply(con: duckdb.DuckDBPyConnection, proposal_id: int, *, user: str) -> MigrationResult:
    """Create the new version and its mapping, or return the migration recorded before."""
    role = require_capability(con, user, "apply")
    done = store.migration_for(con, proposal_id)
    if done is not None:
        return _result(done, already=True)
    mark_stale_if_base_moved(con, proposal_id, user=user)
    proposal = load(con, proposal_id)
    check_lifecycle(proposal, "apply")
    if len(proposal.approvers) < proposal.approvals_needed:
        raise PermissionRefused(
            "approval-tier",
            f"proposal {proposal_id} ({proposal.compat_class.value}) has {len(proposal.approvers)} valid "
            f"approval(s) and needs {proposal.approvals_needed}",
        )
    fresh = compute_report(
        con,
        proposal_id=proposal_id,
        proposal_hash=proposal.proposal_hash,
        base_version=proposal.base_version,
        operations=proposal.operations,
    ).digest()
    if fresh != proposal.report_hash:
        with transaction(con):
            make_stale(con, proposal, actor=user, reason="impact report changed since approval")
        raise PermissionRefused(
            "signed-report",
            f"the data changed since proposal {proposal_id} was approved, so its impact report is no longer "
            "the one the stewards signed; the proposal is now stale: submit it again for review",
        )
    with transaction(con):
        result = _write_migration(con, proposal, user=user, role=role_name(role))
    return result


def _write_migration(con: duckdb.DuckDBPyConnection, proposal: Proposal, *, user: str, role: str) -> MigrationResult:
    batch = play(load_tree(con, proposal.base_version), proposal.operations)
    batch.tree.label = f"proposal {proposal.proposal_id}"
    source = store.get_proposal(con, proposal.proposal_id)["source_text"]
    new_version = store_tree(con, batch.tree, created_by=user, parent_version=proposal.base_version, source_text=source)
    migration_id = store.next_migration_id(con)
    store_closure(con, migration_id, proposal.base_version, new_version, batch.edge_frame())
    items = store.queue_relabelling(con, migration_id, new_version, batch.doubtful_nodes())
    check_conservation(con, proposal.base_version, new_version, batch)
    check_replacements(con, new_version)
    totals = checks.counts_as_of(con, new_version)["annotations"].sum()
    doubtful = store.relabel_queue_annotations(con, migration_id)
    record = {
        "migration_id": migration_id,
        "proposal_id": proposal.proposal_id,
        "from_version": proposal.base_version,
        "to_version": new_version,
        "annotations_mapped": int(totals),
        "annotations_to_relabel": doubtful,
        "items_to_relabel": items,
        "applied_by": user,
    }
    record["checksum"] = migration_checksum(con, migration_id, _head(con, record))
    store.insert_migration(con, record)
    store.set_status(con, proposal.proposal_id, "applied", applied_version=new_version)
    record_transition(
        con,
        proposal,
        actor=user,
        role=role,
        action="apply",
        to_status="applied",
        extra={"migration_id": migration_id, "to_version": new_version, "checksum": record["checksum"]},
    )
    for other in store.open_on_base(con, proposal.base_version, proposal.proposal_id):
        make_stale(con, load(con, other), actor=user, reason=f"proposal {proposal.proposal_id} moved the base on")
    append_event(
        con,
        actor=user,
        role=role,
        action="tree.version",
        payload={
            "tree_version": new_version,
            "parent_version": proposal.base_version,
            "content_hash": batch.tree.content_hash(),
            "proposal_id": proposal.proposal_id,
        },
    )
    bump_data_version(con)
    return _result(record, already=False)


def export_relabel_queue(con: duckdb.DuckDBPyConnection, proposal_id: int, path: str | Path) -> int:
    """Write the proposal's relabelling queue as CSV for the labelling tool; returns the rows written."""
    store.get_proposal(con, proposal_id)
    queue = store.relabel_queue(con, proposal_id)
    try:
        queue.to_csv(path, index=False)
    except OSError as exc:
        raise LabelgovError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return len(queue)


def split_shares(con: duckdb.DuckDBPyConnection, proposal_id: int) -> pd.DataFrame:
    """Estimated shares of a split's new nodes among queued items, from relabelled answers and predictions."""
    record = store.migration_for(con, proposal_id)
    if record is None:
        raise LabelgovError(f"proposal {proposal_id} has not been applied, so it has no relabelling queue yet")
    return checks.split_shares(con, int(record["migration_id"]))
