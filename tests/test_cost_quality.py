"""Redundancy curves, the Pareto frontier and cost per correct label on planted crowd data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene

from queries.connection import memory
from queries.cost_quality import (
    cost_per_correct,
    non_dominated,
    pareto_frontier,
    recommended_k,
    redundancy_curve,
)
from queries.filters import Filters
from queries.refresh import refresh
from tests.conftest import load_answers
from tests.test_escalation import TREE, Planted, build_planted


@pytest.fixture(scope="module")
def planted() -> Planted:
    return build_planted(n_items=2500, seed=5)


def test_accuracy_rises_with_labels_per_item_and_cost_is_k_answers(planted: Planted) -> None:
    curve = redundancy_curve(planted.con, Filters())
    overall = curve[curve["branch"] == "all"].set_index(["method", "k"])
    for method in ("mv", "ds"):
        odd = overall.loc[method].loc[[1, 3, 5], "accuracy"].to_numpy()
        assert np.all(np.diff(odd) > 0.05), (method, odd)
        # One random answer is right as often as the planted crowd accuracy.
        assert overall.loc[(method, 1), "accuracy"] == pytest.approx(0.65, abs=0.03)
    np.testing.assert_allclose(overall.loc["mv", "cost_per_item"], 0.05 * np.arange(1, 6))
    assert set(curve["n_items"][curve["branch"] == "all"]) == {len(planted.truth)}
    by_branch = curve[(curve["branch"] != "all") & (curve["k"] == 1) & (curve["method"] == "mv")]
    assert by_branch["n_items"].sum() == len(planted.truth)


@pytest.mark.filterwarnings("ignore::Warning:crowdkit")
def test_dawid_skene_with_every_answer_matches_crowd_kit(planted: Planted) -> None:
    curve = redundancy_curve(planted.con, Filters(), methods=("ds",))
    full = curve[(curve["branch"] == "all") & (curve["k"] == 5)]["accuracy"].item()
    crowd = planted.answers[planted.answers["stage"] == "initial"].rename(
        columns={"item_id": "task", "annotator_id": "worker", "node_id": "label"}
    )
    labels = DawidSkene(n_iter=100).fit_predict(crowd[["task", "worker", "label"]])
    reference = (labels == planted.truth.loc[labels.index]).mean()
    assert full == pytest.approx(reference, abs=0.005)


def test_filtered_curve_selects_items_and_a_replay_reproduces_the_stored_sample(planted: Planted) -> None:
    stored = redundancy_curve(planted.con, Filters(branch="a"))
    fresh = redundancy_curve(planted.con, Filters(branch="a"), max_k=4)
    assert set(stored["branch"]) == {"a", "all"}
    merged = stored.merge(fresh, on=["k", "method", "branch"], suffixes=("", "_fresh"))
    assert len(merged) == 16
    for column in ("accuracy", "cost_per_item", "n_items"):
        np.testing.assert_allclose(merged[column], merged[column + "_fresh"])
    in_a = planted.con.execute("SELECT count(*) FROM d_items WHERE consensus_lineage[1] = 'a'").fetchone()
    assert in_a is not None and set(stored["n_items"]) == {in_a[0]}
    assert redundancy_curve(planted.con, Filters(sources=("nowhere",))).empty


def test_non_dominated_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    cost, acc = rng.random(60), rng.random(60)
    cost[5], acc[5] = cost[6], acc[6]  # a duplicate point: neither dominates the other
    flags = non_dominated(cost, acc)
    for i in range(60):
        beaten = any(
            cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j] < cost[i] or acc[j] > acc[i]) for j in range(60)
        )
        assert flags[i] == (not beaten)


def test_non_dominated_treats_rounding_noise_as_a_tie() -> None:
    """Two strategies whose costs differ only by summation order are tied, in either order; a real
    difference (a millionth) still dominates."""
    noisy = 0.1 + 0.2  # 0.30000000000000004
    for cost in ([0.3, noisy], [noisy, 0.3]):
        assert non_dominated(cost, [0.9, 0.9]).tolist() == [True, True]
    assert non_dominated([0.3, 0.300001], [0.9, 0.9]).tolist() == [True, False]
    assert non_dominated([0.3, 0.3], [0.9, 0.9 - 1e-6]).tolist() == [True, False]
    assert non_dominated([0.3, np.nan], [0.9, 0.95]).tolist() == [True, False]


def test_pareto_frontier_marks_current_and_undominated_points(planted: Planted) -> None:
    points = pareto_frontier(planted.con, Filters())
    assert points["is_current"].sum() == 1
    current = points[points["is_current"]].iloc[0]
    spend = planted.answers["cost"].sum() / len(planted.truth)
    assert current["cost_per_item"] == pytest.approx(spend)
    front = points[points["on_frontier"]]
    for _, p in front.iterrows():
        assert not (
            (points["cost_per_item"] <= p["cost_per_item"])
            & (points["accuracy"] >= p["accuracy"])
            & ((points["cost_per_item"] < p["cost_per_item"]) | (points["accuracy"] > p["accuracy"]))
        ).any()
    assert {"redundancy_mv", "redundancy_ds", "escalation_threshold", "current"} == set(points["strategy"])


def test_recommended_k_is_the_cheapest_within_tolerance(planted: Planted) -> None:
    curve = redundancy_curve(planted.con, Filters())
    rec = recommended_k(planted.con, Filters(), tolerance=0.01).set_index(["branch", "method"])
    for (branch, method), group in curve.groupby(["branch", "method"]):
        best = group["accuracy"].max()
        expected = group[group["accuracy"] >= best - 0.01]["k"].min()
        assert rec.loc[(branch, method), "recommended_k"] == expected
    loose = recommended_k(planted.con, Filters(), tolerance=1.0)
    assert (loose["recommended_k"] == 1).all()


def test_cost_per_correct_by_tier_and_annotator(planted: Planted) -> None:
    a = planted.answers.assign(right=lambda d: d["node_id"] == planted.truth.loc[d["item_id"]].to_numpy())
    a["tier"] = np.where(a["annotator_id"].str.startswith("e"), "expert", "crowd")
    tiers = cost_per_correct(planted.con, Filters(), by="tier").set_index("name")
    for tier, group in a.groupby("tier"):
        assert tiers.loc[tier, "accuracy"] == pytest.approx(group["right"].mean())
        assert tiers.loc[tier, "cost_per_correct"] == pytest.approx(group["cost"].mean() / group["right"].mean())
    people = cost_per_correct(planted.con, Filters(branch="a"), by="annotator")
    in_a = planted.con.execute(
        "SELECT count(*) FROM d_answers a JOIN d_items USING (item_idx) WHERE list_contains(consensus_lineage, 'a')"
    ).fetchone()
    assert in_a is not None and people["answers"].sum() == in_a[0]
    with pytest.raises(ValueError, match="by must be"):
        cost_per_correct(planted.con, Filters(), by="colour")
    assert cost_per_correct(planted.con, Filters(sources=("nowhere",))).empty
    assert isinstance(people, pd.DataFrame)


def test_without_gold_curves_are_empty_and_costs_have_no_accuracy() -> None:
    con = memory()
    answers = pd.DataFrame({"item_id": ["x", "x", "y"], "annotator_id": ["u", "v", "u"], "node_id": ["a1", "a2", "b"]})
    load_answers(con, TREE, answers)
    refresh(con)
    assert redundancy_curve(con, Filters()).empty and recommended_k(con, Filters()).empty
    assert redundancy_curve(con, Filters(), seed=1).empty
    assert pareto_frontier(con, Filters()).empty
    people = cost_per_correct(con, Filters())
    assert list(people["answers"]) == [2, 1] and people["accuracy"].isna().all()


def test_default_pool_replay_is_the_stored_sample(planted: Planted) -> None:
    """The unfiltered curve reads the refresh's sample; replaying with the default pool gives the same rows."""
    from queries.cost_quality import DEFAULT_POOL, answer_pool, replay

    assert answer_pool(Filters(branch="a", start="2026-02-01")) == DEFAULT_POOL
    stored = planted.con.execute("SELECT item_idx, k, method, correct, cost FROM d_cost_quality_items").df()
    fresh = replay(planted.con, pool=DEFAULT_POOL)
    key = ["item_idx", "k", "method"]
    pd.testing.assert_frame_equal(
        stored.sort_values(key).reset_index(drop=True), fresh.sort_values(key).reset_index(drop=True), check_dtype=False
    )


