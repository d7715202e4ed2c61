"""The label-tree file: parsing, validation and storage of a tree version.

The YAML file is a contract users write by hand, so every refusal names the place in the file
(``nodes.emotional.children.happy.codes``) and what is wrong there. A tree is flattened into rows with
depth, a materialised path and a leaf flag so that roll-ups are plain joins in SQL.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from queries.errors import LabelgovError
from queries.results import first_row

NODE_ID = re.compile(r"^[a-z0-9_-]+$")
MAX_TREE_BYTES = 5_000_000


class _TreeLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: a node called ``yes``, ``no``, ``on`` or ``off`` stays a string."""


_TreeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_TreeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class NodeSpec(BaseModel):
    """One node as written in the file; children nest."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    description: str | None = None
    codes: list[str] | None = None
    guideline: str | None = None
    status: str = "active"
    replaced_by: str | None = None
    consider: list[str] | None = None
    aliases: list[str] | None = None
    children: dict[str, NodeSpec] | None = None

    @field_validator("codes", mode="before")
    @classmethod
    def _codes_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in {"active", "deprecated", "retired"}:
            raise ValueError("status must be active, deprecated or retired")
        return value


class TreeSpec(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    taxonomy: str = Field(min_length=1)
    version: str | None = None
    nodes: dict[str, NodeSpec] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


class FlatNode(BaseModel):
    node_id: str
    parent_id: str | None
    title: str
    description: str | None
    codes: list[str]
    status: str
    depth: int
    path: str
    is_leaf: bool
    ordinal: int
    replaced_by: str | None = None
    consider: list[str] | None = None
    aliases: list[str] | None = None
    guideline: str | None = None


class Tree(BaseModel):
    """A validated, flattened tree: what the warehouse stores and what analytics read."""

    taxonomy: str
    label: str | None
    nodes: list[FlatNode]

    def content_hash(self) -> str:
        """Hash of the meaning of the tree, independent of YAML formatting and key order."""
        body = json.dumps(
            {"taxonomy": self.taxonomy, "nodes": [n.model_dump() for n in self.nodes]},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def code_map(self) -> dict[str, str]:
        return {code: node.node_id for node in self.nodes for code in node.codes}

    def leaves(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.is_leaf]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([n.model_dump() for n in self.nodes])


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "top level"


def _walk(
    specs: dict[str, NodeSpec], parent: FlatNode | None, place: str, counter: Iterator[int]
) -> Iterator[tuple[FlatNode, str]]:
    for node_id, spec in specs.items():
        here = f"{place}.{node_id}"
        if not NODE_ID.match(str(node_id)):
            raise LabelgovError(f"{here}: node id {node_id!r} must match [a-z0-9_-]+ (lower case, digits, _ or -)")
        children = spec.children or {}
        flat = FlatNode(
            node_id=node_id,
            parent_id=parent.node_id if parent else None,
            title=spec.title or node_id,
            description=spec.description,
            codes=spec.codes if spec.codes is not None else [node_id],
            status=spec.status,
            depth=(parent.depth + 1) if parent else 1,
            path=f"{parent.path}/{node_id}" if parent else node_id,
            is_leaf=not children,
            ordinal=next(counter),
            replaced_by=spec.replaced_by,
            consider=spec.consider,
            aliases=spec.aliases,
            guideline=spec.guideline,
        )
        yield flat, here
        if spec.children is not None and not spec.children:
            raise LabelgovError(f"{here}.children: is empty; remove the key or list at least one child")
        yield from _walk(children, flat, f"{here}.children", counter)


def _check_ids(nodes: Any, place: str, source: str) -> None:
    """Node ids that YAML read as something else (true, 12, null) get a message that says to quote them."""
    if not isinstance(nodes, dict):
        return
    for key, spec in nodes.items():
        if not isinstance(key, str):
            raise LabelgovError(f"{source}: {place}: node id {key!r} is not text; write it in quotes or rename it")
        if isinstance(spec, dict):
            _check_ids(spec.get("children"), f"{place}.{key}.children", source)


def parse_tree(text: str, source: str = "tree file") -> Tree:
    """Validate the YAML text of a tree; raise one LabelgovError naming the place at fault."""
    if len(text.encode()) > MAX_TREE_BYTES:
        raise LabelgovError(f"{source}: larger than {MAX_TREE_BYTES // 1_000_000} MB; is this a tree file?")
    try:
        raw = yaml.load(text, Loader=_TreeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LabelgovError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise LabelgovError(f"{source}: expected a mapping with keys taxonomy and nodes")
    _check_ids(raw.get("nodes"), "nodes", source)
    try:
        spec = TreeSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise LabelgovError(f"{source}: {_where(first['loc'])}: {first['msg']}") from exc
    flat: list[FlatNode] = []
    seen_ids: dict[str, str] = {}
    seen_codes: dict[str, str] = {}
    counter = iter(range(1_000_000))
    for node, place in _walk(spec.nodes, None, "nodes", counter):
        if node.node_id in seen_ids:
            first = seen_ids[node.node_id]
            raise LabelgovError(f"{source}: {place}: duplicate node id {node.node_id!r} (also at {first})")
        seen_ids[node.node_id] = place
        for code in node.codes:
            if code in seen_codes:
                raise LabelgovError(
                    f"{source}: {place}.codes: code {code!r} already means {seen_codes[code]!r}; "
                    "each raw answer value must map to one node"
                )
            seen_codes[code] = node.node_id
        flat.append(node)
    for node in flat:
        for ref in [node.replaced_by, *(node.consider or [])]:
            if ref is not None and ref not in seen_ids:
                raise LabelgovError(f"{source}: node {node.node_id!r} refers to unknown node {ref!r}")
    return Tree(taxonomy=spec.taxonomy, label=spec.version, nodes=flat)


def read_tree_file(path: str | Path) -> Tree:
    file = Path(path)
    if not file.is_file():
        raise LabelgovError(f"{file}: no such tree file")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelgovError(f"{file}: not UTF-8 text; save the tree file as UTF-8") from exc
    return parse_tree(text, str(file))


def store_tree(
    con: duckdb.DuckDBPyConnection,
    tree: Tree,
    *,
    created_by: str,
    parent_version: int | None = None,
    source_text: str | None = None,
) -> int:
    """Insert a new immutable tree version; the caller owns the transaction."""
    row = first_row(con.execute("SELECT coalesce(max(tree_version), 0) + 1 FROM tree_versions"))
    version = int(row[0]) if row else 1
    con.execute(
        "INSERT INTO tree_versions VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?)",
        [version, tree.taxonomy, tree.label, tree.content_hash(), parent_version, created_by, source_text],
    )
    frame = tree.frame()
    frame.insert(0, "tree_version", version)
    con.register("_new_nodes", frame)
    try:
        con.execute(
            "INSERT INTO tree_nodes BY NAME SELECT * FROM _new_nodes"
        )
    finally:
        con.unregister("_new_nodes")
    return version


def latest_version(con: duckdb.DuckDBPyConnection) -> int | None:
    row = first_row(con.execute("SELECT max(tree_version) FROM tree_versions"))
    return int(row[0]) if row and row[0] is not None else None


def content_hash_of(con: duckdb.DuckDBPyConnection, version: int) -> str | None:
    row = first_row(con.execute("SELECT content_hash FROM tree_versions WHERE tree_version = ?", [version]))
    return str(row[0]) if row else None


def load_tree(con: duckdb.DuckDBPyConnection, version: int | None = None) -> Tree:
    """The stored tree at ``version`` (the latest when None)."""
    if version is None:
        version = latest_version(con)
        if version is None:
            raise LabelgovError("the warehouse has no label tree yet: run `labelgov tree import FILE` first")
    head = first_row(con.execute(
        "SELECT taxonomy, label FROM tree_versions WHERE tree_version = ?", [version]
    ))
    if head is None:
        raise LabelgovError(f"tree version {version} does not exist; see `labelgov info` for the versions")
    frame = con.execute(
        "SELECT * EXCLUDE (tree_version) FROM tree_nodes WHERE tree_version = ? ORDER BY ordinal", [version]
    ).df()
    nodes = [
        FlatNode.model_validate({k: (None if _is_missing(v) else _listify(v)) for k, v in rec.items()})
        for rec in frame.to_dict("records")
    ]
    return Tree(taxonomy=head[0], label=head[1], nodes=nodes)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _listify(value: Any) -> Any:
    return list(value) if hasattr(value, "tolist") and not isinstance(value, str) else value
