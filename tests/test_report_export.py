"""`labelgov report` and `labelgov export labels`, on a demo warehouse and on small planted ones."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from queries import agreement, export, soft_labels
from queries.connection import bump_data_version, connect, memory
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.refresh import RefreshContext, refresh
from tests.conftest import load_answers
from tests.conftest import run_cli as _run

CONTRACT_KEYS = {
    "counts",
    "alpha",
    "alpha_by_level",
    "accuracy_vs_gold",
    "model_accuracy_vs_gold",
    "escalation_rate",
    "escalation_gain",
    "cost_per_item",
    "top_drift_alerts",
}

# Three levels, two top branches: enough for answers to disagree at the top and agree below.
TREE = """
taxonomy: coherence
version: "1"
nodes:
  a:
    title: A
    children:
      a1:
        title: A1
        children:
          a1x: {title: A1x}
          a1y: {title: A1y}
      a2:
        title: A2
        children:
          a2x: {title: A2x}
          a2y: {title: A2y}
  b:
    title: B
    children:
      b1:
        title: B1
        children:
          b1x: {title: B1x}
          b1y: {title: B1y}
"""

# Items whose levels, taken one by one, would not make a path: b leads at the top but only a1x goes
# deeper (i1); a2 leads at level 2 but the exact vote is a three-way tie won by a1x (i2). i3's answer
# below its consensus supports it, i4's coarse answer above does not, i5 has four answers.
ANSWERS = {
    "i1": ["b", "b", "a1x"],
    "i2": ["a2x", "a2y", "a1x"],
    "i3": ["a1", "a1", "a1y"],
    "i4": ["a", "a1x", "a1x"],
    "i5": ["b1y", "a2x", "b1y", "b1x"],
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dashboard.cli", *args], capture_output=True, text=True)




class Tree:
    """TREE read straight from its YAML, independently of queries.taxonomy."""

    def __init__(self, text: str) -> None:
        self.order: list[str] = []
        self.lineage: dict[str, list[str]] = {}
        self.leaf: dict[str, bool] = {}

        def walk(nodes: dict[str, Any], above: list[str]) -> None:
            for node, spec in nodes.items():
                self.order.append(node)
                self.lineage[node] = [*above, node]
                self.leaf[node] = not spec.get("children")
                walk(spec.get("children") or {}, self.lineage[node])

        walk(yaml.safe_load(text)["nodes"], [])
        self.depth = max(len(path) for path in self.lineage.values())

    def majority(self, answers: list[str]) -> tuple[list[str], float, dict[str, float]]:
        """(path, confidence, distribution on the consensus's cut) by the definitions in queries.export."""
        votes = Counter(answers)
        best = min(votes, key=lambda node: (-votes[node], self.order.index(node)))
        support = sum(best in self.lineage[answer] for answer in answers) / len(answers)
        depth = len(self.lineage[best])
        reaching = [a for a in answers if self.leaf[a] or len(self.lineage[a]) >= depth]
        cut = Counter(self.lineage[a][min(depth, len(self.lineage[a])) - 1] for a in reaching)
        return self.lineage[best], support, {node: n / len(reaching) for node, n in cut.items()}


def _answers_csv(folder: Path, answers: dict[str, list[str]], name: str = "answers.csv") -> Path:
    """One answer per (item, annotator); annotator k gives every item's k-th answer."""
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["item_id", "annotator_id", "label"])
        for item, labels in answers.items():
            out.writerows([item, f"w{k}", label] for k, label in enumerate(labels, 1))
    return path


def _warehouse(
    folder: Path, capsys: pytest.CaptureFixture[str], answers: dict[str, list[str]] | None, *, refreshed: bool = True
) -> Path:
    """A warehouse file built as a user builds one: import TREE, ingest a CSV, refresh."""
    (folder / "tree.yaml").write_text(TREE, encoding="utf-8")
    db = folder / "w.duckdb"
    steps = [["tree", "import", str(folder / "tree.yaml")]]
    if answers:
        steps.append(["ingest", "annotations", str(_answers_csv(folder, answers))])
    if refreshed:
        steps.append(["refresh"])
    for step in steps:
        code, _, err = _run(capsys, *step, "--db", str(db))
        assert code == 0, err
    return db


