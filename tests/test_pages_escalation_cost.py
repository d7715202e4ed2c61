"""Escalation and Cost versus quality pages: the service level, filters that only choose items, and cost per
correct label per annotator, checked against the query functions and an independent replay."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.components import fmt
from dashboard.views.cost_quality import annotator_target, filter_notes
from dashboard.views.escalation import item_scope_note
from governance.roles import Role
from queries import cost_quality, escalation
from queries.connection import connect
from queries.cost_quality import redundancy_curve
from queries.filters import Filters
from tests.test_app_pages import demo_db, go, metrics, open_app, query, specs

__all__ = ["demo_db"]

TRUSTED = Filters(tiers=("crowd-trusted",))


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_resolved_tile_follows_the_service_level_slider(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "escalation")
    default = query(demo_db, escalation.escalation_summary, Filters(), sla_hours=48.0)
    assert metrics(at)["Resolved within 48 h"] == fmt(default.share_within_sla, "share")
    at.slider(key="esc_sla").set_value(8).run()
    shown = metrics(at)
    tight = query(demo_db, escalation.escalation_summary, Filters(), sla_hours=8.0)
    assert "Resolved within 48 h" not in shown
    assert shown["Resolved within 8 h"] == fmt(tight.share_within_sla, "share")
    assert tight.share_within_sla != default.share_within_sla
    # The tile and the time-to-label table read the same level.
    times = query(demo_db, escalation.time_to_label, Filters(), sla_hours=8.0)
    table = _table_like(at, times.columns.tolist())
    overall = table.loc[table["trigger"] == "all", "share_within_sla"]
    assert overall.item() == pytest.approx(tight.share_within_sla)


def _table_like(at: AppTest, columns: list[str]) -> pd.DataFrame:
    """The first table on the page with exactly these columns."""
    return next(d.value for d in at.dataframe if d.value.columns.tolist() == columns)


def test_tier_filter_replays_only_its_answers_on_cost_versus_quality(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "cost_quality")
    assert not any("choose" in c for c in captions(at))
    everyone = query(demo_db, redundancy_curve, Filters())
    at.sidebar.multiselect(key="f_tiers").set_value(["crowd-trusted"]).run()
    assert not at.exception
    # By default the tier filter only chooses items (all of them have trusted answers here), and says so.
    assert any("only choose items here" in c for c in captions(at))
    chosen = query(demo_db, redundancy_curve, TRUSTED)
    pd.testing.assert_frame_equal(_table_like(at, chosen.columns.tolist()).reset_index(drop=True), chosen,
                                  check_dtype=False)
    at.toggle(key="cq_replay_answers").set_value(True).run()
    assert not at.exception
    trusted = query(demo_db, redundancy_curve, TRUSTED, replay_answers=True)
    shown = _table_like(at, trusted.columns.tolist())
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), trusted, check_dtype=False)
    merged = everyone.merge(trusted, on=["k", "method", "branch"], suffixes=("", "_trusted"))
    assert not np.allclose(merged["cost_per_item"], merged["cost_per_item_trusted"])

    # Independently: once k covers every trusted first-pass answer of an item, the spend per item is the
    # mean over scored gold items of all their trusted first-pass answers.
    with connect(demo_db, read_only=True) as con:
        pool = con.execute(
            "SELECT a.item_idx, count(*) AS n, sum(coalesce(a.cost, 0)) AS cost FROM d_answers a "
            "JOIN d_gold g USING (item_idx) WHERE a.tier = 'crowd-trusted' AND a.stage = 'initial' GROUP BY ALL"
        ).df()
    top = int(pool["n"].max())
    assert top <= cost_quality.MAX_K
    last = trusted[(trusted["branch"] == "all") & (trusted["k"] == top)]
    assert set(last["n_items"]) == {len(pool)}
    assert last["cost_per_item"].to_numpy() == pytest.approx(pool["cost"].mean())

    # Today's point is a whole-item outcome: the page says the tier filter only chooses items there.
    notes = captions(at)
    assert any(n.startswith("Annotator tier choose the answers replayed") for n in notes), notes
    frontier = query(demo_db, cost_quality.pareto_frontier, TRUSTED, replay_answers=True)
    today = frontier[frontier["is_current"]].iloc[0]
    assert metrics(at)["Today: gold items scored"] == fmt(float(today["n_gold"]), "count")
    assert "Accuracy as labels per item grow" in [s["layout"]["title"]["text"] for s in specs(at)]


def test_escalation_page_says_which_filters_only_choose_items(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "escalation")
    assert not any("only choose items" in c for c in captions(at))
    at.sidebar.selectbox(key="f_branch").set_value("harassment").run()
    assert not any("only choose items" in c for c in captions(at))
    at.sidebar.multiselect(key="f_tiers").set_value(["crowd-trusted"]).run()
    f = Filters(branch="harassment", tiers=("crowd-trusted",))
    summary = query(demo_db, escalation.escalation_summary, f)
    assert item_scope_note(f, summary.items) in captions(at)
    assert item_scope_note(f, summary.items).startswith("Annotator tier only choose items")
    assert metrics(at)["Escalation rate"] == fmt(summary.escalation_rate, "share")


def test_filter_notes_name_the_active_filters() -> None:
    for replay in (False, True):
        assert filter_notes(Filters(), replay) == [] and filter_notes(Filters(branch="a", sources=("s",)), replay) == []
    assert item_scope_note(Filters(sources=("s",)), 10) is None
    mixed = Filters(tiers=("t",), stages=("initial",), start="2026-01-01", tree_version=2)
    pool, dated = filter_notes(mixed, True)
    assert pool.startswith("Annotator tier and Stage choose the answers")
    assert dated.startswith("Date range and Tree version only choose items")
    chosen, _ = filter_notes(mixed, False)
    assert chosen.startswith("Annotator tier and Stage only choose items here")
    note = item_scope_note(Filters(annotators=("u",), end="2026-01-01"), 1234)
    assert note is not None and note.startswith("Date range and Annotators only choose items") and "1,234" in note


def test_cost_per_correct_by_annotator_table_and_row_drill(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "cost_quality")
    people = query(demo_db, cost_quality.cost_per_correct, Filters(), by="annotator")
    tiers = query(demo_db, cost_quality.cost_per_correct, Filters(), by="tier")
    by_tier, by_annotator = (d.value for d in at.dataframe if d.value.columns.tolist() == people.columns.tolist())
    pd.testing.assert_frame_equal(by_tier.reset_index(drop=True), tiers, check_dtype=False)
    pd.testing.assert_frame_equal(by_annotator.reset_index(drop=True), people, check_dtype=False)
    pick = SimpleNamespace(selection=SimpleNamespace(rows=[2], columns=[]))
    chosen = annotator_target(pick, people, TRUSTED)
    assert chosen is not None
    who, target = chosen
    assert who == people["name"].iloc[2]
    assert target == Filters(tiers=("crowd-trusted",), annotators=(who,))
    assert annotator_target(SimpleNamespace(selection=SimpleNamespace(rows=[])), people, TRUSTED) is None
