"""Every dashboard page in Streamlit's AppTest, against a small demo warehouse and a bare one.

The page must show what the analytics layer computes (numbers compared with direct calls on the same
warehouse), its charts and tables must be there, a sidebar filter must change the numbers, and a
warehouse without gold, predictions, timestamps or escalations must get sentences, not tracebacks.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.components import fmt
from dashboard.navigation import PAGES, ROLE_PAGES
from dashboard.views import label_tree
from governance import proposals
from governance.roles import Role, grant
from queries import agreement, contested, escalation, overview, reliability
from queries.connection import connect
from queries.filters import Filters
from tests.conftest import TINY_TREE, cached_demo

pytestmark = pytest.mark.xdist_group("app_pages")
APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dashboard.cli", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared with other tests and opened read-only: no test here writes to it."""
    return cached_demo(tmp_path_factory, 3000)


@pytest.fixture(scope="session")
def bare_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Answers only: no gold, no predictions, no escalations, no timestamps."""
    folder = tmp_path_factory.mktemp("bare")
    db = folder / "bare.duckdb"
    (folder / "tree.yaml").write_text(TINY_TREE)
    rows = ["item_id,annotator_id,label"]
    for i in range(12):
        second = "dog" if i % 3 == 0 else "cat"
        third = "plant" if i % 4 == 0 else "cat"
        rows += [f"i{i},a1,cat", f"i{i},a2,{second}", f"i{i},a3,{third}"]
    (folder / "answers.csv").write_text("\n".join(rows) + "\n")
    _cli("tree", "import", str(folder / "tree.yaml"), "--db", str(db))
    _cli("ingest", "annotations", str(folder / "answers.csv"), "--db", str(db))
    _cli("refresh", "--db", str(db))
    return db


def open_app(db: Path, role: Role, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("LABELGOV_DB", str(db))
    monkeypatch.setenv("LABELGOV_ROLE", role.value)
    if "LABELGOV_USER" not in os.environ:
        monkeypatch.setenv("LABELGOV_USER", "tester")
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    return at


def go(at: AppTest, key: str) -> AppTest:
    """Open a page by its key: st.navigation registers callable pages under their url path (or title)."""
    for page_hash, info in at._registered_pages.items():
        if info.get("url_pathname") == key or info.get("page_name") == PAGES[key].title:
            at._page_hash = page_hash
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            return at
    raise AssertionError(f"page {key} is not registered")


def specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def array(value: Any) -> list[Any]:
    """Plotly's JSON keeps numeric arrays as base64 with a dtype; lists come through as they are."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def titles(at: AppTest) -> list[str]:
    out = []
    for spec in specs(at):
        title = spec.get("layout", {}).get("title", {})
        out.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return out


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def query(db: Path, func: Any, f: Filters, **kwargs: Any) -> Any:
    with connect(db, read_only=True) as con:
        return func(con, f, **kwargs)


