"""The overview tiles, the tree volumes and the children's confusion, against pandas on the raw answers."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from itertools import product
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from queries import derived_base, overview, soft_labels, tree_view
from queries.connection import connect, memory
from queries.filters import Filters
from tests.conftest import TINY_TREE, load_answers

TOP = {"cat": "animal", "dog": "animal", "animal": "animal", "plant": "plant"}


@pytest.fixture(scope="module")
def world() -> tuple[object, pd.DataFrame]:
    rng = np.random.default_rng(3)
    rows = []
    first = pd.Timestamp("2026-01-05")
    for item in range(300):
        day = first + pd.Timedelta(days=int(rng.integers(0, 70)))
        for annotator in rng.choice(8, size=int(rng.integers(2, 5)), replace=False):
            rows.append({
                "item_id": f"i{item:03d}", "annotator_id": f"a{annotator}",
                "node_id": str(rng.choice(["cat", "dog", "plant", "animal"], p=[0.45, 0.3, 0.2, 0.05])),
                "created_at": day + pd.Timedelta(hours=int(rng.integers(0, 48))),
                "cost": float(rng.choice([0.05, 0.1])),
            })
    answers = pd.DataFrame(rows)
    con = memory()
    load_answers(con, TINY_TREE, answers)
    derived_base.build(con)
    return con, answers


def test_period_is_the_last_four_weeks_against_the_four_before(world: tuple[object, pd.DataFrame]) -> None:
    con, answers = world
    result = overview.overview(con, Filters())  # type: ignore[arg-type]
    last = answers["created_at"].max().date()
    assert result.period is not None
    assert (result.period.start, result.period.end) == (last - timedelta(days=27), last)
    assert result.period.previous_end == last - timedelta(days=28)
    tiles = {t.key: t for t in result.tiles}
    day = answers["created_at"].dt.date

    def numbers(start: date, end: date) -> tuple[int, int, float]:
        part = answers[(day >= start) & (day <= end)]
        return part["item_id"].nunique(), len(part), part["cost"].sum() / part["item_id"].nunique()

    items, n, cost = numbers(result.period.start, result.period.end)
    before = numbers(result.period.previous_start, result.period.previous_end)
    assert (tiles["items"].value, tiles["annotations"].value) == (items, n)
    assert (tiles["items"].previous, tiles["annotations"].previous) == before[:2]
    assert tiles["cost_per_item"].value == pytest.approx(cost)
    assert tiles["items"].delta == items - before[0]
    assert tiles["open_proposals"].value == 0 and tiles["open_proposals"].previous is None
    assert tiles["escalation_rate"].value is None  # no outcome table before a refresh


def test_an_explicit_range_is_compared_with_the_range_before_it(world: tuple[object, pd.DataFrame]) -> None:
    con, _ = world
    period = overview.period_of(con, Filters(start=date(2026, 2, 1), end=date(2026, 2, 10)))  # type: ignore[arg-type]
    assert period is not None
    assert (period.previous_start, period.previous_end) == (date(2026, 1, 22), date(2026, 1, 31))
    empty = overview.overview(con, Filters(annotators=("nobody",)))  # type: ignore[arg-type]
    assert empty.period is None and all(t.value is None for t in empty.tiles[:-1])


def test_weekly_trends_count_answers_and_items_per_week(world: tuple[object, pd.DataFrame]) -> None:
    con, answers = world
    weekly = overview.weekly_trends(con, Filters()).set_index("week")  # type: ignore[arg-type]
    week = answers["created_at"].dt.to_period("W-SUN").dt.start_time.dt.strftime("%Y-%m-%d")
    expected = answers.assign(week=week).groupby("week").agg(n=("item_id", "size"), items=("item_id", "nunique"))
    assert weekly["annotations"].to_dict() == expected["n"].to_dict()
    assert weekly["items"].to_dict() == expected["items"].to_dict()


def test_node_volumes_sum_each_items_share_of_answers(world: tuple[object, pd.DataFrame]) -> None:
    con, answers = world
    nodes = tree_view.node_volumes(con, Filters()).set_index("node_id")  # type: ignore[arg-type]
    top = answers.assign(top=answers["node_id"].map(TOP))
    share = top.groupby("item_id")["top"].value_counts(normalize=True).unstack(fill_value=0)
    assert nodes.loc["animal", "volume"] == pytest.approx(share["animal"].sum())
    assert nodes.loc["plant", "volume"] == pytest.approx(share["plant"].sum())
    # A shallow leaf (plant) stays in the deeper cut; a coarse answer (animal) does not reach it.
    deep = answers[answers["node_id"].isin(["cat", "dog", "plant"])]
    leaf = deep.groupby("item_id")["node_id"].value_counts(normalize=True).unstack(fill_value=0)
    assert nodes.loc["cat", "volume"] == pytest.approx(leaf["cat"].sum())
    below = leaf["cat"].sum() + leaf["dog"].sum()
    assert nodes.loc["animal", "own"] == pytest.approx(max(share["animal"].sum() - below, 0))
    touching = share["plant"][share["plant"] > 0]
    assert nodes.loc["plant", "ambiguity"] == pytest.approx((1 - touching).mean())


def test_children_confusion_counts_pairs_of_answers_on_one_item(world: tuple[object, pd.DataFrame]) -> None:
    con, answers = world
    got = tree_view.children_confusion(con, Filters(), None)  # type: ignore[arg-type]
    counts = answers.assign(top=answers["node_id"].map(TOP)).groupby(["item_id", "top"]).size().unstack(fill_value=0)
    for first, second in product(["animal", "plant"], repeat=2):
        a, b = counts[first], counts[second]
        expected = (a * (a - 1)).sum() if first == second else (a * b).sum()
        row = got[(got["first"] == first) & (got["second"] == second)]
        assert float(row["pairs"].iloc[0]) == expected
    assert got.groupby("first")["share"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    inner = tree_view.children_confusion(con, Filters(), "animal")  # type: ignore[arg-type]
    assert set(inner["first"]) == {"cat", "dog"}


def test_weekly_shares_split_each_week_among_the_children(world: tuple[object, pd.DataFrame]) -> None:
    con, answers = world
    shares = tree_view.weekly_shares(con, Filters(branch="animal"))  # type: ignore[arg-type]
    assert set(shares["node_id"]) == {"cat", "dog"}
    assert shares.groupby("week")["share"].sum().to_numpy() == pytest.approx(1.0)
    assert shares["answers"].sum() <= answers["node_id"].isin(["cat", "dog"]).sum()


# Tables refresh keeps so that pages skip the answers; dropping them makes the same functions compute live.
STORED_PAGE_TABLES = ("d_overview_tiles", "d_overview_cells", "d_tree_confusion")


def _page_results(con: duckdb.DuckDBPyConnection, inner: list[str]) -> dict[str, object]:
    out: dict[str, object] = {
        "overview": overview.overview(con, Filters()).model_dump(),
        "weekly": overview.weekly_trends(con, Filters()),
        "confusion:top": tree_view.children_confusion(con, Filters(), None),
    }
    for node in inner:
        out["confusion:" + node] = tree_view.children_confusion(con, Filters(), node)
    return out


def _rounded(value: object) -> object:
    """Sums taken in another order differ in the last digits; nine significant digits are what a page shows and more."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_stored_page_results_equal_the_live_computation(small_demo: Path, tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    shutil.copy(small_demo, db)
    with connect(db) as con:
        assert all(soft_labels.table_exists(con, t) for t in STORED_PAGE_TABLES)
        inner = [r[0] for r in con.execute("SELECT node_id FROM d_nodes WHERE NOT is_leaf ORDER BY ordinal").fetchall()]
        stored = _page_results(con, inner)
        for table in STORED_PAGE_TABLES:
            con.execute("DROP TABLE " + table)
        live = _page_results(con, inner)
    assert _rounded(stored["overview"]) == _rounded(live["overview"])
    assert stored["overview"]["period"] is not None and stored["overview"]["tiles"][0]["value"] > 0
    for key, frame in stored.items():
        if isinstance(frame, pd.DataFrame):
            assert not frame.empty or key.startswith("confusion:")
            pd.testing.assert_frame_equal(frame, live[key], obj=key)
    assert not stored["confusion:top"].empty and any(not stored["confusion:" + n].empty for n in inner)


