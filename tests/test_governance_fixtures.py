"""Small warehouses with planted effects for the governance tests, and checks of the plants themselves.

Five annotators label every item. Annotators cannot tell ``cat`` from ``lynx`` (they pick either at
random for both), while the other leaves are labelled correctly 90% of the time, so merging the two
siblings must raise agreement. A model predicts every item; some cat items have escalations in flight.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import numpy as np
import pandas as pd
import pytest

from governance.roles import grant
from queries.connection import memory
from queries.taxonomy import parse_tree, store_tree

TREE = """
taxonomy: animals
nodes:
  mammal:
    children:
      cat: {}
      lynx: {}
      dog: {}
  bird:
    children:
      sparrow: {}
      finch: {}
"""
LEAVES = ["cat", "lynx", "dog", "sparrow", "finch"]
USERS = {
    "root": "admin",
    "alice": "proposer",
    "bob": "steward",
    "carol": "steward",
    "dave": "admin",
    "vic": "viewer",
    "aud": "auditor",
}


def planted_answers(items: int = 120, annotators: int = 5, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long answers (item_id, annotator_id, node_id) and the truth per item."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(LEAVES, size=items, p=[0.25, 0.2, 0.25, 0.15, 0.15])
    rows = []
    for i, label in enumerate(truth):
        for a in range(annotators):
            if label in ("cat", "lynx"):
                chosen = rng.choice(["cat", "lynx"])
            elif rng.random() < 0.9:
                chosen = label
            else:
                chosen = rng.choice(LEAVES)
            rows.append((f"i{i:04d}", f"a{a}", str(chosen)))
    answers = pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id"])
    gold = pd.DataFrame({"item_id": [f"i{i:04d}" for i in range(items)], "node_id": truth})
    return answers, gold


def insert_answers(con, answers: pd.DataFrame, version: int, prefix: str = "t") -> None:
    frame = answers.assign(annotation_id=[f"{prefix}{i:06d}" for i in range(len(answers))], tree_version=version)
    con.register("_answers", frame)
    con.execute(
        "INSERT INTO annotations (annotation_id, item_id, annotator_id, tree_version, node_id, stage, created_at, "
        "duration_s, cost, batch_id) SELECT annotation_id, item_id, annotator_id, tree_version, node_id, 'initial', "
        "TIMESTAMP '2026-01-05', 10 + (hash(annotation_id) % 20), 0.05 + (hash(annotation_id) % 5) / 100, 1 "
        "FROM _answers"
    )
    con.unregister("_answers")


def build(items: int = 120, seed: int = 7, users: bool = True):
    """An in-memory warehouse: tree v1, planted answers, gold, one model's predictions, escalations."""
    con = memory()
    version = store_tree(con, parse_tree(TREE), created_by="test")
    answers, gold = planted_answers(items, seed=seed)
    insert_answers(con, answers, version)
    con.register("_gold", gold)
    con.execute("INSERT INTO gold_labels SELECT item_id, node_id, 'expert', ?, 1 FROM _gold", [version])
    con.unregister("_gold")
    rng = np.random.default_rng(seed + 1)
    probs = rng.dirichlet(np.ones(len(LEAVES)), size=items)
    for k, label in enumerate(gold["node_id"]):
        probs[k, LEAVES.index(label)] += 1.0 if rng.random() < 0.7 else 0.0
    probs = probs / probs.sum(axis=1, keepdims=True)
    preds = pd.DataFrame({"item_id": gold["item_id"], "keys": [LEAVES] * items, "vals": probs.tolist()})
    con.register("_preds", preds)
    con.execute(
        "INSERT INTO predictions SELECT item_id, 'clf', 'v1', ?, NULL, map(keys, vals), TIMESTAMP '2026-01-06', 1 "
        "FROM _preds",
        [version],
    )
    con.unregister("_preds")
    cats = gold[gold["node_id"] == "cat"]["item_id"].head(6).tolist()
    for k, item in enumerate(cats):
        con.execute(
            "INSERT INTO escalations VALUES (?, 'disagreement', 'expert', TIMESTAMP '2026-01-07', ?, 1)",
            [item, None if k % 2 == 0 else pd.Timestamp("2026-01-08")],
        )
    if users:
        for user, role in USERS.items():
            grant(con, admin_user="root", user=user, role=role)
    return con


def fresh_warehouse() -> Iterator[duckdb.DuckDBPyConnection]:
    """Body of the ``warehouse`` fixture; modules declare it with ``pytest.fixture(fresh_warehouse, ...)``."""
    con = build()
    yield con
    con.close()


warehouse = pytest.fixture(fresh_warehouse, name="warehouse")


def test_planted_confusion_is_there(warehouse):
    """The plant the merge tests rely on: cat and lynx answers are a coin toss on cat/lynx items."""
    frame = warehouse.execute(
        "SELECT a.node_id, g.node_id AS truth FROM annotations a JOIN gold_labels g USING (item_id)"
    ).df()
    felid = frame[frame["truth"].isin(["cat", "lynx"])]
    assert set(felid["node_id"]) == {"cat", "lynx"}
    assert 0.35 < (felid["node_id"] == "cat").mean() < 0.65
    others = frame[~frame["truth"].isin(["cat", "lynx"])]
    assert (others["node_id"] == others["truth"]).mean() > 0.85
