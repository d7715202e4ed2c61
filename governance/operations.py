"""Change operations on a label tree, their compatibility classes and the node mapping they imply.

A proposal is a batch of operations played in order against its base version. Each operation is checked
against the tree as the earlier operations left it, so an operation may refer to a node added earlier in the
same batch. Playing the batch yields three things at once: the new tree, the compatibility class of every
operation (computed from what the operation does to the data, never chosen by the proposer) and where every
node of the base version lands in the new one. Node ids are never deleted: merged, split and deprecated
nodes stay in the tree as ``deprecated`` so that historical annotations keep a meaning.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from queries.errors import LabelgovError
from queries.taxonomy import NODE_ID, FlatNode, Tree


class CompatClass(StrEnum):
    """How much a change disturbs existing annotations, from harmless to needing people's time."""

    COSMETIC = "cosmetic"
    ADDITIVE = "additive"
    STRUCTURAL = "structural"
    LOSSY = "lossy_automatic"
    NEEDS_RELABEL = "needs_relabelling"

    @property
    def rank(self) -> int:
        return list(CompatClass).index(self)


def worst(classes: list[CompatClass]) -> CompatClass:
    """A batch is as disruptive as its most disruptive operation."""
    return max(classes, key=lambda c: c.rank)


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewNode(BaseModel):
    """A node created by an operation; codes default to the node id, as in the tree file."""

    model_config = ConfigDict(extra="forbid")

    node_id: str
    title: str | None = None
    description: str | None = None
    codes: list[str] | None = None
    guideline: str | None = None


class AddOp(_Op):
    op: Literal["add"]
    node_id: str
    parent_id: str | None = None
    title: str | None = None
    description: str | None = None
    codes: list[str] | None = None
    guideline: str | None = None

    def play(self, work: WorkingTree) -> CompatClass:
        if self.parent_id is not None:
            work.require_active(self.parent_id)
        work.create(NewNode(**self.model_dump(exclude={"op", "parent_id"})), self.parent_id, after=None)
        return CompatClass.ADDITIVE


class RenameOp(_Op):
    """Renames keep the old title as an alias so that searches and old exports still find the node."""

    op: Literal["rename", "retitle"]
    node_id: str
    title: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> RenameOp:
        if self.title is None and self.description is None:
            raise ValueError("give a new title or description")
        return self

    def play(self, work: WorkingTree) -> CompatClass:
        node = work.get(self.node_id)
        if self.title is not None and self.title != node["title"]:
            aliases = node["aliases"] or []
            node["aliases"] = [*aliases, node["title"]] if node["title"] not in aliases else aliases
            node["title"] = self.title
        elif self.description is None or self.description == node["description"]:
            raise work.fault(f"node {self.node_id!r} already has this title and description; nothing to change")
        if self.description is not None:
            node["description"] = self.description
        return CompatClass.COSMETIC


class MoveOp(_Op):
    op: Literal["move"]
    node_id: str
    new_parent_id: str | None = None

    def play(self, work: WorkingTree) -> CompatClass:
        node = work.get(self.node_id)
        if node["parent_id"] == self.new_parent_id:
            raise work.fault(f"node {self.node_id!r} is already under {self.new_parent_id!r}; nothing to move")
        if self.new_parent_id is not None:
            work.require_active(self.new_parent_id)
            if self.node_id in work.ancestors_or_self(self.new_parent_id):
                raise work.fault(f"cannot move {self.node_id!r} under its own descendant {self.new_parent_id!r}")
        node["parent_id"] = self.new_parent_id
        return CompatClass.STRUCTURAL


class MergeOp(_Op):
    """Annotations of the merged nodes are carried to ``into``; their codes follow so re-ingest agrees."""

    op: Literal["merge"]
    nodes: list[str] = Field(min_length=1)
    into: str

    def play(self, work: WorkingTree) -> CompatClass:
        work.require_active(self.into)
        if self.into in self.nodes or len(set(self.nodes)) != len(self.nodes):
            raise work.fault("list each merged node once and not the target itself")
        target = work.get(self.into)
        for node_id in self.nodes:
            work.require_active(node_id)
            work.require_leaf(node_id, "merge")
            source = work.get(node_id)
            target["codes"] = [*target["codes"], *source["codes"]]
            source["codes"] = []
            work.replace(node_id, self.into)
        return CompatClass.LOSSY


