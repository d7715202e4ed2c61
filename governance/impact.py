"""The migration impact report: what a proposal would do to the data, computed before anyone approves it.

The report is computed when a proposal is submitted, stored with its hash, and signed by approvals
together with the proposal and the base version. Floats are rounded before hashing so that recomputing
the report on unchanged data gives the same hash; any change to the data that moves a figure changes it,
which is how an approval learns that it no longer describes what would be applied.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import duckdb
import numpy as np
from pydantic import BaseModel

from governance.operations import CompatClass, NodeMove, PlayedBatch, play
from queries import governance_impact as gi
from queries.governance_versions import require_version
from queries.taxonomy import Tree, load_tree

SAMPLE_ROWS = 20


class OperationLine(BaseModel):
    seq: int
    op: str
    compat_class: CompatClass
    spec: dict[str, Any]


class NodeImpact(BaseModel):
    node_id: str
    annotations: int
    items: int
    annotators: int
    gold_labels: int
    escalations_in_flight: int
    predictions: dict[str, int]


class Range(BaseModel):
    """An interquartile estimate: low and high from the first and third quartiles of the history."""

    low: float | None
    median: float | None
    high: float | None


class BranchQuality(BaseModel):
    branch: str
    nodes: list[str]
    alpha_before: float | None
    alpha_after: float | None
    entropy_before: float | None
    entropy_after: float | None


class ModelAccuracy(BaseModel):
    model: str
    model_version: str
    pairs: int
    accuracy_before: float | None
    accuracy_after: float | None


class Conflict(BaseModel):
    new_node: str
    items: int
    sample_items: list[str]


class ImpactReport(BaseModel):
    proposal_id: int
    proposal_hash: str
    base_version: int
    base_hash: str
    target_hash: str
    compat_class: CompatClass
    operations: list[OperationLine]
    affected: list[NodeImpact]
    totals: dict[str, int]
    relabel_cost: Range
    relabel_hours: Range
    distribution_before: dict[str, int]
    distribution_after: dict[str, int]
    alpha_before: float | None
    alpha_after: float | None
    branches: list[BranchQuality]
    model_accuracy: list[ModelAccuracy]
    conflicts: list[Conflict]
    reversible: bool
    reversibility: str
    mapping: list[NodeMove]
    sample_changes: list[dict[str, Any]]

    def digest(self) -> str:
        return report_hash(self.model_dump(mode="json"))


def _clean(value: Any) -> Any:
    """JSON-safe and reproducible: NaN becomes null and floats keep ten significant digits."""
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if not math.isfinite(number) else float(f"{number:.10g}")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def report_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_clean(body), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def affected_nodes(base: Tree, batch: PlayedBatch, operations: list[Any]) -> list[str]:
    """Base nodes whose annotations move or need relabelling, named by an operation, or carried by a move."""
    known = {n.node_id: n for n in base.nodes}
    touched = {m.base_node for m in batch.mapping if m.new_node != m.base_node or not m.automatic}
    for op in operations:
        named = [getattr(op, "node_id", None), *getattr(op, "nodes", []), getattr(op, "into", None)]
        touched.update(n for n in named if isinstance(n, str) and n in known)
        if op.op == "move":
            prefix = known[op.node_id].path + "/" if op.node_id in known else None
            touched.update(n.node_id for n in base.nodes if prefix and n.path.startswith(prefix))
    return sorted(touched)


def _branches(base: Tree, nodes: list[str]) -> dict[str, list[str]]:
    """The sibling groups the affected nodes live in: the subtree under each affected node's parent."""
    known = {n.node_id: n for n in base.nodes}
    groups: dict[str, list[str]] = {}
    for node_id in nodes:
        parent = known[node_id].parent_id
        prefix = known[parent].path + "/" if parent else ""
        groups[parent or "(top)"] = [n.node_id for n in base.nodes if n.path.startswith(prefix)]
    return groups


def _range(items: int, per_item: list[float | None], per_label: list[float | None], scale: float = 1.0) -> Range:
    if any(v is None for v in (*per_item, *per_label)):
        return Range(low=None, median=None, high=None)
    low, mid, high = (items * float(a) * float(b) / scale for a, b in zip(per_item, per_label, strict=True))
    return Range(low=low, median=mid, high=high)


