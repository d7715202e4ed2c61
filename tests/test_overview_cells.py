"""The overview's stored cells, counted in a compiled walk, against the GROUPING SETS query that states them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from queries.connection import connect, memory
from queries.refresh import refresh
from tests.conftest import SMALL_TREE, load_answers, rows_apart

# The cells as a query says them: the answers of each (week, item), of each (week, item, tier), and so on, are one
# row of ``w``; a cell counts its rows as items. Source and segment are the item's, as the live filters read them.
REFERENCE = """
WITH w AS (SELECT a.week, a.item_idx, a.source, a.segment, a.tier, a.stage,
                  GROUPING(a.tier) = 0 AS by_tier, GROUPING(a.stage) = 0 AS by_stage, count(*) AS n, sum(a.cost) AS cost
           FROM d_answers a WHERE a.week IS NOT NULL
           GROUP BY GROUPING SETS ((a.week, a.item_idx, a.source, a.segment),
                                   (a.week, a.item_idx, a.source, a.segment, a.tier),
                                   (a.week, a.item_idx, a.source, a.segment, a.stage),
                                   (a.week, a.item_idx, a.source, a.segment, a.tier, a.stage))),
esc AS (SELECT DISTINCT x.item_idx FROM escalations e JOIN d_item_index x USING (item_id))
SELECT w.week, i.tree_version, w.source, w.segment, i.consensus_node, w.tier, w.stage, w.by_tier, w.by_stage,
       count(*) AS items, sum(w.n) AS annotations, sum(w.cost) AS cost, sum(d.ds_p) AS ds_sum, count(d.ds_p) AS ds_n,
       count(esc.item_idx) AS escalated
FROM w LEFT JOIN (SELECT item_idx, tree_version, consensus_node FROM d_items) i USING (item_idx)
LEFT JOIN (SELECT item_idx, ds_p FROM d_ds_items) d USING (item_idx) LEFT JOIN esc USING (item_idx) GROUP BY ALL
"""
COLUMNS = (
    "week, tree_version, source, segment, consensus_node, tier, stage, by_tier, by_stage, items, annotations, "
    "round(cost, 9) AS cost, round(ds_sum, 9) AS ds_sum, ds_n, escalated"
)


def _differences(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    return rows_apart(
        con, "SELECT " + COLUMNS + " FROM d_overview_cells", "SELECT " + COLUMNS + " FROM (" + REFERENCE + ")"
    )


def test_cells_equal_the_grouping_sets_on_awkward_answers() -> None:
    """Several tiers and stages within one item's week, NULL tiers, NULL and missing costs, undated answers, items
    of two sources and of no source, an escalated item, and weeks an item spans."""
    rng = np.random.default_rng(3)
    n = 400
    monday = pd.Timestamp("2026-01-05")
    created = monday + pd.to_timedelta(rng.integers(0, 35 * 24, n), unit="h")
    answers = pd.DataFrame(
        {
            "item_id": rng.integers(0, 40, n).astype(str),
            "annotator_id": rng.choice(["u1", "u2", "u3", "u4", "u5"], n),
            "node_id": rng.choice(["a1", "a2", "a", "b"], n),
            "stage": rng.choice(["initial", "escalated", "adjudication"], n),
            "created_at": pd.Series(created).where(rng.random(n) > 0.05),
            "cost": pd.Series(rng.choice([0.05, 0.1, 0.7], n)).where(rng.random(n) > 0.2),
        }
    )
    answers.loc[answers["item_id"] == "7", "cost"] = None  # one item's spend stated nowhere
    con = memory()
    load_answers(con, SMALL_TREE, answers)
    con.execute("UPDATE annotators SET tier = CASE annotator_id WHEN 'u1' THEN 'gold' WHEN 'u2' THEN 'silver' "
                "WHEN 'u3' THEN 'gold' ELSE NULL END")
    con.execute("UPDATE items SET source = CASE WHEN item_id < '2' THEN 'web' WHEN item_id < '5' THEN 'app' END, "
                "segment = CASE WHEN item_id < '3' THEN 's1' END")
    con.execute("INSERT INTO escalations VALUES ('3', 'low_agreement', 'x', TIMESTAMP '2026-01-06', NULL, 1)")
    refresh(con)
    extra, missing, rows = _differences(con)
    assert (extra, missing) == (0, 0)
    kinds = con.execute(
        "SELECT count(*) FILTER (WHERE tier IS NULL AND by_tier), count(*) FILTER (WHERE cost IS NULL), "
        "count(*) FILTER (WHERE escalated > 0), count(*) FILTER (WHERE source IS NULL), "
        "count(*) FILTER (WHERE by_tier AND by_stage AND items > 0) FROM d_overview_cells"
    ).fetchone()
    assert rows > 50 and all(k > 0 for k in kinds), kinds


def test_cells_equal_the_grouping_sets_on_the_demo(small_demo: Path) -> None:
    with connect(small_demo, read_only=True) as con:
        extra, missing, rows = _differences(con)
    assert (extra, missing) == (0, 0) and rows > 1000