class SplitOp(_Op):
    """The old node is deprecated with the new ones as candidates; its annotations must be relabelled."""

    op: Literal["split"]
    node_id: str
    into: list[NewNode] = Field(min_length=2)

    def play(self, work: WorkingTree) -> CompatClass:
        work.require_active(self.node_id)
        work.require_leaf(self.node_id, "split")
        node = work.get(self.node_id)
        previous = self.node_id
        for child in self.into:
            work.create(child, node["parent_id"], after=previous)
            previous = child.node_id
        node["status"] = "deprecated"
        node["consider"] = [c.node_id for c in self.into]
        work.needs_relabel(self.node_id)
        return CompatClass.NEEDS_RELABEL


class DeprecateOp(_Op):
    """With a replacement the annotations move automatically (lossy); without, they stay where they are."""

    op: Literal["deprecate"]
    node_id: str
    replaced_by: str | None = None
    consider: list[str] | None = None

    def play(self, work: WorkingTree) -> CompatClass:
        work.require_active(self.node_id)
        if any(work.get(c)["status"] == "active" for c in work.children(self.node_id)):
            raise work.fault(f"node {self.node_id!r} has active children; deprecate or move them first")
        for ref in self.consider or []:
            work.get(ref)
        work.get(self.node_id)["consider"] = self.consider
        if self.replaced_by is None:
            work.get(self.node_id)["status"] = "deprecated"
            return CompatClass.STRUCTURAL
        work.require_active(self.replaced_by)
        if self.replaced_by == self.node_id:
            raise work.fault(f"node {self.node_id!r} cannot replace itself")
        work.replace(self.node_id, self.replaced_by)
        return CompatClass.LOSSY


class CodesOp(_Op):
    """Only adding codes is additive: removing one changes where future raw answers land."""

    op: Literal["codes"]
    node_id: str
    codes: list[str]

    def play(self, work: WorkingTree) -> CompatClass:
        node = work.get(self.node_id)
        old, new = set(node["codes"]), set(self.codes)
        if old == new:
            raise work.fault(f"node {self.node_id!r} already has exactly these codes; nothing to change")
        node["codes"] = list(self.codes)
        return CompatClass.ADDITIVE if new >= old else CompatClass.STRUCTURAL


class GuidelineOp(_Op):
    """A guideline that changes what the label means makes the node's past annotations doubtful."""

    op: Literal["guideline"]
    node_id: str
    text: str
    alters_meaning: bool = True

    def play(self, work: WorkingTree) -> CompatClass:
        node = work.get(self.node_id)
        if node["guideline"] == self.text:
            raise work.fault(f"node {self.node_id!r} already has this guideline; nothing to change")
        node["guideline"] = self.text
        if not self.alters_meaning:
            return CompatClass.COSMETIC
        work.needs_relabel(self.node_id)
        return CompatClass.NEEDS_RELABEL


Operation = Annotated[
    AddOp | RenameOp | MoveOp | MergeOp | SplitOp | DeprecateOp | CodesOp | GuidelineOp,
    Field(discriminator="op"),
]


class NodeMove(BaseModel):
    """Where one node of the base version lands; ``automatic`` is false when people must look again."""

    base_node: str
    new_node: str
    automatic: bool


class PlayedBatch(BaseModel):
    tree: Tree
    classes: list[CompatClass]
    mapping: list[NodeMove]

    @property
    def compat_class(self) -> CompatClass:
        return worst(self.classes)

    def edge_frame(self) -> pd.DataFrame:
        return pd.DataFrame([m.model_dump() for m in self.mapping], columns=["base_node", "new_node", "automatic"])

    def doubtful_nodes(self) -> list[str]:
        """New nodes that receive annotations people must look at again."""
        return sorted({m.new_node for m in self.mapping if not m.automatic})


