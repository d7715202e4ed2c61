"""Contested items and the item detail, on hand-built items whose ranking is known."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pandas as pd
import pytest
from scipy.stats import entropy

from queries import contested, derived_base, soft_labels
from queries.connection import memory
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.refresh import RefreshContext
from tests.conftest import load_answers
from tests.test_soft_labels import TREE

ANSWERS = {
    "e1": ["a1x", "a1y", "a2x", "b1"],  # four leaves: entropy 2, gap 0
    "e2": ["a1x", "a1y"],  # entropy 1, gap 0
    "e3": ["a1x", "a1x", "a1y"],  # entropy 0.918, gap 1/3
    "e4": ["a1x", "a1x", "a1x"],  # unanimous
    "e5": ["c"],  # a single answer
}
ALL = Filters()


def build(with_ds: bool = False) -> duckdb.DuckDBPyConnection:
    rows = [(item, f"u{k + 1}", node) for item, nodes in ANSWERS.items() for k, node in enumerate(nodes)]
    con = memory()
    load_answers(con, TREE, pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id"]))
    con.execute("UPDATE items SET source = CASE WHEN item_id IN ('e1', 'e3') THEN 'web' ELSE 'app' END, segment = 'en'")
    con.execute(
        "INSERT INTO gold_labels VALUES ('e2', 'a1y', 'expert', 1, 1), ('e1', 'b1', 'expert', 1, 1), "
        "('e1', 'a2x', 'expert', 1, 2)"
    )
    con.execute(
        "INSERT INTO predictions VALUES "
        "('e2', 'clf', 'v1', 1, NULL, MAP(['a1x', 'a1y', 'b1'], [0.6, 0.3, 0.1]), '2026-01-01', 1), "
        "('e1', 'clf', 'v1', 1, NULL, MAP(['a1x', 'b2'], [0.9, 0.1]), '2026-01-01', 1), "
        "('e1', 'clf', 'v2', 1, NULL, MAP(['a1x', 'b2'], [0.2, 0.8]), '2026-02-01', 1)"
    )
    con.execute(
        "INSERT INTO escalations VALUES ('e3', 'low_confidence', 'expert-1', '2026-01-06', NULL, 1), "
        "('e3', 'disagreement', 'expert-2', '2026-01-07', '2026-01-08', 1)"
    )
    derived_base.build(con)
    if with_ds:
        con.execute(
            "CREATE TABLE d_ds_items AS SELECT item_id, item_idx, 'a1x' AS ds_node, "
            "CASE item_id WHEN 'e4' THEN 0.41 WHEN 'e5' THEN 0.55 ELSE 0.9 END AS ds_p, 'a1x' AS majority_node "
            "FROM d_item_index"
        )
        con.execute(
            "CREATE TABLE d_ds_annotators AS SELECT annotator_id, annotator_idx, 10 AS answers, "
            "0.5 + annotator_idx / 10 AS ds_accuracy FROM d_annotator_index"
        )
    soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    return con


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = build()
    yield c
    c.close()


def test_ranked_by_entropy_with_scipy_values(con) -> None:
    got = contested.contested_items(con, ALL)
    assert list(got["item_id"]) == ["e1", "e2", "e3", "e4", "e5"]  # ties at 0: more answers first
    for item, nodes in ANSWERS.items():
        counts = pd.Series(nodes).value_counts().to_numpy()
        row = got.set_index("item_id").loc[item]
        assert row["entropy"] == pytest.approx(entropy(counts, base=2))
        assert row["answers"] == len(nodes)
    assert list(got.columns) == contested.CONTESTED_COLUMNS


def test_ranked_by_gap_and_limited(con) -> None:
    got = contested.contested_items(con, ALL, limit=3, sort="gap")
    assert list(got["item_id"]) == ["e1", "e2", "e3"]
    assert list(got["gap"]) == pytest.approx([0.0, 0.0, 1 / 3])


def test_gold_model_and_escalation_columns(con) -> None:
    got = contested.contested_items(con, ALL).set_index("item_id")
    assert got.loc["e2", "gold_node"] == "a1y"
    assert got.loc["e1", "gold_node"] == "a2x"  # the later gold batch wins
    assert got.loc["e1", "model_node"] == "b2"  # the later prediction's argmax
    assert got.loc["e2", "model_node"] == "a1x"
    assert got["escalated"].to_dict() == {"e1": False, "e2": False, "e3": True, "e4": False, "e5": False}
    assert got["ds_node"].isna().all()


def test_posterior_sort_needs_dawid_skene_and_ranks_least_sure_first(con) -> None:
    with pytest.raises(LabelgovError, match="Dawid-Skene"):
        contested.contested_items(con, ALL, sort="posterior")
    with pytest.raises(LabelgovError, match="sort must be"):
        contested.contested_items(con, ALL, sort="loudness")  # type: ignore[arg-type]
    ds = build(with_ds=True)
    got = contested.contested_items(ds, ALL, sort="posterior")
    assert list(got["item_id"][:2]) == ["e4", "e5"] and got.loc[0, "ds_p"] == pytest.approx(0.41)


def test_filters(con) -> None:
    web = contested.contested_items(con, Filters(sources=("web",)))
    assert list(web["item_id"]) == ["e1", "e3"]
    two = contested.contested_items(con, Filters(annotators=("u1", "u2")))
    # With the first two answers only, e1 is a1x vs a1y: one bit; e3 and e4 become unanimous.
    row = two.set_index("item_id")
    assert row.loc["e1", "entropy"] == pytest.approx(1.0) and row.loc["e1", "answers"] == 2
    assert row.loc["e3", "entropy"] == pytest.approx(0.0)
    assert contested.contested_items(con, Filters(sources=("nowhere",))).empty


def test_item_detail() -> None:
    con = build(with_ds=True)
    detail = contested.item_detail(con, "e2")
    assert detail.item["source"] == "app" and detail.item["answers"] == 2
    assert list(detail.annotations["node_id"]) == ["a1x", "a1y"]
    reliability = dict(con.execute("SELECT annotator_id, ds_accuracy FROM d_ds_annotators").fetchall())
    for _, row in detail.annotations.iterrows():
        assert row["reliability"] == pytest.approx(reliability[row["annotator_id"]])
    expected = soft_labels.item_node_mass(con, ALL, items=["e2"])
    pd.testing.assert_frame_equal(detail.mass.drop(columns="title"), expected)
    assert set(detail.mass["title"]) >= {"a1x", "a1y"}
    assert detail.levels.set_index("depth").loc[3, "entropy"] == pytest.approx(1.0)
    assert list(detail.model["node_id"]) == ["a1x", "a1y", "b1"] and list(detail.model["rank"]) == [1, 2, 3]
    assert list(detail.gold["node_id"]) == ["a1y"]
    assert detail.escalations.empty and detail.posterior.empty
    escalated = contested.item_detail(con, "e3")
    assert list(escalated.escalations["trigger"]) == ["low_confidence", "disagreement"]
    with pytest.raises(LabelgovError, match="no item"):
        contested.item_detail(con, "missing")


def test_refresh_keeps_the_unfiltered_ranking_per_sort() -> None:
    con = build(with_ds=True)
    live = {(s, n): contested.contested_items(con, ALL, limit=n, sort=s) for s in contested.ORDER_BY for n in (2, 200)}
    assert contested.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0)) == "full"
    assert soft_labels.table_exists(con, contested.TOP)
    for (sort, n), expected in live.items():
        assert len(expected) == min(n, len(ANSWERS))
        pd.testing.assert_frame_equal(contested.contested_items(con, ALL, limit=n, sort=sort), expected)