def compute_report(
    con: duckdb.DuckDBPyConnection,
    *,
    proposal_id: int,
    proposal_hash: str,
    base_version: int,
    operations: list[Any],
) -> ImpactReport:
    """Play the proposal on its base and measure it against the warehouse, under the proposed mapping."""
    base = load_tree(con, base_version)
    batch = play(base, operations)
    nodes = affected_nodes(base, batch, operations)
    gi.create_proposed_mapping(con, base_version, batch.edge_frame(), nodes)
    try:
        counts = gi.affected_counts(con, nodes)
        predictions = gi.prediction_counts(con, nodes)
        history = gi.cost_history(con)
        votes = gi.vote_counts(con)
        base_names, new_names = gi.node_names(con)
        shared = gi.shared_codes(con)
        totals = gi.mapping_totals(con, votes)
        per_item = gi.labels_per_item(votes)
        accuracy = gi.model_accuracy(con)
        conflicts = gi.merge_conflicts(con)
        sample = gi.sample_changes(con, SAMPLE_ROWS)
    finally:
        gi.drop_proposed_mapping(con)
    per_node_predictions: dict[str, dict[str, int]] = {}
    for rec in predictions.to_dict("records"):
        per_node_predictions.setdefault(rec["node_id"], {})[f"{rec['model']}@{rec['model_version']}"] = int(
            rec["predictions"]
        )
    branches = []
    for branch, members in _branches(base, nodes).items():
        codes = [k for k, name in enumerate(base_names) if name in set(members)]
        mask = np.isin(votes["base_code"].to_numpy(), codes)
        branches.append(
            BranchQuality(
                branch=branch,
                nodes=members,
                alpha_before=gi.alpha_of(votes, "base_code", mask),
                alpha_after=gi.alpha_of(votes, "new_code", mask, shared),
                entropy_before=gi.entropy_bits(votes, "base_code", mask),
                entropy_after=gi.entropy_bits(votes, "new_code", mask),
            )
        )
    compat = batch.compat_class
    reversible = compat.rank <= CompatClass.STRUCTURAL.rank
    report = ImpactReport(
        proposal_id=proposal_id,
        proposal_hash=proposal_hash,
        base_version=base_version,
        base_hash=require_version(con, base_version),
        target_hash=batch.tree.content_hash(),
        compat_class=compat,
        operations=[
            OperationLine(seq=i, op=op.op, compat_class=c, spec=op.model_dump(mode="json"))
            for i, (op, c) in enumerate(zip(operations, batch.classes, strict=True), start=1)
        ],
        affected=[
            NodeImpact(**_clean(rec), predictions=per_node_predictions.get(rec["node_id"], {}))
            for rec in counts.to_dict("records")
        ],
        totals=totals,
        relabel_cost=_range(totals["items_to_relabel"], per_item, history["cost_per_annotation"]),
        relabel_hours=_range(totals["items_to_relabel"], per_item, history["seconds_per_annotation"], 3600.0),
        distribution_before=gi.distribution(votes, "base_code", base_names),
        distribution_after=gi.distribution(votes, "new_code", new_names),
        alpha_before=gi.alpha_of(votes, "base_code"),
        alpha_after=gi.alpha_of(votes, "new_code", shared=shared),
        branches=branches,
        model_accuracy=[ModelAccuracy(**_clean(rec)) for rec in accuracy.to_dict("records")],
        conflicts=[Conflict(**_clean(rec)) for rec in conflicts.to_dict("records")],
        reversible=reversible,
        reversibility=(
            "a compensating proposal restores the tree exactly; no annotation changes meaning"
            if reversible
            else "historical annotations keep their original node, so a compensating proposal can restore "
            "them, but annotations made after applying cannot be separated automatically"
        ),
        mapping=batch.mapping,
        sample_changes=[_clean(rec) for rec in sample.to_dict("records")],
    )
    return ImpactReport.model_validate(_clean(report.model_dump(mode="json")))