class WorkingTree:
    """The tree being edited, as plain dicts keyed by node id, plus where each base node currently lands."""

    def __init__(self, base: Tree) -> None:
        self.taxonomy = base.taxonomy
        self.label = base.label
        self.nodes: dict[str, dict[str, Any]] = {n.node_id: n.model_dump() for n in base.nodes}
        self.order: dict[str, float] = {n.node_id: float(n.ordinal) for n in base.nodes}
        self.lands: dict[str, str] = {n.node_id: n.node_id for n in base.nodes}
        self.doubtful: set[str] = set()
        self.where = "proposal"
        self._added = 0

    def fault(self, message: str) -> LabelgovError:
        return LabelgovError(f"{self.where}: {message}")

    def get(self, node_id: str) -> dict[str, Any]:
        if node_id not in self.nodes:
            raise self.fault(f"node {node_id!r} is not in the tree; check the id against `labelgov tree show`")
        return self.nodes[node_id]

    def require_active(self, node_id: str) -> None:
        if self.get(node_id)["status"] != "active":
            raise self.fault(f"node {node_id!r} is {self.nodes[node_id]['status']}; only active nodes can be used")

    def require_leaf(self, node_id: str, what: str) -> None:
        if self.children(node_id):
            raise self.fault(f"node {node_id!r} has children; {what} applies to leaves, move or merge them first")

    def children(self, node_id: str) -> list[str]:
        return [k for k, n in self.nodes.items() if n["parent_id"] == node_id]

    def ancestors_or_self(self, node_id: str) -> list[str]:
        chain = [node_id]
        while (parent := self.nodes[chain[-1]]["parent_id"]) is not None:
            chain.append(parent)
        return chain

    def create(self, spec: NewNode, parent_id: str | None, after: str | None) -> None:
        """Node ids are never reused, so a new id must be unknown to the tree, deprecated nodes included."""
        if not NODE_ID.match(spec.node_id):
            raise self.fault(f"node id {spec.node_id!r} must match [a-z0-9_-]+ (lower case, digits, _ or -)")
        if spec.node_id in self.nodes:
            raise self.fault(f"node id {spec.node_id!r} already exists (ids are never reused); pick another")
        self._added += 1
        self.order[spec.node_id] = 1e9 + self._added if after is None else self.order[after] + self._added / 1e4
        self.nodes[spec.node_id] = {
            "node_id": spec.node_id,
            "parent_id": parent_id,
            "title": spec.title or spec.node_id,
            "description": spec.description,
            "codes": spec.codes if spec.codes is not None else [spec.node_id],
            "status": "active",
            "depth": 0,
            "path": "",
            "is_leaf": True,
            "ordinal": 0,
            "replaced_by": None,
            "consider": None,
            "aliases": None,
            "guideline": spec.guideline,
        }

    def replace(self, old: str, new: str) -> None:
        """Deprecate ``old`` in favour of ``new`` and point everything that led to ``old`` at ``new``."""
        self.nodes[old]["status"] = "deprecated"
        self.nodes[old]["replaced_by"] = new
        for node in self.nodes.values():
            if node["replaced_by"] == old:
                node["replaced_by"] = new
            if node["consider"] and old in node["consider"]:
                node["consider"] = list(dict.fromkeys(new if c == old else c for c in node["consider"]))
        self.lands = {base: (new if now == old else now) for base, now in self.lands.items()}
        if old in self.doubtful:
            self.doubtful.add(new)

    def needs_relabel(self, node_id: str) -> None:
        self.doubtful.add(node_id)

    def finish(self) -> Tree:
        """Recompute depth, path, leaf flags and ordinals, then validate the result like a tree file."""
        kids: dict[str | None, list[str]] = {}
        for node_id, node in self.nodes.items():
            kids.setdefault(node["parent_id"], []).append(node_id)
        flat: list[FlatNode] = []

        def walk(parent: dict[str, Any] | None) -> None:
            for node_id in sorted(kids.get(parent["node_id"] if parent else None, []), key=self.order.__getitem__):
                node = self.nodes[node_id]
                node["depth"] = parent["depth"] + 1 if parent else 1
                node["path"] = f"{parent['path']}/{node_id}" if parent else node_id
                node["is_leaf"] = node_id not in kids
                node["ordinal"] = len(flat)
                flat.append(FlatNode.model_validate(node))
                walk(node)

        walk(None)
        self.where = "proposal"
        seen: dict[str, str] = {}
        for node in flat:
            for code in node.codes:
                if code in seen:
                    raise self.fault(f"code {code!r} would mean both {seen[code]!r} and {node.node_id!r}")
                seen[code] = node.node_id
        return Tree(taxonomy=self.taxonomy, label=None, nodes=flat)

    def final_mapping(self) -> list[NodeMove]:
        """Base node -> new node, following replacement chains that predate this batch as well."""
        moves = []
        for base, now in self.lands.items():
            target = now
            while self.nodes[target]["status"] == "deprecated" and self.nodes[target]["replaced_by"]:
                target = self.nodes[target]["replaced_by"]
            moves.append(NodeMove(base_node=base, new_node=target, automatic=target not in self.doubtful))
        return moves


def play(base: Tree, operations: list[Any]) -> PlayedBatch:
    """Play the operations in order on a copy of ``base``; raise LabelgovError naming the faulty operation."""
    work = WorkingTree(base)
    classes = []
    for number, op in enumerate(operations, start=1):
        work.where = f"operation {number} ({op.op} {getattr(op, 'node_id', None) or getattr(op, 'into', '')})"
        classes.append(op.play(work))
    tree = work.finish()
    return PlayedBatch(tree=tree, classes=classes, mapping=work.final_mapping())