def test_overview_tiles_equal_the_analytics_and_follow_the_filters(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app(demo_db, Role.LEADERSHIP, monkeypatch)
    assert at.title[0].value == "Overview"
    expected = query(demo_db, overview.overview, Filters())
    shown = metrics(at)
    for tile in expected.tiles:
        assert shown[tile.label] == fmt(tile.value, tile.kind), tile.key
    assert float(shown["Annotations"].replace(",", "")) > 0
    charts = titles(at)
    assert "Annotations per week" in charts and "Agreement (alpha) per week" in charts
    weekly = query(demo_db, overview.weekly_trends, Filters())
    annotations = next(s for s in specs(at) if s["layout"]["title"]["text"] == "Annotations per week")
    assert sum(array(annotations["data"][0]["y"])) == pytest.approx(float(weekly["annotations"].sum()))

    at.sidebar.selectbox(key="f_branch").set_value("harassment").run()
    narrowed = metrics(at)
    expected_branch = query(demo_db, overview.overview, Filters(branch="harassment"))
    items = next(t for t in expected_branch.tiles if t.key == "items")
    assert narrowed["Items labelled"] == fmt(items.value, "count")
    assert narrowed["Items labelled"] != shown["Items labelled"]
    assert at.query_params["branch"] in ("harassment", ["harassment"])


def test_label_tree_sunburst_confusion_and_contested(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "label_tree")
    sun = next(s for s in specs(at) if s["data"] and s["data"][0]["type"] == "sunburst")
    assert {"safe", "harassment_insult"} <= set(array(sun["data"][0]["ids"]))
    at.selectbox(key="lt_node_select").set_value("harassment").run()
    heat = next(s for s in specs(at) if s["data"] and s["data"][0]["type"] == "heatmap")
    assert set(array(heat["data"][0]["y"])) == {"Targeted abuse", "Privacy violation", "Sexual harassment"}
    frames = [df.value for df in at.dataframe]
    under = next(f for f in frames if "entropy" in f.columns and "top_node" in f.columns)
    expected = query(demo_db, contested.contested_items, Filters(branch="harassment"), limit=20)
    assert under["item_id"].tolist() == expected["item_id"].tolist()
    at.radio(key="lt_source").set_value("Latent-truth posterior (Dawid-Skene)").run()
    assert not at.exception
    posterior = next(s for s in specs(at) if s["data"] and s["data"][0]["type"] == "sunburst")
    assert array(posterior["data"][0]["values"]) != array(sun["data"][0]["values"])


def test_label_tree_agreement_table_by_grouping_with_bootstrap_intervals(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "label_tree")
    at.selectbox(key="lt_agreement_by").set_value("Branch").run()
    shown = next(df.value for df in at.dataframe if "alpha_nominal" in df.value.columns)
    analytic = query(demo_db, agreement.agreement_table, Filters(), by="branch")
    assert shown["group"].tolist() == analytic["group"].tolist()
    assert shown["alpha_nominal"].tolist() == pytest.approx(analytic["alpha_nominal"].tolist())
    bars = next(s for s in specs(at) if s["layout"]["title"]["text"] == "Agreement (alpha) by branch")
    drawn = analytic.dropna(subset=["alpha_nominal"])["alpha_nominal"]
    assert array(bars["data"][0]["y"]) == pytest.approx(drawn.tolist())
    at.toggle(key="lt_bootstrap").set_value(True).run()
    assert not at.exception
    booted = next(df.value for df in at.dataframe if "alpha_nominal" in df.value.columns)
    expected = query(demo_db, agreement.agreement_table, Filters(), by="branch",
                     bootstrap=label_tree.BOOTSTRAP_REPLICATES)
    assert booted["ci_low"].tolist() == pytest.approx(expected["ci_low"].tolist(), nan_ok=True)
    assert booted["alpha_nominal"].tolist() == pytest.approx(analytic["alpha_nominal"].tolist())
    # Percentile intervals are not the symmetric analytic ones, but estimate the same spread.
    width = (booted["ci_high"] - booted["ci_low"]) / (analytic["ci_high"] - analytic["ci_low"])
    assert not np.allclose(booted["ci_low"], analytic["ci_low"], equal_nan=True)
    assert 0.5 < float(width.median()) < 2.0


def test_disagreements_ranking_and_item_from_the_url(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "disagreements")
    ranked = at.dataframe[0].value
    expected = query(demo_db, contested.contested_items, Filters(), limit=200)
    assert ranked["item_id"].tolist() == expected["item_id"].tolist()
    item = str(expected["item_id"].iloc[0])
    at.query_params["item"] = item
    at.run()
    assert any(item in s.value for s in at.subheader)
    frames = [df.value for df in at.dataframe]
    with connect(demo_db, read_only=True) as con:
        detail = contested.item_detail(con, item)
    answers = next(f for f in frames if "annotator_id" in f.columns and "reliability" in f.columns)
    assert answers["annotator_id"].tolist() == detail.annotations["annotator_id"].tolist()
    assert any(t.startswith("Soft label per level") for t in titles(at))
    at.query_params["item"] = "no such item'); DROP TABLE items;--"
    at.run()
    assert not at.exception
    assert at.warning and "Ignored the link's item" in at.warning[0].value


def test_annotators_table_and_one_annotator(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "annotators")
    shown = at.dataframe[0].value
    expected = query(demo_db, reliability.annotator_table, Filters())
    assert shown["annotator_id"].tolist() == expected["annotator_id"].tolist()
    assert shown["gold_accuracy"].fillna(-1).tolist() == pytest.approx(expected["gold_accuracy"].fillna(-1).tolist())
    at.selectbox(key="ann_pick").set_value("w-0001").run()
    names = titles(at)
    assert "Confusion matrix of w-0001" in names and "Cohen's kappa between the busiest annotators" in names
    at.sidebar.multiselect(key="f_tiers").set_value(["expert"]).run()
    narrowed = at.dataframe[0].value
    assert set(narrowed["tier"]) == {"expert"} and len(narrowed) < len(shown)


def test_escalation_numbers_and_whatif(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "escalation")
    summary = query(demo_db, escalation.escalation_summary, Filters())
    assert metrics(at)["Escalation rate"] == fmt(summary.escalation_rate, "share")
    assert "Projected accuracy and cost by threshold" in titles(at)
    curve = query(demo_db, escalation.threshold_whatif, Filters())
    slider = at.select_slider(key="esc_threshold")
    target = float(curve["threshold"].round(3).iloc[-1])
    slider.set_value(target).run()
    row = curve[curve["threshold"].round(3) == target].iloc[0]
    assert metrics(at)["Projected accuracy"] == fmt(float(row["projected_accuracy"]), "share")


@pytest.mark.parametrize(
    ("key", "chart_title"),
    [
        ("drift", "Agreement (alpha) per week and branch"),
        ("cost_quality", "Accuracy against cost per item, by strategy"),
        ("calibration", "Reliability diagram per tree level"),
    ],
)
def test_other_analysis_pages_show_their_charts(
    key: str, chart_title: str, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), key)
    assert at.title[0].value == PAGES[key].title
    assert chart_title in titles(at)
    assert at.dataframe, "every page has at least one table"
    assert not at.error, [e.value for e in at.error]


