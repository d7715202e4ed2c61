"""The outcome table's crowd view, label after escalation, spend and time span, from a compiled walk over each
item's answers, against the aggregations that state them in SQL."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from queries import soft_labels
from queries.connection import connect, memory
from queries.refresh import refresh
from tests.conftest import SMALL_TREE, load_answers, rows_apart

# Plurality of the initial answers with ties to the node first in tree order; the adjudication answer, else the
# latest escalated one; sums and extremes over all of an item's answers.
REFERENCE = """
WITH votes AS (
    SELECT item_idx, tree_version, value_idx, count(*) AS n FROM d_answers WHERE stage = 'initial' GROUP BY ALL
), crowd AS (
    SELECT b.item_idx, n.node_id AS crowd_node, b.crowd_share
    FROM (SELECT v.item_idx, any_value(v.tree_version) AS tree_version,
                 arg_max(v.value_idx, (v.n << 32) - n.ordinal) AS value_idx, max(v.n) / sum(v.n) AS crowd_share
          FROM votes v JOIN d_nodes n USING (tree_version, value_idx) GROUP BY v.item_idx) b
    JOIN d_nodes n USING (tree_version, value_idx)
), per_item AS (
    SELECT item_idx, count(*) FILTER (WHERE stage = 'initial') AS crowd_answers,
           coalesce(sum(cost) FILTER (WHERE stage = 'initial'), 0) AS crowd_cost,
           coalesce(sum(cost) FILTER (WHERE stage IN ('escalated', 'adjudication')), 0) AS expert_cost,
           coalesce(sum(cost), 0) AS total_cost, min(created_at) AS first_at, max(created_at) AS final_at
    FROM d_answers GROUP BY item_idx
), after AS (
    SELECT DISTINCT ON (item_idx) item_idx, node_id AS after_node, annotator_id AS expert_id
    FROM d_answers WHERE stage IN ('escalated', 'adjudication')
    ORDER BY item_idx, stage = 'adjudication' DESC, created_at DESC NULLS LAST
)
SELECT p.item_idx, c.crowd_node, round(c.crowd_share, 12) AS crowd_share, p.crowd_answers,
       round(p.crowd_cost, 9) AS crowd_cost, round(p.expert_cost, 9) AS expert_cost,
       round(p.total_cost, 9) AS total_cost, p.first_at, p.final_at, a.after_node, a.expert_id
FROM per_item p LEFT JOIN crowd c USING (item_idx) LEFT JOIN after a USING (item_idx)
"""
STORED = (
    "SELECT item_idx, crowd_node, round(crowd_share, 12) AS crowd_share, crowd_answers, round(crowd_cost, 9) AS "
    "crowd_cost, round(expert_cost, 9) AS expert_cost, round(total_cost, 9) AS total_cost, first_at, final_at, "
    "after_node, CASE WHEN after_node IS NOT NULL THEN expert_id END AS expert_id FROM d_item_outcomes"
)


def _differences(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    return rows_apart(con, STORED, REFERENCE)


@pytest.mark.parametrize("chunk", [soft_labels.CHUNK_ITEMS, 7])
def test_outcomes_equal_the_sql_aggregations_on_awkward_answers(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tied votes, items without initial or expert answers, adjudications beside escalated answers, NULL costs
    and timestamps, an item whose every cost and timestamp is missing; in one chunk of items and in several."""
    monkeypatch.setattr(soft_labels, "CHUNK_ITEMS", chunk)
    rng = np.random.default_rng(5)
    n = 500
    created = pd.Timestamp("2026-01-05") + pd.to_timedelta(rng.permutation(n) * 7, unit="min")
    answers = pd.DataFrame(
        {
            "item_id": rng.integers(0, 60, n).astype(str),
            "annotator_id": rng.choice(["u1", "u2", "u3", "u4", "e1", "e2"], n),
            "node_id": rng.choice(["a1", "a2", "a", "b"], n),
            "stage": rng.choice(["initial", "initial", "escalated", "adjudication", "review"], n),
            "created_at": pd.Series(created).where(rng.random(n) > 0.1),
            "cost": pd.Series(rng.choice([0.05, 0.1, 0.7], n)).where(rng.random(n) > 0.2),
        }
    )
    lone = answers["item_id"] == "9"
    answers.loc[lone, ["cost", "created_at"]] = None
    answers.loc[answers["item_id"] == "8", "stage"] = "escalated"  # no initial answer
    con = memory()
    load_answers(con, SMALL_TREE, answers)
    refresh(con)
    extra, missing, rows = _differences(con)
    assert (extra, missing) == (0, 0) and rows == answers["item_id"].nunique()
    kinds = con.execute(
        "SELECT count(*) FILTER (WHERE crowd_node IS NULL), count(*) FILTER (WHERE after_node IS NULL), "
        "count(*) FILTER (WHERE first_at IS NULL), count(*) FILTER (WHERE crowd_share < 0.5) FROM d_item_outcomes"
    ).fetchone()
    assert all(k > 0 for k in kinds), kinds


def test_outcomes_equal_the_sql_aggregations_on_the_demo(small_demo: Path) -> None:
    with connect(small_demo, read_only=True) as con:
        extra, missing, rows = _differences(con)
    assert (extra, missing) == (0, 0) and rows > 1000
