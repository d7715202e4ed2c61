"""Version listing, diffs, "as of" mappings and the command line, end to end on a warehouse file."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from test_governance_fixtures import TREE, build, insert_answers

from dashboard.cli import root
from governance import apply as applying
from governance import proposals as P
from governance import versions as V
from queries.connection import connect
from queries.errors import LabelgovError


def applied(con, *ops: dict) -> int:
    p = P.create(
        con, P.ProposalFile.model_validate({"title": "t", "rationale": "r", "operations": list(ops)}), user="alice"
    )
    p = P.submit(con, p.proposal_id, user="alice")
    for steward in ("bob", "carol")[: p.approvals_needed]:
        p = P.approve(con, p.proposal_id, user=steward, ack_report=p.report_hash)
    return applying.apply(con, p.proposal_id, user="bob").to_version


def test_versions_record_lineage_hash_and_proposal():
    con = build()
    applied(con, {"op": "rename", "node_id": "cat", "title": "Cat"})
    applied(con, {"op": "add", "node_id": "owl", "parent_id": "bird"})
    frame = V.versions(con)
    assert frame["tree_version"].tolist() == [1, 2, 3]
    assert frame["parent_version"].fillna(0).astype(int).tolist() == [0, 1, 2]
    assert frame["proposal_id"].fillna(0).astype(int).tolist() == [0, 1, 2]
    assert frame["content_hash"].nunique() == 3
    assert V.show(con, 3).content_hash() == frame["content_hash"].iloc[2]


def test_diff_lists_every_changed_attribute():
    con = build()
    applied(
        con,
        {"op": "merge", "nodes": ["lynx"], "into": "cat"},
        {"op": "move", "node_id": "finch", "new_parent_id": "mammal"},
        {"op": "add", "node_id": "owl", "parent_id": "bird", "title": "Owl"},
    )
    diff = V.diff(con, 1, 2)
    text = diff.astype(object).where(diff.notna(), None)
    got = {(r.node_id, r.change): (r.before, r.after) for r in text.itertuples()}
    assert got == {
        ("cat", "codes"): ("cat", "cat,lynx"),
        ("lynx", "status"): ("active", "deprecated"),
        ("lynx", "replaced_by"): (None, "cat"),
        ("lynx", "codes"): ("lynx", ""),
        ("finch", "parent"): ("bird", "mammal"),
        ("owl", "added"): (None, "Owl"),
    }
    reverse = V.diff(con, 2, 1)
    assert ("owl", "missing") in {(r.node_id, r.change) for r in reverse.itertuples()}
    assert V.diff(con, 2, 2).empty
    with pytest.raises(LabelgovError, match="tree version 9 does not exist"):
        V.diff(con, 1, 9)


def test_newer_annotations_map_back_to_the_nearest_known_ancestor():
    con = build()
    applied(con, {"op": "add", "node_id": "owl", "parent_id": "bird"})
    insert_answers(con, pd.DataFrame({"item_id": ["i0000"], "annotator_id": ["z"], "node_id": ["owl"]}), 2, prefix="z")
    back = V.mapping_to_version(con, 1).set_index(["tree_version", "node_id"])
    assert back.loc[(2, "owl"), "target_node_id"] == "bird"
    assert not back.loc[(2, "owl"), "automatic"]
    assert back.loc[(2, "finch"), "target_node_id"] == "finch"


def run(args: list[str], db) -> tuple[int, str]:
    result = CliRunner().invoke(root, [*args, "--db", str(db)], catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        if isinstance(result.exception, LabelgovError):
            return 2, str(result.exception)
        raise result.exception
    return result.exit_code, result.output


def test_command_line_from_proposal_to_relabelling_export(tmp_path):
    db = tmp_path / "w.duckdb"
    tree = tmp_path / "tree.yaml"
    tree.write_text(TREE)
    proposal = tmp_path / "p.yaml"
    proposal.write_text(
        "title: split dog\nrationale: two breeds\noperations:\n"
        "  - op: split\n    node_id: dog\n    into: [{node_id: small_dog}, {node_id: big_dog}]\n"
    )
    assert run(["tree", "import", str(tree)], db)[0] == 0
    with connect(db) as con:
        from governance.roles import grant

        for user, role in {"root": "admin", "alice": "proposer", "bob": "steward", "carol": "steward"}.items():
            grant(con, admin_user="root", user=user, role=role)
        insert_answers(
            con,
            pd.DataFrame(
                {"item_id": ["a", "a", "b"], "annotator_id": ["x", "y", "x"], "node_id": ["dog", "cat", "dog"]}
            ),
            1,
        )
    assert run(["propose", str(proposal), "--as", "alice"], db)[0] == 0
    code, out = run(["proposal", "submit", "1", "--as", "alice"], db)
    assert code == 0 and "impact report" in out
    with connect(db, read_only=True) as con:
        report_hash = P.load(con, 1).report_hash
    code, message = run(["proposal", "approve", "1", "--as", "alice"], db)
    assert code == 2 and "role-required" in message
    code, message = run(["proposal", "approve", "1", "--as", "bob"], db)
    assert code == 2 and "impact-acknowledgement" in message
    assert run(["proposal", "approve", "1", "--as", "bob", "--ack-report", report_hash], db)[0] == 0
    code, out = run(["proposal", "approve", "1", "--as", "carol", "--ack-report", report_hash[:12]], db)
    assert code == 0 and "approved" in out
    code, out = run(["proposal", "show", "1"], db)
    assert code == 0 and "dog->dog (relabel)" in out and "2 items" in out
    code, out = run(["proposal", "apply", "1", "--as", "carol"], db)
    assert code == 0 and "tree v1 -> v2" in out and "2 items queued" in out
    assert "already applied" in run(["proposal", "apply", "1", "--as", "carol"], db)[1]
    assert "applied" in run(["proposal", "list"], db)[1]
    code, out = run(["tree", "versions"], db)
    assert code == 0 and len(out.strip().splitlines()) == 3
    assert "consider small_dog,big_dog" in run(["tree", "show"], db)[1]
    assert "small_dog" in run(["tree", "diff", "1", "2"], db)[1]
    export = tmp_path / "queue.csv"
    assert run(["relabel", "export", "1", str(export)], db)[0] == 0
    assert pd.read_csv(export)["item_id"].tolist() == ["a", "b"]
