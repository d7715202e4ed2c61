"""The Calibration page: scores against gold and soft labels per level and branch, what the temperature would
give, annotators' stated confidence, which filters only choose items; and the new queries against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dashboard.components import fmt
from governance.roles import Role
from queries.calibration import (
    annotator_confidence_bins,
    annotator_confidence_calibration,
    calibration_by_branch,
    calibration_table,
    fit_temperature,
)
from queries.connection import memory
from queries.filters import Filters
from queries.refresh import refresh
from tests import test_app_pages
from tests.conftest import load_answers
from tests.test_app_pages import array, go, metrics, open_app, query, specs
from tests.test_calibration import add_predictions
from tests.test_escalation import LEAVES, TREE, Planted, build_planted

# The session's warehouses, shared with the other page tests.
demo_db = test_app_pages.demo_db
bare_db = test_app_pages.bare_db
# Top-level branch of each leaf of TREE, in LEAVES order.
BRANCH_OF = np.array([leaf[0] for leaf in LEAVES])
EDGES = np.linspace(0, 1, 11)[1:-1]


@pytest.fixture(scope="module")
def planted() -> tuple[Planted, np.ndarray]:
    scored = build_planted(n_items=1500, seed=5)
    return scored, add_predictions(scored)


def _ece(conf: np.ndarray, hit: np.ndarray) -> float:
    """Equal-width right-closed bins by np.digitize, weighted by their share of rows."""
    which = np.digitize(conf, EDGES, right=True)
    gaps = [abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean() for b in np.unique(which)]
    return float(sum(gaps))


def _by_hand(planted: Planted, prob: np.ndarray, branch: np.ndarray) -> pd.DataFrame:
    """ECE and Brier per (branch, level) against gold and against the answers' shares, from the planted
    answers, truth and probabilities alone; ``branch`` is each item's consensus branch, ``all`` pools them."""
    items = planted.truth.index.to_numpy()
    counts = pd.crosstab(planted.answers["item_id"], planted.answers["node_id"]).reindex(
        index=items, columns=LEAVES, fill_value=0
    )
    share = counts.to_numpy(float) / counts.to_numpy().sum(axis=1, keepdims=True)
    gold = (planted.truth.to_numpy()[:, None] == LEAVES[None, :]).astype(float)
    to_branch = (BRANCH_OF[:, None] == np.array(["a", "b"])[None, :]).astype(float)
    rows = []
    for level, cut in ((1, to_branch), (2, np.eye(len(LEAVES)))):
        p, q, y = prob @ cut, share @ cut, gold @ cut
        conf, top = p.max(axis=1), p.argmax(axis=1)
        rows += [
            {
                "branch": name,
                "level": level,
                "ece_gold": _ece(conf[mask], y[mask, top[mask]]),
                "brier_gold": float(((p[mask] - y[mask]) ** 2).sum(axis=1).mean()),
                "ece_soft": _ece(conf[mask], q[mask, top[mask]]),
                "brier_soft": float(((p[mask] - q[mask]) ** 2).sum(axis=1).mean()),
                "n": int(mask.sum()),
            }
            for name, mask in [("all", np.ones(len(items), bool)), *((b, branch == b) for b in np.unique(branch))]
        ]
    return pd.DataFrame(rows).set_index(["branch", "level"])


def test_scores_per_branch_and_level_against_gold_and_soft_labels_match_numpy(
    planted: tuple[Planted, np.ndarray],
) -> None:
    scored, prob = planted
    consensus = scored.con.execute("SELECT item_id, consensus_lineage[1] AS branch FROM d_items").df()
    branch = consensus.set_index("item_id")["branch"].reindex(scored.truth.index).to_numpy(str)
    expected = _by_hand(scored, prob, branch)
    ours = calibration_by_branch(scored.con, Filters()).set_index(["branch", "level"])
    assert set(ours.index) == set(expected.index)
    for key, row in expected.iterrows():
        assert ours.loc[key, "n_gold"] == ours.loc[key, "n_soft"] == row["n"], key
        for column in ("ece_gold", "brier_gold", "ece_soft", "brier_soft"):
            assert ours.loc[key, column] == pytest.approx(row[column], rel=1e-9), (key, column)
    # Against gold the levels are those of calibration_table, which scores from the dense matrix instead.
    levels = calibration_table(scored.con, Filters()).set_index(["scope", "name"]).loc["level"]
    for level, row in levels.iterrows():
        assert ours.loc[("all", int(level)), "ece_gold"] == pytest.approx(row["ece"], rel=1e-9)
        assert ours.loc[("all", int(level)), "brier_gold"] == pytest.approx(row["brier"], rel=1e-9)
    # An answer-level filter only chooses items: the items kept are scored as before.
    narrowed = calibration_by_branch(scored.con, Filters(annotators=("e1",))).set_index(["branch", "level"])
    assert 0 < narrowed.loc[("all", 2), "n_soft"] < ours.loc[("all", 2), "n_soft"]


