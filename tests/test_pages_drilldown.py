"""Drill-down between the Label tree, Disagreements and Annotators pages, and what Label tree says per branch.

Shown tables are compared with the query functions on the same warehouse. AppTest cannot select table
rows or chart points, so the mapping from a selection to new filters is called directly with the payload
Streamlit would send, built from what the page actually drew; links are clicked.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from dashboard.selection import selection_to_drill
from dashboard.views import disagreements, label_tree
from governance.roles import Role
from queries import contested, reliability, soft_labels
from queries.connection import connect
from queries.filters import Filters
from tests.conftest import cached_demo
from tests.test_app_pages import array, go, open_app, query, specs

pytestmark = pytest.mark.xdist_group("app_pages")
POSTERIOR = "Latent-truth posterior (Dawid-Skene)"


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page tests' demo warehouse (the same cached file), opened read-only."""
    return cached_demo(tmp_path_factory, 3000)


def _rows(*rows: int) -> SimpleNamespace:
    """A table selection as st.dataframe returns it."""
    return SimpleNamespace(selection=SimpleNamespace(rows=list(rows), columns=[]))


def _points(custom: list[Any]) -> dict[str, Any]:
    """A chart selection as st.plotly_chart returns it, for one point with this custom_data."""
    return {"selection": {"points": [{"customdata": custom}]}}


def _frame(at: Any, column: str) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if column in df.value.columns)


def _chart(at: Any, title: str) -> dict[str, Any]:
    return next(s for s in specs(at) if s["layout"].get("title", {}).get("text") == title)


def _captions(at: Any) -> list[str]:
    return [c.value for c in at.caption]


def test_label_tree_shows_branch_stats_priorities_and_gap_as_computed(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "label_tree")
    expected = query(demo_db, soft_labels.branch_stats, Filters())
    shown = _frame(at, "agree_branch_not_leaf")
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected, check_dtype=False)
    bars = _chart(at, "How answers agree at each branch")
    agree = next(t for t in bars["data"] if t["name"] == "Agree on the branch, not the leaf")
    assert [row[0] for row in agree["customdata"]] == expected["node_id"].tolist()
    assert array(agree["y"]) == pytest.approx(expected["agree_branch_not_leaf"].tolist())

    priorities = _frame(at, "score")
    pd.testing.assert_frame_equal(
        priorities.reset_index(drop=True), query(demo_db, soft_labels.labelling_priorities, Filters()),
        check_dtype=False,
    )
    assert priorities["score"].is_monotonic_decreasing

    levels = query(demo_db, soft_labels.level_stats, Filters())
    gap = _chart(at, "Mean gap between the top two nodes per level")
    for trace in gap["data"]:
        rows = levels[levels["source"] == trace["name"]]
        assert array(trace["y"]) == pytest.approx(rows["mean_gap"].tolist())
    assert {t["name"] for t in gap["data"]} == set(levels["source"])
    assert _frame(at, "mean_gap")["mean_gap"].tolist() == pytest.approx(levels["mean_gap"].tolist())

    at.sidebar.multiselect(key="f_tiers").set_value(["crowd-standard"]).run()
    narrowed = _frame(at, "agree_branch_not_leaf")
    crowd = query(demo_db, soft_labels.branch_stats, Filters(tiers=("crowd-standard",)))
    assert narrowed["items"].tolist() == crowd["items"].tolist()
    assert narrowed["items"].tolist() != shown["items"].tolist()


def test_priority_row_and_branch_bar_narrow_to_their_branch(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "label_tree")
    priorities = _frame(at, "score")
    before = Filters(segments=("en",))
    node = str(priorities["node_id"].iloc[1])
    assert label_tree.branch_view(_rows(1), priorities, before) == Filters(segments=("en",), branch=node)
    assert label_tree.branch_view(_rows(), priorities, before) is None
    assert label_tree.branch_view(None, priorities, before) is None
    # What the explorer then ranks: the items whose consensus lies under that branch.
    ranked = query(demo_db, contested.contested_items, Filters(branch=node), limit=50)
    with connect(demo_db, read_only=True) as con:
        lineage = dict(con.execute("SELECT item_id, consensus_lineage FROM d_items").fetchall())
    assert len(ranked) and all(node in lineage[i] for i in ranked["item_id"])

    bars = _chart(at, "How answers agree at each branch")
    custom = bars["data"][0]["customdata"][2]
    drill = selection_to_drill(_points(custom), "branch", Filters())
    assert drill.filters == Filters(branch=custom[0])


