"""Hierarchical accuracy against a direct computation over ancestor sets, and scikit-learn for the flat parts."""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from queries import derived_base
from queries.connection import memory
from queries.filters import Filters
from queries.hierarchy_accuracy import PAIRS, TABLES, hierarchical_accuracy, refresh_step
from queries.refresh import RefreshContext
from queries.soft_labels import table_exists
from tests.conftest import load_answers
from tests.test_soft_labels import LEAVES, LINEAGE, ORDER, TREE

ALL = Filters()


def reference(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Kiritchenko's hP/hR/hF, tree distance, exact and per-depth accuracy, straight from lineages."""
    inter = sum(len(set(LINEAGE[p]) & set(LINEAGE[t])) for p, t in pairs)
    hp = inter / sum(len(LINEAGE[p]) for p, _ in pairs)
    hr = inter / sum(len(LINEAGE[t]) for _, t in pairs)
    out = {
        "n": len(pairs),
        "exact": float(np.mean([p == t for p, t in pairs])),
        "hP": hp,
        "hR": hr,
        "hF": 2 * hp * hr / (hp + hr),
        "mean_tree_distance": float(
            np.mean([len(set(LINEAGE[p]) ^ set(LINEAGE[t])) for p, t in pairs])  # edges via the lowest common ancestor
        ),
    }

    def cut(node: str, depth: int) -> str | None:
        lineage = LINEAGE[node]
        return lineage[depth - 1] if len(lineage) >= depth else (node if node in LEAVES else None)

    for depth in (1, 2, 3):
        graded = [(cut(p, depth), cut(t, depth)) for p, t in pairs if cut(t, depth) is not None]
        out[f"level_{depth}"] = float(np.mean([p == t for p, t in graded]))
    return out


def build(seed: int = 4, items: int = 120) -> tuple[duckdb.DuckDBPyConnection, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    leaves = sorted(LEAVES)
    gold = [str(rng.choice(leaves)) if rng.random() < 0.9 else str(rng.choice(["a", "b", "a1"])) for _ in range(items)]
    rows = []
    for i, truth in enumerate(gold):
        for k in range(int(rng.integers(1, 6))):
            node = truth if rng.random() < 0.6 else str(rng.choice(ORDER))
            rows.append((f"i{i:03d}", f"u{k}", node))
    answers = pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id"])
    gold_frame = pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(items)], "node_id": gold})
    con = memory()
    load_answers(con, TREE, answers, gold=gold_frame.iloc[: items - 10])  # ten items have no gold
    probs = rng.dirichlet(np.ones(len(leaves)), size=items // 2)
    con.execute(
        "INSERT INTO predictions SELECT item_id, 'clf', 'v1', 1, NULL, MAP(?, p), '2026-01-01', 1 "
        "FROM (SELECT unnest(?) AS item_id, unnest(?) AS p)",
        [leaves, [f"i{i:03d}" for i in range(items // 2)], probs.tolist()],
    )
    derived_base.build(con)
    model = pd.DataFrame(
        {"item_id": [f"i{i:03d}" for i in range(items // 2)], "node_id": [leaves[j] for j in probs.argmax(axis=1)]}
    )
    return con, answers, gold_frame.iloc[: items - 10].merge(model, on="item_id", how="left", suffixes=("", "_model"))


def plurality(nodes: list[str]) -> str:
    counts = Counter(nodes)
    best = max(counts.values())
    return min((n for n, c in counts.items() if c == best), key=ORDER.index)


def check(row: pd.Series, expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert row[key] == pytest.approx(value), key


def test_majority_and_model_against_a_direct_computation() -> None:
    con, answers, gold = build()
    got = hierarchical_accuracy(con, ALL).set_index("method")
    assert list(got.index) == ["majority", "model:clf@v1"]
    majority = answers.groupby("item_id")["node_id"].apply(lambda s: plurality(list(s)))
    pairs = [(majority[i], t) for i, t in zip(gold["item_id"], gold["node_id"], strict=True)]
    check(got.loc["majority"], reference(pairs))
    assert got.loc["majority", "exact"] == pytest.approx(accuracy_score([t for _, t in pairs], [p for p, _ in pairs]))
    assert got.loc["majority", "level_1"] == pytest.approx(
        accuracy_score([LINEAGE[t][0] for _, t in pairs], [LINEAGE[p][0] for p, _ in pairs])
    )
    modelled = gold.dropna(subset=["node_id_model"])
    check(got.loc["model:clf@v1"], reference(list(zip(modelled["node_id_model"], modelled["node_id"], strict=True))))
    # The tables refresh keeps (pairs included, which item-level filters select from) give the same
    # answer as computing inline.
    inline_branch = hierarchical_accuracy(con, Filters(branch="a"))
    assert 0 < inline_branch["n"].iloc[0] < got.loc["majority", "n"]
    refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    assert all(table_exists(con, t) for t in (*TABLES, PAIRS))
    pd.testing.assert_frame_equal(hierarchical_accuracy(con, ALL).set_index("method"), got)
    pd.testing.assert_frame_equal(hierarchical_accuracy(con, Filters(branch="a")), inline_branch)


def test_small_tree_by_hand() -> None:
    con = memory()
    load_answers(
        con,
        TREE,
        pd.DataFrame({"item_id": ["x", "y"], "annotator_id": ["u", "u"], "node_id": ["a1x", "a1x"]}),
        gold=pd.DataFrame({"item_id": ["x", "y"], "node_id": ["a1x", "a1x"]}),
    )
    derived_base.build(con)
    con.execute(
        "CREATE TABLE d_ds_items AS SELECT item_id, item_idx, "
        "CASE item_id WHEN 'x' THEN 'a1y' ELSE 'a' END AS ds_node, 0.9 AS ds_p, "
        "'a1x' AS majority_node FROM d_item_index"
    )
    got = hierarchical_accuracy(con, ALL).set_index("method")
    # A sibling leaf shares 2 of 3 ancestors; the coarse 'a' shares its only one and has no place below depth 1.
    check(
        got.loc["dawid_skene"],
        {"n": 2, "exact": 0.0, "level_1": 1.0, "level_2": 0.5, "level_3": 0.0, "hP": 3 / 4, "hR": 3 / 6,
         "hF": 0.6, "mean_tree_distance": 2.0},
    )
    check(got.loc["majority"], {"exact": 1.0, "hP": 1.0, "hR": 1.0, "mean_tree_distance": 0.0})


def test_answer_filters_recompute_the_majority() -> None:
    con, answers, gold = build(seed=9)
    mine = answers[answers["annotator_id"].isin(["u0", "u1"])]
    majority = mine.groupby("item_id")["node_id"].apply(lambda s: plurality(list(s)))
    pairs = [(majority[i], t) for i, t in zip(gold["item_id"], gold["node_id"], strict=True) if i in majority]
    got = hierarchical_accuracy(con, Filters(annotators=("u0", "u1"))).set_index("method")
    check(got.loc["majority"], reference(pairs))


def test_empty_inputs() -> None:
    con = memory()
    assert hierarchical_accuracy(con, ALL).empty
    load_answers(con, TREE, pd.DataFrame({"item_id": ["x"], "annotator_id": ["u"], "node_id": ["b1"]}))
    derived_base.build(con)
    frame = hierarchical_accuracy(con, ALL)  # no gold
    assert frame.empty and list(frame.columns)[:3] == ["method", "n", "exact"] and "level_3" in frame.columns