def test_stated_confidence_bins_per_tier_match_pandas(planted: tuple[Planted, np.ndarray]) -> None:
    scored, _ = planted
    a = scored.answers.assign(
        hit=lambda d: (d["node_id"] == scored.truth.loc[d["item_id"]].to_numpy()).astype(float),
        tier=lambda d: np.where(d["annotator_id"].str.startswith("e"), "expert", "crowd"),
        bin=lambda d: np.digitize(d["confidence"], EDGES, right=True),
    )
    expected = a.groupby(["tier", "bin"]).agg(
        mean_confidence=("confidence", "mean"), accuracy=("hit", "mean"), n=("hit", "size")
    )
    ours = annotator_confidence_bins(scored.con, Filters()).set_index(["tier", "bin"])
    assert set(ours.index) == set(expected.index)
    for key, row in expected.iterrows():
        assert ours.loc[key, "n"] == row["n"]
        assert ours.loc[key, "mean_confidence"] == pytest.approx(row["mean_confidence"])
        assert ours.loc[key, "accuracy"] == pytest.approx(row["accuracy"])
    # The tier lines pool the per-annotator table's answers.
    per = annotator_confidence_calibration(scored.con, Filters())
    assert ours["n"].sum() == per["n"].sum() == len(a)


def test_without_predictions_or_confidences_the_new_queries_are_empty() -> None:
    con = memory()
    answers = pd.DataFrame({"item_id": ["x", "x", "y"], "annotator_id": ["u", "v", "u"], "node_id": ["a1", "a2", "b1"]})
    load_answers(con, TREE, answers)
    refresh(con)
    assert calibration_by_branch(con, Filters()).empty
    assert annotator_confidence_bins(con, Filters()).empty
    assert annotator_confidence_bins(con, Filters(), against="consensus").empty


def _figure(at: Any, starts: str) -> dict[str, Any]:
    return next(s for s in specs(at) if s["layout"]["title"]["text"].startswith(starts))


def test_page_numbers_equal_the_queries(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "calibration")
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    model = at.selectbox(key="cal_model").value
    fit = query(demo_db, fit_temperature, Filters(), model=model)
    overall = query(demo_db, calibration_table, Filters(), model=model).set_index("scope").loc["overall"]
    shown = metrics(at)
    assert shown["Log loss before → after"] == f"{fit.nll_before:.3f} → {fit.nll_after:.3f}"
    assert shown["Leaf ECE before → after"] == (
        f"{fmt(overall['ece'], 'share')} → {fmt(overall['ece_after_temperature'], 'share')}"
    )
    assert any(f"from {fit.nll_before:.3f} to {fit.nll_after:.3f} nats" in m.value for m in at.markdown)

    by_branch = query(demo_db, calibration_by_branch, Filters(), model=model)
    table = next(d.value for d in at.dataframe if "ece_soft" in d.value.columns)
    pd.testing.assert_frame_equal(table.reset_index(drop=True), by_branch, check_dtype=False)
    for label, against in (("Gold labels", "gold"), ("Crowd soft labels", "soft")):
        at = at.radio(key="cal_against").set_value(label).run()
        fig = _figure(at, "Expected calibration error per branch")
        assert fig["layout"]["title"]["text"].endswith("against " + label.lower())
        for trace in fig["data"]:
            level = int(trace["name"].removeprefix("Level "))
            rows = by_branch[(by_branch["level"] == level) & ~by_branch["branch"].isin(["all", "none"])]
            assert array(trace["x"]) == rows["branch"].tolist()
            np.testing.assert_allclose(array(trace["y"]), rows["ece_" + against])
        assert fig["layout"]["yaxis"]["title"]["text"] == "Expected calibration error (0 to 1)"

    for label, against in (("the gold label", "gold"), ("the consensus label", "consensus")):
        at = at.radio(key="cal_ann_against").set_value(label).run()
        per = query(demo_db, annotator_confidence_calibration, Filters(), against=against)
        shown_per = next(d.value for d in at.dataframe if "overconfidence" in d.value.columns)
        pd.testing.assert_frame_equal(shown_per.reset_index(drop=True), per, check_dtype=False)
        bins = query(demo_db, annotator_confidence_bins, Filters(), against=against)
        fig = _figure(at, "Stated confidence against answers")
        lines = {t["name"]: t for t in fig["data"] if t["name"] != "Perfect calibration"}
        assert set(lines) == set(bins["tier"])
        for tier, part in bins.groupby("tier"):
            part = part.sort_values("mean_confidence")
            np.testing.assert_allclose(array(lines[tier]["y"]), part["accuracy"])
            np.testing.assert_allclose(array(lines[tier]["x"]), part["mean_confidence"])


def test_answer_filters_are_named_as_only_choosing_items(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Filters(branch="spam", sources=("x",)).answer_fields() == []
    assert Filters(tiers=("expert",), stages=("initial",), branch="spam").answer_fields() == ["stages", "tiers"]
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "calibration")
    assert not any("only choose which items" in c.value for c in at.caption)
    tier = at.sidebar.multiselect(key="f_tiers").options[0]
    at = at.sidebar.multiselect(key="f_tiers").set_value([tier]).run()
    said = [c.value for c in at.caption if "only choose which items" in c.value]
    assert said and said[0].startswith("Annotator tier:")


def test_bare_warehouse_says_what_is_missing(bare_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = go(open_app(bare_db, Role.ANALYST, monkeypatch), "calibration")
    assert not at.exception and not at.error
    said = " ".join(m.value for m in at.info)
    assert "ingest predictions" in said
    assert "No answers in scope carry a self-reported confidence" in said and "`confidence` column" in said