def test_date_filter_changes_cost_quality_numbers(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "calibration")
    before = metrics(at)["Gold items"]
    at.sidebar.date_input(key="f_dates").set_value((date(2026, 3, 1), date(2026, 4, 30))).run()
    assert metrics(at)["Gold items"] != before


def test_governance_and_audit_for_a_steward(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.STEWARD, monkeypatch), "audit")
    assert at.title[0].value == "Audit log"
    assert at.success and "audit log verified" in at.success[0].value
    at = go(at, "governance")
    assert at.title[0].value == "Governance"
    assert at.info or at.dataframe


def test_roles_only_reach_their_pages(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(demo_db, Role.LEADERSHIP, monkeypatch)
    names = {info.get("page_name") for info in at._registered_pages.values()}
    assert names == {PAGES[k].title for k in ROLE_PAGES[Role.LEADERSHIP]}


@pytest.mark.parametrize("key", ROLE_PAGES[Role.ADMIN])
def test_bare_warehouse_pages_explain_what_to_ingest(key: str, bare_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(bare_db, Role.ADMIN, monkeypatch), key)
    assert at.title[0].value == PAGES[key].title
    assert not at.exception
    said = " ".join(m.value for m in [*at.info, *at.warning, *at.error, *at.success])
    wanted = {
        "escalation": "ingest escalations",
        "calibration": "ingest predictions",
        "cost_quality": "ingest gold",
        "drift": "created_at",
    }
    if key in wanted:
        assert wanted[key] in said, said


def test_filters_that_match_nothing_say_so(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(demo_db, Role.LEADERSHIP, monkeypatch)
    at.sidebar.multiselect(key="f_stages").set_value(["escalated"]).run()
    at.sidebar.multiselect(key="f_tiers").set_value(["crowd-standard"]).run()
    assert not at.exception
    assert any("No answers match these filters" in m.value for m in at.info)
    assert metrics(at)["Items labelled"] == "n/a"


def test_governance_buttons_act_as_the_signed_in_user(
    demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "governed.duckdb"
    shutil.copy(demo_db, db)
    with connect(db) as con:
        grant(con, admin_user="root", user="root", role="admin")
        grant(con, admin_user="root", user="alice", role="proposer")
        grant(con, admin_user="root", user="bob", role="steward")
        spec = proposals.ProposalFile.model_validate({
            "title": "Clearer name", "rationale": "readers asked", "base_version": None,
            "operations": [{"op": "rename", "node_id": "spam_commercial", "title": "Commercial spam and ads"}],
        })
        created = proposals.create(con, spec, user="alice")
        proposals.submit(con, created.proposal_id, user="alice")
    monkeypatch.setenv("LABELGOV_USER", "alice")
    at = go(open_app(db, Role.STEWARD, monkeypatch), "governance")
    at.button(key=f"gov_approve_{created.proposal_id}").click().run()
    assert at.error and "alice" in at.error[0].value  # the proposer may not approve their own change
    monkeypatch.setenv("LABELGOV_USER", "bob")
    at.button(key=f"gov_approve_{created.proposal_id}").click().run()
    assert at.success and "approved" in at.success[0].value
    with connect(db, read_only=True) as con:
        assert proposals.load(con, created.proposal_id).approvers == ["bob"]