def _read_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The exported rows as each format stores them (CSV as text), distributions as dicts."""
    if fmt == "parquet":
        rows = pq.read_table(path).to_pylist()
        return [{**row, "distribution": dict(row["distribution"])} for row in rows]
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{**row, "distribution": json.loads(row["distribution"])} for row in rows]


def test_report_json_keeps_its_contract_and_matches_the_analytics(small_demo: Path) -> None:
    done = _cli("report", "--json", "--db", str(small_demo))
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures.keys() >= CONTRACT_KEYS
    with connect(small_demo, read_only=True) as con:
        assert figures["alpha"] == pytest.approx(agreement.alpha(con, Filters(), bootstrap=0).value, abs=1e-6)
        assert set(figures["alpha_by_level"]) == {"1", "2", "3"}
        level2 = agreement.alpha(con, Filters(), level=2, bootstrap=0).value
        assert figures["alpha_by_level"]["2"] == pytest.approx(level2, abs=1e-6)
        # Majority-vote accuracy recomputed directly: consensus node against gold on gold items.
        direct = con.execute(
            "SELECT avg(CAST(i.consensus_node = g.node_id AS DOUBLE)) FROM d_items i JOIN gold_labels g USING (item_id)"
        ).fetchall()[0][0]
        total_cost, items = con.execute("SELECT sum(cost), count(DISTINCT item_id) FROM annotations").fetchall()[0]
        # The demo has one prediction per item and model version, each naming its node.
        models = dict(
            con.execute(
                "SELECT p.model || '@' || p.model_version, avg(CAST(p.node_id = g.node_id AS DOUBLE)) "
                "FROM predictions p JOIN gold_labels g USING (item_id) GROUP BY ALL"
            ).fetchall()
        )
    assert figures["accuracy_vs_gold"]["majority_vote"] == pytest.approx(direct, abs=1e-6)
    assert figures["accuracy_vs_gold"].keys() == {"majority_vote", "dawid_skene"}
    assert len(models) >= 2 and figures["model_accuracy_vs_gold"] == pytest.approx(models, abs=1e-6)
    assert figures["cost_per_item"] == pytest.approx(total_cost / items, rel=1e-6)
    # Coarser levels agree more than finer ones on a tree whose hard cases are siblings.
    assert figures["alpha_by_level"]["1"] > figures["alpha_by_level"]["3"]
    assert 0 < figures["escalation_rate"] < 1


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_labels_one_row_per_item_with_provenance(small_demo: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"labels.{fmt}"
    done = _cli("export", "labels", str(target), "--db", str(small_demo), "--method", "dawid-skene")
    assert done.returncode == 0, done.stderr
    if fmt == "parquet":
        frame = pd.read_parquet(target)
        distributions = [dict(d) for d in frame["distribution"]]
    elif fmt == "csv":
        frame = pd.read_csv(target)
        distributions = [json.loads(d) for d in frame["distribution"]]
    else:
        frame = pd.read_json(target, lines=True)
        distributions = list(frame["distribution"])
    with connect(small_demo, read_only=True) as con:
        items = con.execute("SELECT count(*) FROM items").fetchall()[0][0]
        lineage = dict(con.execute("SELECT node_id, lineage FROM d_nodes").fetchall())
        version = con.execute("SELECT value FROM meta WHERE key = 'refreshed_data_version'").fetchall()[0][0]
    assert len(frame) == items and frame["item_id"].is_unique
    assert all(abs(sum(d.values()) - 1) < 1e-3 for d in distributions)
    assert (frame["data_version"] == int(version)).all() and (frame["method"] == "dawid-skene").all()
    for row in frame.head(200).to_dict("records"):
        assert list(lineage[row["level_3"]]) == [row["level_1"], row["level_2"], row["level_3"]]
    assert frame["confidence"].between(0, 1).all()


def test_export_refuses_stale_analytics(small_demo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "stale.duckdb"
    shutil.copy(small_demo, copy)
    with connect(copy) as con:
        bump_data_version(con)
        with pytest.raises(LabelgovError, match="refresh"):
            export.labels(con, "majority")
    done = _cli("export", "labels", str(tmp_path / "x.csv"), "--db", str(copy))
    assert done.returncode == 2 and "labelgov refresh" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_majority_export_is_one_path_with_its_support(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    db = _warehouse(tmp_path, capsys, ANSWERS)
    target = tmp_path / f"labels.{fmt}"
    code, _, err = _run(capsys, "export", "labels", str(target), "--db", str(db), "--method", "majority")
    assert code == 0, err
    tree = Tree(TREE)
    rows = {row["item_id"]: row for row in _read_rows(target, fmt)}
    assert rows.keys() == ANSWERS.keys()
    for item, answers in ANSWERS.items():
        path, confidence, distribution = tree.majority(answers)
        row = rows[item]
        levels = [row[f"level_{level}"] or None for level in range(1, tree.depth + 1)]  # CSV writes null as ""
        assert levels == path + [None] * (tree.depth - len(path)), item
        assert float(row["confidence"]) == pytest.approx(confidence), item
        assert row["distribution"] == pytest.approx(distribution, abs=1e-6), item
        # An integer in every format: a count written as 3.0 breaks readers that expect one.
        assert str(row["n_answers"]) == str(len(answers)), item
        if fmt != "csv":
            assert type(row["n_answers"]) is int
    assert rows["i1"]["level_1"] == "b" and float(rows["i1"]["confidence"]) == pytest.approx(2 / 3)
    assert rows["i1"]["distribution"] == pytest.approx({"a": 1 / 3, "b": 2 / 3})


def test_dawid_skene_export_is_the_lineage_of_the_posterior_leaf() -> None:
    """A posterior whose level-by-level tops make no path: b1x is the likeliest leaf, but a1x and a2x
    together make a the likeliest top node. It is planted in place of the fitted one (and the soft
    labels rebuilt from it), so the test does not depend on where the model's fit lands."""
    con = memory()
    load_answers(
        con,
        TREE,
        pd.DataFrame(
            [("x", "w1", "b1x"), ("x", "w2", "a1x"), ("x", "w3", "a2x"), ("y", "w1", "a1y"), ("y", "w2", "a1y")],
            columns=["item_id", "annotator_id", "node_id"],
        ),
    )
    refresh(con)
    planted = {"b1x": 0.4, "a1x": 0.3, "a2x": 0.3}
    con.execute("DELETE FROM d_posterior WHERE item_id = 'x'")
    con.execute(
        "INSERT INTO d_posterior SELECT 'x', item_idx, unnest(?), unnest(?) FROM d_item_index WHERE item_id = 'x'",
        [list(planted), list(planted.values())],
    )
    con.execute("UPDATE d_ds_items SET ds_node = 'b1x', ds_p = 0.4 WHERE item_id = 'x'")
    soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    tops = con.execute(
        "SELECT list(top_node ORDER BY depth) FROM d_soft_levels JOIN d_item_index USING (item_idx) "
        "WHERE source = 'posterior' AND item_id = 'x'"
    ).fetchone()[0]
    assert tops == ["a", "b1", "b1x"], "the planted posterior no longer splits its levels"
    tree = Tree(TREE)
    frame = export.labels(con, "dawid-skene").set_index("item_id")
    row = frame.loc["x"]
    assert [row["level_1"], row["level_2"], row["level_3"]] == tree.lineage["b1x"] == ["b", "b1", "b1x"]
    assert row["confidence"] == pytest.approx(planted["b1x"])
    assert dict(row["distribution"]) == pytest.approx(planted)
    # Majority on the same item: a three-way tie, won by the leaf first in tree order.
    majority = export.labels(con, "majority").set_index("item_id").loc["x"]
    path, confidence, _ = tree.majority(["b1x", "a1x", "a2x"])
    assert [majority["level_1"], majority["level_2"], majority["level_3"]] == path
    assert majority["confidence"] == pytest.approx(confidence)
    con.close()