def test_trends_and_tiles_from_the_stored_cells_equal_the_live_computation(small_demo: Path, tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    shutil.copy(small_demo, db)
    with connect(db) as con:
        busiest = "SELECT source, segment FROM d_items GROUP BY ALL ORDER BY count(*) DESC, 1, 2"
        source, segment = con.execute(busiest).fetchone()
        inner = "SELECT node_id FROM d_nodes WHERE depth = 1 AND NOT is_leaf ORDER BY ordinal"
        branch = con.execute(inner).fetchone()[0]
        tier = con.execute("SELECT tier FROM d_answers WHERE tier <> 'expert' GROUP BY 1 ORDER BY 1").fetchone()[0]
        last = con.execute("SELECT max(week)::DATE FROM d_answers").fetchone()[0]
        weeks = {"start": last - timedelta(days=14), "end": last + timedelta(days=6)}
        answered = [
            Filters(sources=(source,)),
            Filters(sources=(source, "no-such-source"), segments=(segment,)),
            Filters(branch=branch),
            Filters(tiers=(tier,)),
            Filters(stages=("escalated",)),
            Filters(tiers=(tier,), stages=("initial",), branch=branch),
            Filters(**weeks, sources=(source,)),
        ]
        # Filters the cells cannot answer fall back to the answers, with the same result.
        live_only = [Filters(start=last + timedelta(days=1)), Filters(tiers=(tier, "expert")), Filters(tree_version=1)]
        assert all(f.cell_where() is not None for f in answered)
        assert all(f.cell_where() is None for f in live_only)
        # The overview finds its period's newest answer through the cells too, under an open end or an end.
        tiles = [*answered, Filters(end=last + timedelta(days=6), branch=branch), Filters(sources=("no-such-source",))]
        stored = [overview.weekly_trends(con, f) for f in [*answered, *live_only]]
        stored_tiles = [overview.overview(con, f).model_dump() for f in tiles]
        con.execute("DROP TABLE " + overview.CELLS_TABLE)
        live = [overview.weekly_trends(con, f) for f in [*answered, *live_only]]
        live_tiles = [overview.overview(con, f).model_dump() for f in tiles]
    for f, got, expected in zip([*answered, *live_only], stored, live, strict=True):
        assert not expected.empty, f
        pd.testing.assert_frame_equal(got, expected, obj=str(f.to_query_params()))
    assert [_rounded(t) for t in stored_tiles] == [_rounded(t) for t in live_tiles]
    assert all(t["period"] is not None for t in stored_tiles[:-1]) and stored_tiles[-1]["period"] is None