def test_agreement_chart_selects_a_branch_or_a_week(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "label_tree")
    hint = "Select a point to narrow the dashboard"
    at.selectbox(key="lt_agreement_by").set_value("Branch").run()
    assert any(c.startswith(hint + " to that branch") for c in _captions(at))
    point = _chart(at, "Agreement (alpha) by branch")["data"][0]["customdata"][3]
    dimension = label_tree.GROUP_DIMENSIONS[label_tree.GROUPINGS["Branch"]]
    assert selection_to_drill(_points(point), dimension, Filters()).filters == Filters(branch=point[0])

    at.selectbox(key="lt_agreement_by").set_value("Week").run()
    point = _chart(at, "Agreement (alpha) by week")["data"][0]["customdata"][0]
    week = date.fromisoformat(str(point[0])[:10])
    dimension = label_tree.GROUP_DIMENSIONS[label_tree.GROUPINGS["Week"]]
    drill = selection_to_drill(_points(point), dimension, Filters())
    assert drill.filters == Filters(start=week, end=week + timedelta(days=6))

    at.selectbox(key="lt_agreement_by").set_value("Tree level").run()
    assert not any(c.startswith(hint) for c in _captions(at))
    assert label_tree.GROUPINGS["Tree level"] not in label_tree.GROUP_DIMENSIONS


def test_item_answer_row_opens_its_annotator(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "disagreements")
    item = str(at.dataframe[0].value["item_id"].iloc[0])
    at.query_params["item"] = item
    at.run()
    answers = _frame(at, "reliability")
    who = str(answers["annotator_id"].iloc[1])
    before = Filters(segments=("en",))
    assert disagreements.annotator_view(_rows(1), answers, before) == Filters(segments=("en",), annotators=(who,))
    assert disagreements.annotator_view(_rows(), answers, before) is None

    # Those filters on the Annotators page show that annotator alone.
    at.session_state["labelgov_filters"] = Filters(annotators=(who,))
    at = go(at, "annotators")
    expected = query(demo_db, reliability.annotator_table, Filters(annotators=(who,)))
    assert at.dataframe[0].value["annotator_id"].tolist() == expected["annotator_id"].tolist() == [who]


def test_annotator_link_opens_their_items_with_a_caveat(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "disagreements")
    assert not any(c.startswith("Entropy and gap count only") for c in _captions(at))
    at = go(at, "annotators")
    at.selectbox(key="ann_pick").set_value("w-0001").run()
    at.button(key="ann_to_disagreements").click().run()
    assert not at.exception
    assert at.title[0].value == "Disagreements"
    assert at.query_params["annotators"] in ("w-0001", ["w-0001"])
    scope = Filters(annotators=("w-0001",))
    # By default their items are ranked on everyone's answers.
    ranked = at.dataframe[0].value
    disputed = query(demo_db, contested.contested_items, scope, limit=200, everyone=True)
    assert ranked["item_id"].tolist() == disputed["item_id"].tolist()
    assert not any(c.startswith("Entropy and gap count only") for c in _captions(at))

    # AppTest would rerun the page it was last sent to by go(), not the one the link switched to.
    at = go(at, "disagreements")
    at.radio(key="dis_scored_on").set_value("Only their answers").run()
    own = query(demo_db, contested.contested_items, scope, limit=200)
    assert at.dataframe[0].value["item_id"].tolist() == own["item_id"].tolist() != disputed["item_id"].tolist()
    assert any(c.startswith("Entropy and gap count only the answers of w-0001") for c in _captions(at))
    at.radio(key="dis_sort").set_value("Posterior (least certain truth)").run()
    by_posterior = query(demo_db, contested.contested_items, scope, limit=200, sort="posterior")
    assert at.dataframe[0].value["item_id"].tolist() == by_posterior["item_id"].tolist()
    assert not any(c.startswith("Entropy and gap count only") for c in _captions(at))


def test_posterior_caveat_names_only_the_active_answer_filters(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    caveat = label_tree.posterior_caveat
    assert caveat(Filters(), "posterior") is None
    assert caveat(Filters(branch="harassment", sources=("web",), segments=("en",)), "posterior") is None
    assert caveat(Filters(tiers=("expert",)), "annotations") is None
    text = caveat(Filters(start=date(2026, 1, 5), end=date(2026, 2, 1), tiers=("expert",), stages=("review",),
                          branch="harassment"), "posterior")
    assert text is not None and text.startswith("Filtered by Date range, Annotator tier and Stage:")

    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "label_tree")
    at.radio(key="lt_source").set_value(POSTERIOR).run()
    assert not any("in posterior mode" in c for c in _captions(at))
    at.sidebar.multiselect(key="f_tiers").set_value(["expert"]).run()
    assert any(c.startswith("Filtered by Annotator tier: in posterior mode") for c in _captions(at))
    at.radio(key="lt_source").set_value("Annotation mass").run()
    assert not any("in posterior mode" in c for c in _captions(at))