def test_majority_export_on_the_demo_is_the_warehouse_consensus(small_demo: Path, tmp_path: Path) -> None:
    target = tmp_path / "labels.parquet"
    done = _cli("export", "labels", str(target), "--db", str(small_demo), "--method", "majority")
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(target)
    assert frame["n_answers"].dtype == "int64"
    with connect(small_demo, read_only=True) as con:
        parent = dict(con.execute("SELECT node_id, parent_id FROM d_nodes").fetchall())
        # Straight from the answers: the plurality node (ties to tree order) and the share of answers
        # at or below it.
        expected = (
            con.execute(
                """
            WITH votes AS (
                SELECT item_id, tree_version, node_id, count(*) AS n FROM d_answers GROUP BY ALL
            ), best AS (
                SELECT v.item_id, arg_max(v.node_id, [v.n, -d.ordinal]) AS node_id
                FROM votes v JOIN d_nodes d USING (tree_version, node_id) GROUP BY v.item_id
            )
            SELECT b.item_id, b.node_id, count(*) AS answers,
                   avg(CAST(list_contains(d.lineage, b.node_id) AS DOUBLE)) AS support
            FROM best b JOIN d_answers a USING (item_id) JOIN d_nodes d ON d.tree_version = a.tree_version
                AND d.node_id = a.node_id
            GROUP BY ALL
            """
            )
            .df()
            .set_index("item_id")
        )
    frame = frame.set_index("item_id").loc[expected.index]
    finest = frame[["level_3", "level_2", "level_1"]].bfill(axis=1)["level_3"]
    assert (finest == expected["node_id"]).all()
    assert frame["confidence"].to_numpy() == pytest.approx(expected["support"].to_numpy())
    assert (frame["n_answers"] == expected["answers"]).all()
    for level in (2, 3):
        named = frame[f"level_{level}"].notna()
        assert (frame.loc[named, f"level_{level}"].map(parent) == frame.loc[named, f"level_{level - 1}"]).all()


