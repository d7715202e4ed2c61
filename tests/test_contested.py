"""Contested items and the item detail, on hand-built items whose ranking is known."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from scipy.stats import entropy

from queries import contested, derived_base, soft_labels
from queries.connection import connect, memory
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
    ids = con.execute("SELECT annotation_id FROM annotations WHERE item_id = 'e2' ORDER BY created_at, annotation_id")
    assert list(detail.annotations["annotation_id"]) == [r[0] for r in ids.fetchall()]
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


@pytest.fixture(scope="module")
def demo(small_demo: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(small_demo, read_only=True) as c:
        yield c


def _answer_filters(con: duckdb.DuckDBPyConnection) -> list[Filters]:
    """One filter of every kind that changes which answers count (the spread bound's case), and mixes."""
    found = con.execute("SELECT DISTINCT tier FROM d_answers WHERE tier IS NOT NULL ORDER BY 1").fetchall()
    tiers = [r[0] for r in found]
    last = con.execute("SELECT max(week)::DATE FROM d_answers").fetchone()[0]
    busiest = "SELECT annotator_id FROM d_answers GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 3"
    annotators = con.execute(busiest).fetchall()
    branch = con.execute("SELECT node_id FROM d_nodes WHERE depth = 1 AND NOT is_leaf ORDER BY ordinal").fetchone()[0]
    source = con.execute("SELECT source FROM d_items GROUP BY 1 ORDER BY count(*) DESC, 1").fetchone()[0]
    return [
        *(Filters(tiers=(t,)) for t in tiers),
        Filters(tiers=tuple(tiers[:2])),
        Filters(start=last, end=last + timedelta(days=6)),
        Filters(start=last - timedelta(days=30), end=last - timedelta(days=3)),
        Filters(annotators=tuple(r[0] for r in annotators)),
        Filters(stages=("initial",)),
        Filters(tree_version=1),
        Filters(tiers=(tiers[0],), branch=branch, sources=(source,)),
        Filters(tiers=("no-such-tier",)),
    ]


@pytest.mark.parametrize("start", [contested.SPREAD_START, 1])
def test_the_spread_bound_ranks_as_every_item_does(
    demo: duckdb.DuckDBPyConnection, start: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pruned entropy ranking equals the ranking over every item, starting wide or from the widest items."""
    monkeypatch.setattr(contested, "SPREAD_START", start)
    assert soft_labels.table_exists(demo, contested.SPREAD)
    tries: list[int | None] = []
    ranking = contested._ranking

    def counted(*args: object) -> pd.DataFrame:
        tries.append(args[-1])  # type: ignore[arg-type]
        return ranking(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(contested, "_ranking", counted)
    for f in _answer_filters(demo):
        for limit in (1, 20, 200):
            got = contested.contested_items(demo, f, limit=limit)
            expected = ranking(demo, f, limit, "entropy", True, None)
            pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, obj=f"{f!r} {limit}")
    # Most rankings stop at a bound, some after widening; the fallback over every item stays rare.
    assert tries.count(None) < len(tries) // 4 and len(set(tries)) > 2


def test_spread_counts_each_items_finest_nodes(demo: duckdb.DuckDBPyConnection) -> None:
    spread = dict(demo.execute("SELECT item_idx, nodes FROM " + contested.SPREAD).fetchall())
    widest = "SELECT item_id FROM d_items ORDER BY answers DESC, item_id LIMIT 50"
    items = [r[0] for r in demo.execute(widest).fetchall()]
    mass = soft_labels.item_node_mass(demo, ALL, items=items)
    finest = mass[mass["depth"] == soft_labels.max_depth(demo)].groupby("item_idx").size()
    assert finest.to_dict() == {i: spread[i] for i in finest.index} and finest.max() > 1


@pytest.mark.parametrize("sort", ["entropy", "gap", "posterior"])
def test_an_annotators_items_ranked_on_everyones_answers(demo: duckdb.DuckDBPyConnection, sort: str) -> None:
    """With ``everyone``, the items a busy annotator answered, in the order the unfiltered ranking puts them;
    without it, their own answers alone (which rarely split, so entropy 0 leads the list)."""
    who = demo.execute("SELECT annotator_id FROM d_answers GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()[0]
    rows = demo.execute("SELECT DISTINCT item_id FROM d_answers WHERE annotator_id = ?", [who]).fetchall()
    theirs = {r[0] for r in rows}
    everything = contested.contested_items(demo, Filters(), limit=100_000, sort=sort)
    expected = everything[everything["item_id"].isin(theirs)].head(50).reset_index(drop=True)
    got = contested.contested_items(demo, Filters(annotators=(who,)), limit=50, sort=sort, everyone=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    own = contested.contested_items(demo, Filters(annotators=(who,)), limit=50, sort="entropy")
    assert set(own["item_id"]) <= theirs and own["entropy"].max() < got["entropy"].min()
