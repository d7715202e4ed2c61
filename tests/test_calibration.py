"""Calibration metrics against scikit-learn and numpy, planted miscalibration found and corrected, and each
version of a classifier scored on its own predictions."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss

from dashboard.components import fmt
from governance.roles import Role
from queries import demo_config
from queries.calibration import (
    FLOOR,
    annotator_confidence_calibration,
    bin_index,
    brier,
    calibration_table,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_arrays,
    models,
    reliability_bins,
)
from queries.connection import connect, memory
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.hierarchy_accuracy import hierarchical_accuracy
from queries.refresh import refresh
from tests.conftest import cached_demo, load_answers
from tests.test_app_pages import go, metrics, open_app
from tests.test_escalation import LEAVES, TREE, Planted, build_planted, demo_warehouse, manifest

# Branch b's model is sharpened: its log-probabilities are the calibrated ones divided by 0.5.
PLANTED_T = {"a": 1.0, "b": 0.5}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def add_predictions(
    planted: Planted, seed: int = 3, version: str = "v1", strength: float = 2.0, day: str = "2026-02-03"
) -> np.ndarray:
    """A Bayes-calibrated classifier (Gaussian evidence, flat prior), sharpened on branch b; returns probs.

    ``strength`` is the signal: a stronger version of the classifier is more often right.
    """
    rng = np.random.default_rng(seed)
    truth = np.searchsorted(LEAVES, planted.truth.to_numpy())
    evidence = strength * np.eye(len(LEAVES))[truth] + rng.standard_normal((len(truth), len(LEAVES)))
    temperature = np.where(truth >= 3, PLANTED_T["b"], PLANTED_T["a"])
    prob = _softmax(strength * evidence / temperature[:, None])
    frame = pd.DataFrame({"item_id": planted.truth.index, "keys": [list(LEAVES)] * len(truth), "vals": list(prob)})
    planted.con.register("_p", frame)
    planted.con.execute(
        "INSERT INTO predictions SELECT item_id, 'm', ?, 1, NULL, map(keys, vals), CAST(? AS TIMESTAMP), 1 FROM _p",
        [version, day],
    )
    planted.con.unregister("_p")
    refresh(planted.con, full=True)
    return prob


@pytest.fixture(scope="module")
def scored() -> tuple[Planted, np.ndarray]:
    planted = build_planted(n_items=4000, seed=11)
    return planted, add_predictions(planted)


@pytest.fixture(scope="module")
def demo() -> Iterator[duckdb.DuckDBPyConnection]:
    con = demo_warehouse()
    yield con
    con.close()


def by_hand(prob: np.ndarray, labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Leaf-level scores of probability rows (columns ``labels``) against the true labels, computed apart from
    the warehouse: equal-width bins by np.digitize, scikit-learn's accuracy and Brier, and the temperature
    that minimises scipy's log-softmax loss (missing leaves at the documented FLOOR)."""
    top = labels[prob.argmax(axis=1)]
    conf = prob.max(axis=1)
    hit = (top == truth).astype(float)
    which = np.digitize(conf, np.linspace(0, 1, 11)[1:-1], right=True)
    ece = sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean() for b in np.unique(which))
    logp = np.log(np.maximum(prob, FLOOR))
    target = np.searchsorted(labels, truth)

    def nll(t: float) -> float:
        return float(-log_softmax(logp / t, axis=1)[np.arange(target.size), target].mean())

    return {
        "n": truth.size,
        "accuracy": accuracy_score(truth, top),
        "ece": ece,
        "brier": brier_score_loss(truth, prob, labels=labels, scale_by_half=False),
        "temperature": minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x,
    }


def from_warehouse(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, float]:
    """The same scores as the pages get them for one model: leaf-level accuracy is the reliability bins'."""
    overall = calibration_table(con, Filters(), model=model).set_index(["scope", "name"]).loc[("overall", "all")]
    bins = reliability_bins(con, Filters(), model=model)
    fit = fit_temperature(con, Filters(), model=model)
    assert fit is not None and fit.model == model
    return {
        "n": overall["n"],
        "accuracy": (bins["accuracy"] * bins["n"]).sum() / bins["n"].sum(),
        "ece": overall["ece"],
        "brier": overall["brier"],
        "temperature": fit.temperature,
    }


def assert_scores_match(ours: dict[str, float], expected: dict[str, float]) -> None:
    assert ours["n"] == expected["n"]
    for key in ("accuracy", "ece", "brier"):
        assert ours[key] == pytest.approx(expected[key], rel=1e-9), key
    # Two bounded searches, over log T and over T, stop within their tolerances of the same minimum.
    assert ours["temperature"] == pytest.approx(expected["temperature"], rel=1e-3)


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


def test_demo_miscalibrated_branches_have_the_highest_ece_and_temperature_softens_them(
    demo: duckdb.DuckDBPyConnection,
) -> None:
    con = demo
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