def test_report_refuses_a_warehouse_never_refreshed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _warehouse(tmp_path, capsys, ANSWERS, refreshed=False)
    for extra in ([], ["--json"]):
        code, out, err = _run(capsys, "report", "--db", str(db), *extra)
        assert code == 2 and out == ""
        assert err.strip() == "labelgov: error: the analytics have not been computed yet: run `labelgov refresh` first"


def test_refresh_and_report_of_an_empty_warehouse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A warehouse without a tree or answers refreshes to empty tables and reports its zeros, not an error."""
    db = str(tmp_path / "empty.duckdb")
    code, out, err = _run(capsys, "refresh", "--db", db)
    assert code == 0 and err == "" and out.startswith("refreshed data version 0 as of no label tree yet: full")
    code, out, err = _run(capsys, "report", "--db", db)
    assert code == 0 and err == "" and out.startswith("items 0 · annotations 0")
    assert "Krippendorff's alpha n/a (tree distance n/a)\n" in out
    code, out, err = _run(capsys, "report", "--db", db, "--json")
    assert code == 0 and json.loads(out)["alpha"] is None


def test_report_notes_new_data_only_when_there_is_some(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _warehouse(tmp_path, capsys, ANSWERS)
    code, _, err = _run(capsys, "report", "--db", str(db))
    assert code == 0 and err == ""
    more = _answers_csv(tmp_path, {"i6": ["a1x", "a1x"]}, "more.csv")
    assert _run(capsys, "ingest", "annotations", str(more), "--db", str(db))[0] == 0
    code, out, err = _run(capsys, "report", "--db", str(db))
    assert code == 0 and err.startswith("note: new data since the last refresh") and out.startswith("items 6")


def test_report_json_has_every_key_when_there_is_no_gold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _warehouse(tmp_path, capsys, ANSWERS)
    code, out, err = _run(capsys, "report", "--json", "--db", str(db))
    assert code == 0, err
    figures = json.loads(out)
    assert figures.keys() >= CONTRACT_KEYS
    assert figures["accuracy_vs_gold"] == {"majority_vote": None, "dawid_skene": None}
    assert figures["model_accuracy_vs_gold"] == {} and figures["gold_items"] == 0
    # Five items, none escalated: a rate with a denominator, so a number.
    assert figures["escalation_rate"] == 0.0


def test_report_rates_over_nothing_are_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _warehouse(tmp_path, capsys, None)
    code, out, err = _run(capsys, "report", "--json", "--db", str(db))
    assert code == 0, err
    figures = json.loads(out)
    assert figures["counts"]["items"] == 0
    assert figures["escalation_rate"] is None and figures["cost_per_item"] is None
    assert figures["accuracy_vs_gold"] == {"majority_vote": None, "dawid_skene": None}
