"""The label-tree file: every refusal names the place at fault; storage and schema versions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from queries.connection import connect
from queries.errors import LabelgovError
from queries.schema import SCHEMA_VERSION
from queries.taxonomy import load_tree, parse_tree, store_tree
from tests.conftest import require_shared

GOOD = """\
taxonomy: face-sentiment
version: "1"
nodes:
  neutral:
    title: Neutral
    codes: ["0"]
  emotional:
    children:
      positive:
        children:
          happy: {codes: ["1"]}
      negative:
        children:
          sad: {codes: ["2"]}
          angry: {codes: [3]}
"""


def test_a_good_tree_flattens_with_depth_paths_and_default_codes() -> None:
    tree = parse_tree(GOOD)
    nodes = {n.node_id: n for n in tree.nodes}
    assert tree.taxonomy == "face-sentiment" and tree.label == "1"
    assert nodes["sad"].path == "emotional/negative/sad" and nodes["sad"].depth == 3
    assert nodes["emotional"].codes == ["emotional"] and nodes["emotional"].title == "emotional"
    assert nodes["angry"].codes == ["3"], "numeric codes are read as text"
    assert tree.leaves() == ["neutral", "happy", "sad", "angry"]
    assert tree.code_map()["2"] == "sad"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("taxonomy: t\nnodes:\n  a: {}\n  b: {children: {a: {}}}\n", r"nodes\.b\.children\.a: duplicate node id 'a'"),
        ("taxonomy: t\nnodes:\n  a: {codes: ['1']}\n  b: {codes: ['1']}\n", r"nodes\.b\.codes: code '1' already"),
        ("taxonomy: t\nnodes: {}\n", r"nodes: .*at least 1"),
        ("taxonomy: t\n", r"nodes: Field required"),
        ("taxonomy: t\nnodes:\n  Bad Id: {}\n", r"nodes\.Bad Id: node id 'Bad Id' must match"),
        ("taxonomy: t\nnodes:\n  a: {colour: red}\n", r"nodes\.a\.colour: Extra inputs are not permitted"),
        ("taxonomy: t\nowner: me\nnodes:\n  a: {}\n", r"owner: Extra inputs"),
        ("taxonomy: t\nnodes:\n  a: {children: {}}\n", r"nodes\.a\.children: is empty"),
        ("taxonomy: t\nnodes:\n  a: {replaced_by: zz}\n", r"refers to unknown node 'zz'"),
        ("taxonomy: t\nnodes:\n  a: {status: gone}\n", r"nodes\.a\.status"),
        ("taxonomy: t\nnodes:\n  true: {}\n", r"node id True is not text; write it in quotes"),
        ("taxonomy: [unclosed\n", r"not valid YAML at line"),
        ("- just\n- a list\n", r"expected a mapping"),
        ("taxonomy: ''\nnodes:\n  a: {}\n", r"taxonomy: .*at least 1 character"),
    ],
)
def test_each_bad_tree_gets_one_message_naming_the_place(text: str, expected: str) -> None:
    with pytest.raises(LabelgovError, match=expected):
        parse_tree(text, "t.yaml")


def test_yes_and_no_are_node_ids_not_booleans() -> None:
    tree = parse_tree("taxonomy: t\nnodes:\n  yes: {}\n  no: {}\n")
    assert [n.node_id for n in tree.nodes] == ["yes", "no"]


def test_stored_tree_reads_back_identical_and_hash_ignores_formatting() -> None:
    con = duckdb.connect(":memory:")
    from queries.schema import migrate

    migrate(con, ":memory:")
    tree = parse_tree(GOOD)
    version = store_tree(con, tree, created_by="t")
    assert load_tree(con, version) == tree
    reformatted = GOOD.replace('["0"]', "\n      - '0'").replace("title: Neutral", "title: 'Neutral'")
    assert parse_tree(reformatted).content_hash() == tree.content_hash()
    assert parse_tree(GOOD.replace("Neutral", "Calm")).content_hash() != tree.content_hash()


def test_the_shared_example_tree_parses() -> None:
    folder = require_shared("face_sentiment")
    tree = parse_tree((folder / "tree.yaml").read_text(), "tree.yaml")
    codes = {"0": "neutral", "1": "happy", "2": "sad", "3": "angry"}
    assert {c: n for c, n in tree.code_map().items() if c.isdigit()} == codes


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dashboard.cli", *args], capture_output=True, text=True)


def test_tree_import_cli_is_idempotent_and_refuses_a_second_tree(tmp_path: Path) -> None:
    db, tree_file, other = tmp_path / "w.duckdb", tmp_path / "tree.yaml", tmp_path / "other.yaml"
    tree_file.write_text(GOOD)
    other.write_text(GOOD.replace("Neutral", "Calm"))
    assert _cli("tree", "import", str(tree_file), "--db", str(db)).returncode == 0
    again = _cli("tree", "import", str(tree_file), "--db", str(db))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    refused = _cli("tree", "import", str(other), "--db", str(db))
    assert refused.returncode == 2 and "change proposal" in refused.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("taxonomy: t\nnodes:\n  a: {codes: ['1']}\n  b: {codes: ['1']}\n")
    done = _cli("tree", "import", str(bad), "--db", str(tmp_path / "x.duckdb"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "already means 'a'" in done.stderr


def test_a_warehouse_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    with connect(db) as con:
        con.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', now())", [SCHEMA_VERSION + 5])
    for read_only in (True, False):
        with pytest.raises(LabelgovError, match="newer labelgov"), connect(db, read_only=read_only):
            pass
    done = _cli("info", "--db", str(db))
    assert done.returncode == 2 and "upgrade labelgov" in done.stderr


def test_migrations_run_forward_on_open(tmp_path: Path) -> None:
    from queries.schema import MIGRATIONS

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(MIGRATIONS[0][1])
    con.execute("INSERT INTO schema_migrations VALUES (1, 'initial', now())")
    con.execute("INSERT INTO meta VALUES ('data_version', '0')")
    con.close()
    with connect(db) as con:
        versions = [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
