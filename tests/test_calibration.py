"""Calibration metrics against scikit-learn and numpy, and planted miscalibration found and corrected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from queries.calibration import (
    annotator_confidence_calibration,
    bin_index,
    brier,
    calibration_table,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_arrays,
    reliability_bins,
)
from queries.connection import memory
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.refresh import refresh
from tests.conftest import load_answers
from tests.test_escalation import LEAVES, TREE, Planted, build_planted, demo_warehouse, manifest

# Branch b's model is sharpened: its log-probabilities are the calibrated ones divided by 0.5.
PLANTED_T = {"a": 1.0, "b": 0.5}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def add_predictions(planted: Planted, seed: int = 3) -> np.ndarray:
    """A Bayes-calibrated classifier (Gaussian evidence, flat prior), sharpened on branch b; returns probs."""
    rng = np.random.default_rng(seed)
    truth = np.searchsorted(LEAVES, planted.truth.to_numpy())
    strength = 2.0
    evidence = strength * np.eye(len(LEAVES))[truth] + rng.standard_normal((len(truth), len(LEAVES)))
    temperature = np.where(truth >= 3, PLANTED_T["b"], PLANTED_T["a"])
    prob = _softmax(strength * evidence / temperature[:, None])
    frame = pd.DataFrame({"item_id": planted.truth.index, "keys": [list(LEAVES)] * len(truth), "vals": list(prob)})
    planted.con.register("_p", frame)
    planted.con.execute(
        "INSERT INTO predictions SELECT item_id, 'm', 'v1', 1, NULL, map(keys, vals), TIMESTAMP '2026-02-03', 1 FROM _p"
    )
    planted.con.unregister("_p")
    refresh(planted.con, full=True)
    return prob


@pytest.fixture(scope="module")
def scored() -> tuple[Planted, np.ndarray]:
    planted = build_planted(n_items=4000, seed=11)
    return planted, add_predictions(planted)


def test_bins_ece_and_brier_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 5000)
    hit = (rng.random(5000) < conf**1.5).astype(float)
    which_bin = bin_index(conf, bins=10)
    used = np.unique(which_bin)
    prob_true, prob_pred = calibration_curve(hit, conf, n_bins=10)
    np.testing.assert_allclose([hit[which_bin == b].mean() for b in used], prob_true)
    np.testing.assert_allclose([conf[which_bin == b].mean() for b in used], prob_pred)
    edges = np.linspace(0, 1, 11)
    which = np.digitize(conf, edges[1:-1], right=True)
    direct = sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean() for b in np.unique(which))
    assert expected_calibration_error(conf, hit, bins=10) == pytest.approx(direct)
    prob = _softmax(rng.standard_normal((400, 5)) * 2)
    target = rng.integers(0, 5, 400)
    assert brier(prob, target).mean() == pytest.approx(
        brier_score_loss(target, prob, labels=list(range(5)), scale_by_half=False)
    )
    binary = np.column_stack([1 - conf[:400], conf[:400]])
    # The multi-class score sums over both classes, so it is twice scikit-learn's binary Brier score.
    assert brier(binary, hit[:400].astype(int)).mean() == pytest.approx(2 * brier_score_loss(hit[:400], conf[:400]))


def test_temperature_recovers_planted_value_on_synthetic_logits() -> None:
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((20000, 8)) * 3
    for planted in (0.5, 1.0, 2.5):
        truth = (rng.random((20000, 1)) > _softmax(logits / planted).cumsum(axis=1)).sum(axis=1)
        fitted = fit_temperature_arrays(_softmax(logits), np.minimum(truth, 7))
        assert fitted == pytest.approx(planted, rel=0.1)


def test_warehouse_calibration_finds_and_corrects_the_sharpened_branch(scored: tuple[Planted, np.ndarray]) -> None:
    planted, _ = scored
    table = calibration_table(planted.con, Filters()).set_index(["scope", "name"])
    branch = table.loc["branch"]
    assert branch["ece"].idxmax() == "b"
    # Sharpened by 0.5: the fitted temperature softens it by about 1/0.5.
    assert branch.loc["b", "temperature"] == pytest.approx(1 / PLANTED_T["b"], rel=0.15)
    assert branch.loc["a", "temperature"] == pytest.approx(1.0, abs=0.1)
    assert branch.loc["b", "ece_after_temperature"] < branch.loc["b", "ece"] / 2
    assert branch.loc["b", "brier_after_temperature"] < branch.loc["b", "brier"]
    fit = fit_temperature(planted.con, Filters(branch="b"))
    assert fit is not None and fit.temperature == pytest.approx(branch.loc["b", "temperature"])
    assert fit.nll_after < fit.nll_before
    # Filtered path (recomputed) agrees with the stored table where both apply.
    fresh = calibration_table(planted.con, Filters(branch="b"), bins=10).set_index(["scope", "name"])
    assert fresh.loc[("overall", "all"), "ece"] == pytest.approx(branch.loc["b", "ece"])


def test_level_probabilities_sum_leaves_and_bins_agree_with_direct_computation(
    scored: tuple[Planted, np.ndarray],
) -> None:
    planted, prob = scored
    truth = np.searchsorted(LEAVES, planted.truth.to_numpy())
    top = np.column_stack([prob[:, :3].sum(axis=1), prob[:, 3:].sum(axis=1)])
    conf = top.max(axis=1)
    hit = (top.argmax(axis=1) == (truth >= 3)).astype(float)
    bins = reliability_bins(planted.con, Filters(), level=1)
    prob_true, prob_pred = calibration_curve(hit, conf, n_bins=10)
    np.testing.assert_allclose(bins["accuracy"], prob_true, atol=1e-9)
    np.testing.assert_allclose(bins["mean_confidence"], prob_pred, atol=1e-9)
    assert bins["n"].sum() == len(truth) and set(bins["level"]) == {1}
    level1 = calibration_table(planted.con, Filters()).set_index(["scope", "name"]).loc[("level", "1")]
    assert level1["ece"] == pytest.approx(expected_calibration_error(conf, hit))
    assert level1["brier"] == pytest.approx(brier(top, (truth >= 3).astype(int)).mean())


def test_reliability_against_soft_labels_is_human_agreement_with_the_top_leaf(
    scored: tuple[Planted, np.ndarray],
) -> None:
    planted, prob = scored
    answers = planted.answers
    share = answers.groupby(["item_id", "node_id"]).size() / answers.groupby("item_id").size()
    top = pd.Series(LEAVES[prob.argmax(axis=1)], index=planted.truth.index)
    agree = share.reindex(list(zip(top.index, top.to_numpy(), strict=True))).fillna(0).to_numpy()
    bins = reliability_bins(planted.con, Filters(), against="soft")
    conf = prob.max(axis=1)
    which = np.digitize(conf, np.linspace(0, 1, 11)[1:-1], right=True)
    np.testing.assert_allclose(bins["accuracy"], [agree[which == b].mean() for b in np.unique(which)])
    np.testing.assert_allclose(bins["mean_confidence"], [conf[which == b].mean() for b in np.unique(which)])


def test_annotator_confidence_calibration_against_direct_scores(scored: tuple[Planted, np.ndarray]) -> None:
    planted, _ = scored
    table = annotator_confidence_calibration(planted.con, Filters()).set_index("annotator_id")
    a = planted.answers.assign(hit=lambda d: d["node_id"] == planted.truth.loc[d["item_id"]].to_numpy())
    for who in ("w3", "e1"):
        mine = a[a["annotator_id"] == who]
        assert table.loc[who, "n"] == len(mine)
        assert table.loc[who, "accuracy"] == pytest.approx(mine["hit"].mean())
        assert table.loc[who, "brier"] == pytest.approx(brier_score_loss(mine["hit"], mine["confidence"]))
        assert table.loc[who, "ece"] == pytest.approx(expected_calibration_error(mine["confidence"], mine["hit"]))
    # The crowd reports 0.8 when right and 0.6 when wrong while being right about 65% of the time.
    assert table.loc["w3", "overconfidence"] == pytest.approx(
        0.6 + 0.2 * table.loc["w3", "accuracy"] - table.loc["w3", "accuracy"]
    )
    consensus = annotator_confidence_calibration(planted.con, Filters(), against="consensus")
    assert set(consensus["annotator_id"]) == set(table.index)


def test_without_predictions_everything_is_empty() -> None:
    con = memory()
    answers = pd.DataFrame({"item_id": ["x", "x", "y"], "annotator_id": ["u", "v", "u"], "node_id": ["a1", "a2", "b"]})
    load_answers(con, TREE, answers)
    refresh(con)
    assert calibration_table(con, Filters()).empty
    assert reliability_bins(con, Filters()).empty
    assert fit_temperature(con, Filters()) is None
    assert annotator_confidence_calibration(con, Filters()).empty
    with pytest.raises(LabelgovError, match="no predictions from model"):
        calibration_table(con, Filters(), model="nope")


def test_demo_miscalibrated_branches_have_the_highest_ece_and_temperature_softens_them() -> None:
    con = demo_warehouse()
    planted = manifest(con)["miscalibrated"]
    assert isinstance(planted, dict)
    branches = calibration_table(con, Filters()).set_index(["scope", "name"]).loc["branch"]
    worst = set(branches["ece"].nlargest(len(planted)).index)
    assert worst == set(planted)
    for branch, sharpening in planted.items():
        row = branches.loc[branch]
        # The model divided its logits by a temperature below 1 there; the fit undoes it with one above 1.
        assert sharpening < 1 < row["temperature"]
        assert row["ece_after_temperature"] < 0.6 * row["ece"]
    assert branches.loc["safe", "temperature"] == pytest.approx(1.0, abs=0.1)