def test_stage_and_annotator_filters_replay_only_their_answers(planted: Planted) -> None:
    """Expert answers alone: one per resolved escalation, so k = 1 and the curve is the experts' accuracy on gold."""
    experts = planted.answers[planted.answers["stage"] == "escalated"]
    right = (experts["node_id"].to_numpy() == planted.truth.loc[experts["item_id"]].to_numpy()).mean()
    curve = redundancy_curve(planted.con, Filters(stages=("escalated",)), replay_answers=True)
    overall = curve[curve["branch"] == "all"].set_index("method")
    assert set(curve["k"]) == {1}
    assert overall.loc["mv", "accuracy"] == pytest.approx(right)
    assert overall.loc["mv", "cost_per_item"] == pytest.approx(1.0)
    assert set(overall["n_items"]) == {len(experts)}

    # Ten crowd workers: spend and items scored per k follow only their answers, and differ from everyone's.
    few = tuple(f"w{i}" for i in range(10))
    pool = planted.answers[planted.answers["annotator_id"].isin(few)]
    per_item = pool.groupby("item_id").size()
    curve = redundancy_curve(planted.con, Filters(annotators=few), methods=("mv",), replay_answers=True)
    overall = curve[curve["branch"] == "all"].set_index("k")
    for k, row in overall.iterrows():
        assert row["n_items"] == len(per_item)
        assert row["cost_per_item"] == pytest.approx(0.05 * np.minimum(per_item, k).mean())
    # With every pool answer counted, items whose pool plurality is unique are decided; ties may go either way.
    top = int(per_item.max())
    votes = pool.groupby(["item_id", "node_id"]).size().rename("n").reset_index()
    best = votes[votes["n"] == votes.groupby("item_id")["n"].transform("max")]
    unique = best.groupby("item_id").filter(lambda g: len(g) == 1).set_index("item_id")["node_id"]
    sure = (unique == planted.truth.loc[unique.index]).sum()
    tied_with_gold = best[best["node_id"].to_numpy() == planted.truth.loc[best["item_id"]].to_numpy()]
    possible = sure + tied_with_gold["item_id"].isin(set(best["item_id"]) - set(unique.index)).sum()
    assert sure / len(per_item) <= overall.loc[top, "accuracy"] <= possible / len(per_item)
    everyone = redundancy_curve(planted.con, Filters(), methods=("mv",))
    assert not everyone[everyone["branch"] == "all"]["n_items"].eq(len(per_item)).all()
