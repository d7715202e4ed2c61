"""The base derived tables and staleness bookkeeping."""

from __future__ import annotations

import pandas as pd

from queries import cost_quality, reliability
from queries.connection import bulk_settings, bump_data_version, cache_key, memory, transaction
from queries.demo import simulate, write_simulation
from queries.demo_config import demo_config
from queries.filters import Filters
from queries.refresh import STEPS, RefreshContext, is_stale, refresh

TREE = """
taxonomy: t
nodes:
  a: {children: {a1: {}, a2: {}}}
  b: {}
"""


def _con():
    from tests.conftest import load_answers

    con = memory()
    answers = pd.DataFrame(
        {
            "item_id": ["i1", "i1", "i1", "i2", "i2", "i3"],
            "annotator_id": ["u1", "u2", "u3", "u1", "u2", "u1"],
            "node_id": ["a1", "a1", "a2", "b", "a", "a2"],
        }
    )
    load_answers(con, TREE, answers)
    return con


def test_refresh_builds_lineage_and_consensus_and_clears_staleness() -> None:
    con = _con()
    assert is_stale(con)
    report = refresh(con)
    assert report.full and not is_stale(con)
    rows = {
        (item, who): lineage
        for item, who, lineage in con.execute(
            "SELECT a.item_id, a.annotator_id, n.lineage FROM d_answers a JOIN d_nodes n USING (tree_version, node_id)"
        ).fetchall()
    }
    assert rows["i1", "u1"] == ["a", "a1"] and rows["i2", "u1"] == ["b"]
    consensus = dict(con.execute("SELECT item_id, consensus_node FROM d_items").fetchall())
    # i1: a1 twice beats a2; i2: a tie between b and a goes to the node first in tree order (a).
    assert consensus == {"i1": "a1", "i2": "a", "i3": "a2"}
    key = cache_key(con)
    bump_data_version(con)
    assert is_stale(con) and cache_key(con) != key


def test_branch_filter_selects_items_by_consensus_subtree() -> None:
    con = _con()
    refresh(con)
    clause, params = Filters(branch="a").where("a")
    items = {r[0] for r in con.execute("SELECT DISTINCT item_id FROM d_answers a WHERE " + clause, params).fetchall()}
    assert items == {"i1", "i2", "i3"}
    clause, params = Filters(branch="a1", annotators=("u1",)).where("a")
    got = con.execute("SELECT item_id, annotator_id FROM d_answers a WHERE " + clause, params).fetchall()
    assert got == [("i1", "u1")]


def test_refresh_with_nothing_new_keeps_the_tables_and_a_new_write_refreshes_again() -> None:
    con = _con()
    first = refresh(con)
    key = cache_key(con)
    again = refresh(con)
    assert again.up_to_date and again.steps == [] and again.data_version == first.data_version
    assert cache_key(con) == key and not is_stale(con)
    bump_data_version(con)
    after = refresh(con)
    assert not after.up_to_date and after.steps and not is_stale(con) and cache_key(con) != key
    assert refresh(con, full=True).steps, "--full recomputes even when nothing is new"


def test_the_steps_beside_the_model_fit_write_what_they_would_after_it() -> None:
    """Refresh fits Dawid-Skene on a thread from its "reliability" step to "reliability_tables", and the steps
    between run meanwhile, so none of them may read the model's tables. On a first refresh those tables do not
    exist yet: a step that read them would fail, or fall back and write other numbers than when every step
    runs after the fit, as here on a copy of the same warehouse. The cost-quality replay's fits run likewise
    beside the soft labels; here they finish in their own step."""
    beside, after = memory(), memory()
    for con in (beside, after):
        with transaction(con):
            write_simulation(con, simulate(demo_config("1500", 5, True)), "test")
    names = [name for name, _ in STEPS]
    between = names[names.index("reliability") + 1 : names.index("reliability_tables")]
    assert between, "the fit runs beside no step"
    refresh(beside)
    context = RefreshContext(full=True, since_batch=0, touched_items=0)
    with bulk_settings(after), transaction(after):
        for name, step in STEPS:
            if name == "reliability":
                # The model's tables name each item's consensus, so the items are built first here.
                dict(STEPS)["items"](after, context)
                reliability.refresh_step(after, context)
            elif name == "cost_quality":
                cost_quality.refresh_step(after, context)
            elif name not in ("items", "reliability_tables", "cost_quality_tables"):
                step(after, context)
    listed = beside.execute("SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, 'd_')").fetchall()
    tables = [row[0] for row in listed]
    assert "d_ds_items" in tables and "d_item_outcomes" in tables and "d_dq_annotators" in tables
    for table in tables:
        ours, theirs = (c.execute(f"SELECT * FROM {table} ORDER BY ALL").df() for c in (beside, after))
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-9, obj=table)