def test_two_versions_of_one_classifier_on_the_same_items_are_scored_apart() -> None:
    planted = build_planted(n_items=1500, seed=13)
    truth = planted.truth.to_numpy()
    weak = add_predictions(planted)
    # The stronger version scores the same items a week later: the newest prediction per item must not hide v1.
    strong = add_predictions(planted, seed=4, version="v2", strength=3.0, day="2026-02-10")
    assert models(planted.con) == ["m@v1", "m@v2"]
    v1, v2 = from_warehouse(planted.con, "m@v1"), from_warehouse(planted.con, "m@v2")
    assert_scores_match(v1, by_hand(weak, LEAVES, truth))
    assert_scores_match(v2, by_hand(strong, LEAVES, truth))
    assert v2["accuracy"] > v1["accuracy"]
    with pytest.raises(LabelgovError, match="'m' has several versions; name one of m@v1, m@v2"):
        fit_temperature(planted.con, Filters(), model="m")


def test_a_bare_name_stands_for_its_only_version(scored: tuple[Planted, np.ndarray]) -> None:
    planted, _ = scored
    assert models(planted.con) == ["m@v1"]
    pd.testing.assert_frame_equal(
        calibration_table(planted.con, Filters(), model="m"), calibration_table(planted.con, Filters())
    )
    assert calibration_table(planted.con, Filters())["model"].unique().tolist() == ["m@v1"]


def test_demo_versions_match_the_raw_predictions_and_v2_beats_v1_as_planted(demo: duckdb.DuckDBPyConnection) -> None:
    raw = demo.execute(
        "SELECT p.model || '@' || p.model_version AS model, map_keys(p.probabilities) AS k, "
        "map_values(p.probabilities) AS v, g.node_id AS gold FROM predictions p JOIN gold_labels g USING (item_id)"
    ).df()
    # The demo scores each item once, with the version live that week, and has one gold label per item.
    assert not demo.execute("SELECT count(*) FROM predictions GROUP BY item_id HAVING count(*) > 1").fetchall()
    long = raw[["k", "v"]].explode(["k", "v"])
    labels = np.unique(long["k"].to_numpy(str))
    prob = np.zeros((len(raw), labels.size))
    prob[long.index.to_numpy(), np.searchsorted(labels, long["k"].to_numpy(str))] = long["v"].to_numpy(float)
    prob /= prob.sum(axis=1, keepdims=True)
    wanted = {f"{demo_config.MODEL}@{version}" for version in demo_config.MODEL_SIGNAL}
    assert set(models(demo)) == wanted == set(raw["model"])
    ours = {}
    for model in sorted(wanted):
        mine = (raw["model"] == model).to_numpy()
        ours[model] = from_warehouse(demo, model)
        assert_scores_match(ours[model], by_hand(prob[mine], labels, raw["gold"].to_numpy(str)[mine]))
    # v2 was planted with the stronger signal, so it must be the more accurate against gold.
    v1, v2 = (ours[f"{demo_config.MODEL}@{v}"]["accuracy"] for v in ("v1", "v2"))
    assert demo_config.MODEL_SIGNAL["v2"] > demo_config.MODEL_SIGNAL["v1"] and v2 > v1 + 0.05
    # The hierarchy page names and scores the same models the same way.
    exact = hierarchical_accuracy(demo, Filters()).set_index("method")["exact"]
    for model, scores in ours.items():
        assert exact["model:" + model] == pytest.approx(scores["accuracy"])


def test_demo_model_names_resolve_or_list_the_choices(demo: duckdb.DuckDBPyConnection) -> None:
    v1, v2 = (f"{demo_config.MODEL}@{v}" for v in ("v1", "v2"))
    with pytest.raises(LabelgovError, match=f"several versions; name one of {v1}, {v2}"):
        calibration_table(demo, Filters(), model=demo_config.MODEL)
    with pytest.raises(LabelgovError, match=f"no predictions from model 'nope'; models are {v1}, {v2}"):
        reliability_bins(demo, Filters(), model="nope")
    assert calibration_table(demo, Filters(), model=v2)["model"].unique().tolist() == [v2]


def test_calibration_page_shows_the_model_version_picked(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = cached_demo(tmp_path_factory, 3000)
    with connect(db, read_only=True) as con:
        keys = models(con)
        fits = {key: fit_temperature(con, Filters(), model=key) for key in keys}
    at = go(open_app(db, Role.ANALYST, monkeypatch), "calibration")
    assert at.selectbox(key="cal_model").options == keys and at.selectbox(key="cal_model").value == keys[0]
    for key in reversed(keys):
        at = at.selectbox(key="cal_model").set_value(key).run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        fit = fits[key]
        assert fit is not None
        shown = metrics(at)
        assert shown["Model"] == key and shown["Gold items"] == f"{fit.n:,}"
        assert shown["Fitted temperature"] == fmt(fit.temperature, "ratio")
        scores = next(frame.value for frame in at.dataframe if "ece" in frame.value.columns)
        assert set(scores["model"]) == {key}
