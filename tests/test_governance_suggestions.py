"""Merge and split suggestions find the effects planted in generated annotations, with correct evidence."""

from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from test_governance_fixtures import TREE, build, insert_answers

from governance import suggestions as S
from queries.connection import memory
from queries.taxonomy import parse_tree, store_tree


@pytest.fixture(scope="module")
def planted():
    con = build(items=300, users=False)
    yield con
    con.close()


def test_confused_siblings_are_the_top_merge_candidate(planted):
    found = S.merge_candidates(planted)
    assert list(zip(found["a"], found["b"], strict=True)) == [("cat", "lynx")]
    row = found.iloc[0]
    answers = planted.execute("SELECT item_id, annotator_id, node_id FROM annotations").df()
    per_item = answers.groupby("item_id")["node_id"].agg(list)
    observed = sum(v.count("cat") * v.count("lynx") / (len(v) - 1) for v in per_item if len(v) > 1)
    totals = answers["node_id"].value_counts()
    assert row["observed"] == pytest.approx(observed)
    assert row["expected"] == pytest.approx(totals["cat"] * totals["lynx"] / (len(answers) - 1))
    assert row["items_with_both"] == sum({"cat", "lynx"} <= set(v) for v in per_item)
    merged = answers.assign(node_id=answers["node_id"].replace({"lynx": "cat"}))
    matrix = merged.pivot(index="annotator_id", columns="item_id", values="node_id")
    codes = {v: i for i, v in enumerate(sorted(merged["node_id"].unique()))}
    reference = krippendorff.alpha(
        matrix.apply(lambda c: c.map(codes)).to_numpy(dtype=float), level_of_measurement="nominal"
    )
    assert row["alpha_if_merged"] == pytest.approx(reference, abs=1e-9)
    assert row["alpha_if_merged"] > row["alpha"] + 0.1


def test_well_separated_siblings_are_not_suggested(planted):
    everything = S.merge_candidates(planted, min_confusability=0.0, min_items=0)
    others = everything[everything["a"] != "cat"]
    assert (others["confusability"] < 0.5).all()


def test_a_node_used_in_two_senses_is_a_split_candidate():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(240):
        kind = ["dog_a", "dog_b", "sparrow", "cat"][i % 4]
        for a in range(8):
            if kind == "dog_a":
                label = "dog" if rng.random() < 0.95 else "cat"
            elif kind == "dog_b":
                label = "dog" if rng.random() < 0.5 else "finch"
            else:
                label = kind if rng.random() < 0.9 else str(rng.choice(["cat", "lynx", "dog", "sparrow", "finch"]))
            rows.append((f"i{i}", f"a{a}", label))
    con = memory()
    store_tree(con, parse_tree(TREE), created_by="test")
    insert_answers(con, pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id"]), 1)
    found = S.split_candidates(con)
    assert found["node_id"].tolist() == ["dog"]
    row = found.iloc[0]
    assert row["top_co_label"] == "finch"
    assert row["rate_low"] == pytest.approx(0.5, abs=0.1) and row["rate_high"] == pytest.approx(0.95, abs=0.05)
    assert row["weight_low"] == pytest.approx(0.5, abs=0.15)
    shares = []
    frame = pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id"])
    for _, group in frame.groupby("item_id"):
        counts = group["node_id"].value_counts()
        if counts.get("dog", 0) >= 2:
            shares.append(counts["dog"] / counts.sum())
    x = np.array(shares)
    n = x.size
    m2, m3, m4 = (((x - x.mean()) ** k).mean() for k in (2, 3, 4))
    g1 = m3 / m2**1.5 * np.sqrt(n * (n - 1)) / (n - 2)
    g2 = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (m4 / m2**2 - 3) + 6)
    assert row["bimodality"] == pytest.approx((g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))
    assert row["contested_share"] == pytest.approx((x <= 0.6).mean())
