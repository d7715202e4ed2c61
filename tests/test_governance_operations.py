"""Every operation's effect on the tree, its computed class and the node mapping it implies."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from governance.operations import CompatClass, Operation, play
from governance.proposals import parse_proposal
from queries.errors import LabelgovError
from queries.taxonomy import parse_tree

BASE = parse_tree(
    """
taxonomy: animals
nodes:
  mammal:
    children:
      cat: {codes: [c1]}
      lynx: {codes: [c2]}
      dog: {}
  bird:
    children:
      sparrow: {guideline: small brown bird}
      finch: {}
"""
)
OPS = TypeAdapter(list[Operation])


def run(*ops: dict):
    return play(BASE, OPS.validate_python(list(ops)))


def node(batch, node_id):
    return next(n for n in batch.tree.nodes if n.node_id == node_id)


def lands(batch) -> dict[str, tuple[str, bool]]:
    return {m.base_node: (m.new_node, m.automatic) for m in batch.mapping}


def identity_except(batch, changed: dict[str, tuple[str, bool]]) -> None:
    expected = {n.node_id: (n.node_id, True) for n in BASE.nodes} | changed
    assert lands(batch) == expected


def test_add_is_additive_and_maps_identity():
    batch = run({"op": "add", "node_id": "owl", "parent_id": "bird", "title": "Owl"})
    assert batch.classes == [CompatClass.ADDITIVE]
    owl = node(batch, "owl")
    assert (owl.parent_id, owl.depth, owl.path, owl.codes, owl.is_leaf) == ("bird", 2, "bird/owl", ["owl"], True)
    assert [n.node_id for n in batch.tree.nodes][-3:] == ["sparrow", "finch", "owl"]
    identity_except(batch, {})


@pytest.mark.parametrize("op", ["rename", "retitle"])
def test_rename_is_cosmetic_and_keeps_old_title_as_alias(op):
    batch = run({"op": op, "node_id": "cat", "title": "House cat"})
    assert batch.classes == [CompatClass.COSMETIC]
    assert node(batch, "cat").title == "House cat"
    assert node(batch, "cat").aliases == ["cat"]
    identity_except(batch, {})


def test_move_is_structural_and_recomputes_paths():
    batch = run(
        {"op": "add", "node_id": "wild", "parent_id": "mammal"},
        {"op": "move", "node_id": "lynx", "new_parent_id": "wild"},
    )
    assert batch.classes == [CompatClass.ADDITIVE, CompatClass.STRUCTURAL]
    assert batch.compat_class is CompatClass.STRUCTURAL
    lynx = node(batch, "lynx")
    assert (lynx.parent_id, lynx.depth, lynx.path) == ("wild", 3, "mammal/wild/lynx")
    assert not node(batch, "wild").is_leaf
    identity_except(batch, {})


def test_merge_is_lossy_and_carries_annotations_and_codes():
    batch = run({"op": "merge", "nodes": ["lynx", "dog"], "into": "cat"})
    assert batch.classes == [CompatClass.LOSSY]
    cat, lynx = node(batch, "cat"), node(batch, "lynx")
    assert cat.codes == ["c1", "c2", "dog"]
    assert (lynx.status, lynx.replaced_by, lynx.codes) == ("deprecated", "cat", [])
    identity_except(batch, {"lynx": ("cat", True), "dog": ("cat", True)})


def test_chained_merges_land_on_the_last_target_and_collapse_replacements():
    batch = run({"op": "merge", "nodes": ["lynx"], "into": "cat"}, {"op": "merge", "nodes": ["cat"], "into": "dog"})
    identity_except(batch, {"lynx": ("dog", True), "cat": ("dog", True)})
    assert node(batch, "lynx").replaced_by == "dog"


def test_split_needs_relabelling_and_offers_candidates():
    batch = run({"op": "split", "node_id": "dog", "into": [{"node_id": "small_dog"}, {"node_id": "big_dog"}]})
    assert batch.classes == [CompatClass.NEEDS_RELABEL]
    dog = node(batch, "dog")
    assert (dog.status, dog.consider, dog.replaced_by) == ("deprecated", ["small_dog", "big_dog"], None)
    order = [n.node_id for n in batch.tree.nodes]
    assert order[order.index("dog") + 1 : order.index("dog") + 3] == ["small_dog", "big_dog"]
    assert node(batch, "small_dog").parent_id == "mammal"
    identity_except(batch, {"dog": ("dog", False)})
    assert batch.doubtful_nodes() == ["dog"]


def test_deprecate_with_replacement_is_lossy_without_is_structural():
    replaced = run({"op": "deprecate", "node_id": "finch", "replaced_by": "sparrow"})
    assert replaced.classes == [CompatClass.LOSSY]
    identity_except(replaced, {"finch": ("sparrow", True)})
    kept = run({"op": "deprecate", "node_id": "finch", "consider": ["sparrow"]})
    assert kept.classes == [CompatClass.STRUCTURAL]
    assert (node(kept, "finch").status, node(kept, "finch").consider) == ("deprecated", ["sparrow"])
    identity_except(kept, {})


def test_codes_adding_is_additive_removing_is_structural():
    assert run({"op": "codes", "node_id": "cat", "codes": ["c1", "kitty"]}).classes == [CompatClass.ADDITIVE]
    assert run({"op": "codes", "node_id": "cat", "codes": ["kitty"]}).classes == [CompatClass.STRUCTURAL]


def test_guideline_class_follows_whether_meaning_changes():
    altered = run({"op": "guideline", "node_id": "sparrow", "text": "any sparrow-sized bird"})
    assert altered.classes == [CompatClass.NEEDS_RELABEL]
    identity_except(altered, {"sparrow": ("sparrow", False)})
    wording = run({"op": "guideline", "node_id": "sparrow", "text": "Small brown bird.", "alters_meaning": False})
    assert wording.classes == [CompatClass.COSMETIC]
    assert node(wording, "sparrow").guideline == "Small brown bird."
    identity_except(wording, {})


def test_batch_class_is_the_worst_operation():
    batch = run(
        {"op": "rename", "node_id": "cat", "title": "Cat"},
        {"op": "add", "node_id": "owl", "parent_id": "bird"},
        {"op": "merge", "nodes": ["lynx"], "into": "cat"},
    )
    assert batch.compat_class is CompatClass.LOSSY


def test_content_hash_changes_with_the_tree_and_base_is_untouched():
    before = BASE.content_hash()
    batch = run({"op": "rename", "node_id": "cat", "title": "Cat"})
    assert batch.tree.content_hash() != before
    assert BASE.content_hash() == before


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([{"op": "rename", "node_id": "puma", "title": "x"}], "operation 1 (rename puma): node 'puma' is not in"),
        ([{"op": "add", "node_id": "cat"}], "already exists (ids are never reused)"),
        ([{"op": "move", "node_id": "mammal", "new_parent_id": "cat"}], "under its own descendant"),
        ([{"op": "merge", "nodes": ["mammal"], "into": "bird"}], "has children"),
        (
            [
                {"op": "merge", "nodes": ["lynx"], "into": "cat"},
                {"op": "rename", "node_id": "dog", "title": "D"},
                {"op": "merge", "nodes": ["dog"], "into": "lynx"},
            ],
            "operation 3 (merge lynx): node 'lynx' is deprecated",
        ),
        ([{"op": "codes", "node_id": "dog", "codes": ["c1"]}], "code 'c1' would mean both"),
        ([{"op": "rename", "node_id": "cat", "title": "cat"}], "nothing to change"),
        ([{"op": "add", "node_id": "Bad Id"}], "must match"),
    ],
)
def test_refusals_name_the_operation(ops, message):
    with pytest.raises(LabelgovError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(*ops)


def test_proposal_file_errors_name_the_place():
    with pytest.raises(LabelgovError, match=r"operations\.0\.merge\.into"):
        parse_proposal("title: t\nrationale: r\noperations:\n  - op: merge\n    nodes: [a]\n")
    with pytest.raises(LabelgovError, match="operations"):
        parse_proposal("title: t\nrationale: r\noperations: []\n")
    with pytest.raises(LabelgovError, match=r"operations\.0"):
        parse_proposal("title: t\nrationale: r\noperations:\n  - op: explode\n    node_id: a\n")
    spec = parse_proposal("title: t\nrationale: r\noperations:\n  - {op: guideline, node_id: a, text: x}\n")
    assert spec.operations[0].alters_meaning is True
