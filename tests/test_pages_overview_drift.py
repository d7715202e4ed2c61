"""Overview and Drift pages: accuracy on gold, the data-quality tables, where alerts lead, and the drift views
of the model, the annotators and the reference window."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.components import fmt
from dashboard.views import drift as drift_page
from dashboard.views import overview as overview_page
from governance.roles import Role
from queries import data_quality, drift, hierarchy_accuracy
from queries.connection import connect
from queries.filters import Filters
from tests.conftest import cached_demo
from tests.test_app_pages import array, go, open_app, query, specs, titles

pytestmark = pytest.mark.xdist_group("app_pages")
NOTHING = {"f_stages": ["escalated"], "f_tiers": ["crowd-standard"]}  # no crowd answer is at the escalated stage


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cached demo warehouse as tests/test_app_pages.py (opened read-only)."""
    return cached_demo(tmp_path_factory, 3000)


def _narrow_to_nothing(at: AppTest) -> AppTest:
    for key, value in NOTHING.items():
        at.sidebar.multiselect(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _spec(at: AppTest, title: str) -> dict:
    return next(s for s in specs(at) if s["layout"]["title"]["text"] == title)


def _said(at: AppTest) -> str:
    return " ".join(m.value for m in [*at.info, *at.caption, *at.success, *at.warning])


# --- where alerts lead (pure) ---------------------------------------------------------------------------

BRANCHES = {"harassment", "hate", "harassment_targeted"}
PARENTS = {"harassment_doxxing": "harassment_targeted", "harassment_targeted": "harassment", "harassment": "(all)",
           "safe": "(all)"}


def test_an_annotator_alert_opens_the_annotators_page_narrowed_to_that_annotator() -> None:
    before = Filters(sources=("web",), branch="hate")
    link = drift_page.alert_link("w-0001", "annotator_agreement", before, BRANCHES, PARENTS)
    assert link.page == "annotators"
    assert link.label == "Look at annotator w-0001"
    assert link.filters.annotators == ("w-0001",)
    assert link.filters.sources == ("web",) and link.filters.branch == "hate"


@pytest.mark.parametrize("metric", ["label_js", "agreement", "confidence", "model_disagreement", "label_share"])
def test_a_branch_alert_opens_drift_in_that_branch(metric: str) -> None:
    link = drift_page.alert_link("harassment_targeted", metric, Filters(sources=("web",)), BRANCHES, PARENTS)
    assert (link.page, link.label) == ("drift", "Open drift in harassment_targeted")
    assert link.filters == Filters(sources=("web",), branch="harassment_targeted")


def test_a_leaf_share_alert_opens_its_nearest_branch_the_sidebar_offers() -> None:
    link = drift_page.alert_link("harassment_doxxing", "label_share", Filters(), BRANCHES, PARENTS)
    assert link.filters.branch == "harassment_targeted" and "harassment_doxxing" in link.label
    top_leaf = drift_page.alert_link("safe", "label_share", Filters(branch="hate"), BRANCHES, PARENTS)
    assert top_leaf.page == "drift" and top_leaf.filters.branch is None


def test_every_link_keeps_filters_the_sidebar_accepts() -> None:
    for metric in drift.ALERT_SIZE:
        for subject in ["w-0001", "harassment_doxxing", "safe", "hate"]:
            link = drift_page.alert_link(subject, metric, Filters(), BRANCHES, PARENTS)
            assert link.filters.branch is None or link.filters.branch in BRANCHES
            Filters.model_validate(link.filters.model_dump())


def test_too_fast_annotators_link_narrows_to_exactly_the_flagged(demo_db: Path) -> None:
    fast = query(demo_db, data_quality.too_fast_annotators, Filters())
    assert not fast.empty, "the demo plants fast annotators"
    narrowed = overview_page.flagged_annotators(fast, Filters(sources=("app",)))
    assert set(narrowed.annotators) == set(fast["annotator_id"]) and narrowed.sources == ("app",)


# --- small pure helpers -----------------------------------------------------------------------------------

def test_alert_sizes_are_shown_against_their_own_threshold() -> None:
    alerts = pd.DataFrame({"branch": ["hate", "w-1"], "metric": ["label_js", "annotator_agreement"],
                           "size": [0.25, 0.3]})
    out = drift_page.relative_sizes(alerts)
    assert out["relative"].tolist() == pytest.approx([0.25 / drift.ALERT_SIZE["label_js"],
                                                      0.3 / drift.ALERT_SIZE["annotator_agreement"]])
    assert out["threshold"].tolist() == [drift.ALERT_SIZE["label_js"], drift.ALERT_SIZE["annotator_agreement"]]
    assert out["measures"].notna().all()
    assert set(drift_page.SIZE_MEANING) == set(drift.ALERT_SIZE)


def test_reference_window_is_the_first_weeks_of_the_filtered_answers(demo_db: Path) -> None:
    for f in (Filters(), Filters(start=date(2026, 2, 16))):
        report = query(demo_db, drift.drift_report, f)
        with connect(demo_db, read_only=True) as con:
            where, params = f.where("a")
            first = con.execute("SELECT min(a.week) FROM d_answers a WHERE " + where, params).fetchone()[0]
        start, end = report.reference
        assert start == pd.Timestamp(first).date()
        assert (end - start).days + 1 == 7 * drift.REFERENCE_WEEKS


def test_reference_window_is_none_without_compared_weeks(demo_db: Path) -> None:
    report = query(demo_db, drift.drift_report, Filters(start=date(2026, 2, 2), end=date(2026, 2, 10)))
    assert report.reference is None


def test_shallowest_branches_and_default_annotators() -> None:
    depths = {"a": 1, "b": 1, "a_x": 2, "a_y": 2}
    assert drift_page.shallowest(["a", "a_x", "b"], depths) == ["a", "b"]
    assert drift_page.shallowest(["a_x", "a_y"], depths) == ["a_x", "a_y"]
    assert drift_page.shallowest(["old"], depths) == ["old"]
    people = pd.DataFrame({"annotator_id": ["p", "p", "q", "r"], "change": [0.1, -0.3, -0.1, 0.0]})
    no_alerts = pd.DataFrame({"branch": ["hate"], "metric": ["agreement"]})
    assert drift_page.default_annotators(people, no_alerts, limit=2) == ["p", "q"]
    alerting = pd.DataFrame({"branch": ["r"], "metric": ["annotator_agreement"]})
    assert drift_page.default_annotators(people, alerting) == ["r"]


# --- Overview -----------------------------------------------------------------------------------------------

def test_overview_shows_accuracy_on_gold_and_hierarchical_accuracy(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(demo_db, Role.ANALYST, monkeypatch)
    scores = query(demo_db, hierarchy_accuracy.hierarchical_accuracy, Filters())
    shown = {m.label: m for m in at.metric}
    for method, name in overview_page.CONSENSUS.items():
        row = scores[scores["method"] == method].iloc[0]
        tile = shown[f"{name} on gold"]
        assert tile.value == fmt(float(row["exact"]), "share")
        assert f"{int(row['n']):,} gold items" in tile.proto.help
    assert "not accuracy measured on gold" in shown["Estimated accuracy"].proto.help

    table = next(d.value for d in at.dataframe if "mean_tree_distance" in d.value.columns)
    pd.testing.assert_frame_equal(table.reset_index(drop=True), scores, check_dtype=False)
    fig = _spec(at, "Accuracy on gold per tree level and method")
    assert [t["name"] for t in fig["data"]] == scores["method"].tolist()
    levels = [c for c in scores.columns if c.startswith("level_")]
    for trace, (_, row) in zip(fig["data"], scores.iterrows(), strict=True):
        assert array(trace["y"]) == pytest.approx(row[levels].astype(float).tolist())
    assert fig["layout"]["yaxis"]["title"]["text"] == "Accuracy (share of gold items)"


def test_overview_data_quality_tables_equal_the_checks(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(demo_db, Role.ANALYST, monkeypatch)
    picker = at.selectbox(key="ov_dq_pick")
    assert picker.value == overview_page.NO_CHECK
    assert picker.options == [overview_page.NO_CHECK, *(c.title for c in overview_page.CHECK_TABLES)]
    for check in overview_page.CHECK_TABLES:
        at.selectbox(key="ov_dq_pick").set_value(check.title).run()
        expected = query(demo_db, check.query, Filters())
        shown = next(d.value for d in at.dataframe if list(d.value.columns) == list(expected.columns))
        assert len(shown) == len(expected), check.name
        scalar = [c for c in expected.columns if not expected[c].map(lambda v: hasattr(v, "__len__")
                                                                     and not isinstance(v, str)).any()]
        pd.testing.assert_frame_equal(shown[scalar].reset_index(drop=True), expected[scalar], check_dtype=False)
    divergence = query(demo_db, data_quality.source_divergence, Filters())
    assert divergence["flagged"].any(), "the demo plants a diverging source"
    assert not any("sources diverge" in b.label for b in at.button), "divergence is shown here, not on Drift"

    fast = query(demo_db, data_quality.too_fast_annotators, Filters())
    at.selectbox(key="ov_dq_pick").set_value("Too-fast annotators").run()
    next(b for b in at.button if b.label == "Look at the too-fast annotators").click().run()
    assert at.title[0].value == "Annotators"
    assert set(at.dataframe[0].value["annotator_id"]) == set(fast["annotator_id"])


def test_overview_alert_buttons_lead_where_the_alert_is(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(demo_db, Role.ANALYST, monkeypatch)
    alerts = query(demo_db, drift.drift_alerts, Filters(), limit=overview_page.ALERT_LINKS)
    person = alerts[alerts["metric"] == "annotator_agreement"]
    assert not person.empty, "the demo plants a degrading annotator"
    labels = [b.label for b in at.button]
    assert not any(label == f"Open drift in {who}" for who in person["branch"] for label in labels)
    who = str(person["branch"].iloc[0])
    next(b for b in at.button if b.label == f"Look at annotator {who}").click().run()
    assert at.title[0].value == "Annotators"
    assert at.dataframe[0].value["annotator_id"].tolist() == [who]


def test_overview_sections_say_why_they_are_empty(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _narrow_to_nothing(open_app(demo_db, Role.ANALYST, monkeypatch))
    said = _said(at)
    assert "No gold labels for the items in these filters" in said
    assert not any(m.label.endswith(" on gold") for m in at.metric)
    assert "No drift alerts" in said
    for check in overview_page.CHECK_TABLES:
        if query(demo_db, check.query, Filters(stages=("escalated",), tiers=("crowd-standard",))).empty:
            assert check.empty in _said(at.selectbox(key="ov_dq_pick").set_value(check.title).run())


# --- Drift ----------------------------------------------------------------------------------------------------

def test_drift_shows_model_and_annotator_drift_and_the_reference(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "drift")
    report = query(demo_db, drift.drift_report, Filters())
    start, end = report.reference
    assert f"{start} to {end}" in _said(at)

    model = next(d.value for d in at.dataframe if "reference_rate" in d.value.columns and "branch" in d.value.columns)
    pd.testing.assert_frame_equal(model.reset_index(drop=True), report.model, check_dtype=False)
    fig = _spec(at, "Share of items where the model's label differs from consensus, per week and top-level branch")
    assert sum(len(array(t["y"])) for t in fig["data"]) == len(report.model)

    people = next(d.value for d in at.dataframe if "annotator_id" in d.value.columns)
    pd.testing.assert_frame_equal(people.reset_index(drop=True), report.annotators, check_dtype=False)
    drawn = at.multiselect(key="drift_annotators").value
    assert drawn == drift_page.default_annotators(report.annotators, report.alerts)
    fig = _spec(at, "Share of each annotator's answers equal to consensus, per week")
    assert sorted(t["name"] for t in fig["data"]) == sorted(drawn)


def test_drift_agreement_lines_are_top_level_by_default(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "drift")
    report = query(demo_db, drift.drift_report, Filters())
    with connect(demo_db, read_only=True) as con:
        top = {r[0] for r in con.execute("SELECT node_id FROM d_nodes WHERE depth = 1").fetchall()}
    lines = {t["name"] for t in _spec(at, "Agreement (alpha) per week and branch")["data"]}
    assert lines == top & set(report.agreement["branch"])
    assert len(lines) < report.agreement["branch"].nunique()
    deeper = sorted(set(report.agreement["branch"]) - top)[0]
    at.multiselect(key="drift_branches").select(deeper).run()
    lines = {t["name"] for t in _spec(at, "Agreement (alpha) per week and branch")["data"]}
    assert deeper in lines


def test_drift_alert_sizes_are_relative_and_annotator_alerts_link_to_annotators(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "drift")
    alerts = query(demo_db, drift.drift_alerts, Filters())
    fig = _spec(at, "Drift alerts by size relative to their kind's threshold")
    expected = (alerts["size"] / alerts["metric"].map(drift.ALERT_SIZE)).tolist()
    assert array(fig["data"][0]["y"]) == pytest.approx(expected)
    assert "threshold" in fig["layout"]["yaxis"]["title"]["text"]
    assert "Alert threshold" in fig["data"][0]["hovertemplate"]
    who = str(alerts.loc[alerts["metric"] == "annotator_agreement", "branch"].iloc[0])
    next(b for b in at.button if b.label == f"Look at annotator {who}").click().run()
    assert at.title[0].value == "Annotators"
    assert at.query_params["annotators"] in (who, [who])


def test_drift_sections_say_why_they_are_empty(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _narrow_to_nothing(go(open_app(demo_db, Role.ANALYST, monkeypatch), "drift"))
    said = _said(at)
    assert "No dated model predictions" in said
    assert "No annotator has answers both in the reference weeks and after them" in said
    assert "No week after it has answers in these filters" in said
    assert not at.error, [e.value for e in at.error]
    assert "Drift alerts by size relative to their kind's threshold" not in titles(at)
