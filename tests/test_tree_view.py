"""The tree page's stored cells against the live computation from the answers, under every filter kind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from queries import tree_view
from queries.connection import connect
from queries.filters import Filters

CELL_TABLES = (tree_view.VOLUME_CELLS, tree_view.CONFUSION_TABLE)


@pytest.fixture(scope="module")
def demo(small_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    db = tmp_path_factory.mktemp("tree") / "demo.duckdb"
    shutil.copy(small_demo, db)
    with connect(db) as con:
        yield con


def _filters(con: duckdb.DuckDBPyConnection) -> tuple[list[Filters], list[Filters]]:
    """Filters the cells answer (each item-level kind, one tier, and mixes), and filters they leave to the answers."""
    source, segment = con.execute(
        "SELECT source, segment FROM d_items GROUP BY ALL ORDER BY count(*) DESC, 1, 2"
    ).fetchone()
    branch = con.execute("SELECT node_id FROM d_nodes WHERE depth = 1 AND NOT is_leaf ORDER BY ordinal").fetchone()[0]
    found = con.execute("SELECT DISTINCT tier FROM d_answers WHERE tier IS NOT NULL ORDER BY 1").fetchall()
    tiers = [r[0] for r in found]
    last = con.execute("SELECT max(week)::DATE FROM d_answers").fetchone()[0]
    annotator = con.execute("SELECT annotator_id FROM d_answers GROUP BY 1 ORDER BY count(*) DESC, 1").fetchone()[0]
    cells = [
        Filters(),
        Filters(branch=branch),
        Filters(sources=(source, "no-such-source")),
        Filters(segments=(segment,), sources=(source,)),
        *(Filters(tiers=(t,)) for t in tiers),
        Filters(tiers=(tiers[0],), branch=branch, sources=(source,)),
        Filters(tiers=("no-such-tier",)),
    ]
    live = [
        Filters(start=last, end=last + timedelta(days=6)),
        Filters(tiers=tuple(tiers[:2])),
        Filters(annotators=(annotator,)),
        Filters(stages=("initial",), branch=branch),
        Filters(tree_version=1),
    ]
    return cells, live


def _pages(con: duckdb.DuckDBPyConnection, filters: list[Filters], parents: list[str | None]) -> list[pd.DataFrame]:
    out = []
    for f in filters:
        out.append(tree_view.node_volumes(con, f))
        out.extend(tree_view.children_confusion(con, f, parent) for parent in parents)
    return out


def test_cells_answer_item_filters_and_one_tier_as_the_answers_do(demo: duckdb.DuckDBPyConnection) -> None:
    cells, live = _filters(demo)
    assert all(tree_view.cell_where(f) is not None for f in cells)
    assert all(tree_view.cell_where(f) is None for f in live)
    parents: list[str | None] = [
        None, *(r[0] for r in demo.execute("SELECT node_id FROM d_nodes WHERE NOT is_leaf ORDER BY ordinal").fetchall())
    ]
    stored = _pages(demo, [*cells, *live], parents)
    demo.execute("BEGIN")
    for table in CELL_TABLES:
        demo.execute("DROP TABLE " + table)
    try:
        computed = _pages(demo, [*cells, *live], parents)
    finally:
        demo.execute("ROLLBACK")
    assert sum(not frame.empty for frame in stored) > len(stored) // 2
    for got, expected in zip(stored, computed, strict=True):
        # Sums taken in another order differ in the last digits only (and ``own`` subtracts two such sums).
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-9)


def test_volume_cells_count_each_tier_apart(demo: duckdb.DuckDBPyConnection) -> None:
    """An item with answers of two tiers is one item in each tier's cells, and one item over all tiers."""
    per_tier = demo.execute(
        "SELECT sum(items) FROM " + tree_view.VOLUME_CELLS + " WHERE by_tier AND depth = 1"
    ).fetchone()[0]
    pairs = demo.execute(
        "SELECT count(*) FROM (SELECT DISTINCT a.item_idx, a.tier, n.lineage[1] FROM d_answers a "
        "JOIN d_nodes n USING (tree_version, node_id) WHERE a.tier IS NOT NULL)"
    ).fetchone()[0]
    assert per_tier == pairs
