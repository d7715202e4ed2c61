"""The Dawid-Skene engine against crowd-kit's implementation, on generated and on real crowd data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene
from scipy import sparse

from queries.dawid_skene import DSResult, _count_matrix, _dense, dawid_skene
from queries.errors import LabelgovError
from tests.conftest import require_shared


def synthetic_answers(
    n_items: int, n_classes: int, n_annotators: int, per_item: int, seed: int = 0, spammers: float = 0.05
) -> tuple[np.ndarray, ...]:
    """Answers with planted truth: skilled annotators who confuse a sibling class, and uniform spammers.

    Returns (item, annotator, label, truth per item, accuracy per annotator, spammer flag per annotator).
    """
    rng = np.random.default_rng(seed)
    truth = rng.choice(n_classes, n_items, p=rng.dirichlet(np.full(n_classes, 2.0)))
    activity = rng.pareto(1.5, n_annotators) + 1.0
    accuracy = rng.uniform(0.55, 0.95, n_annotators)
    spam = rng.random(n_annotators) < spammers
    spam[:2] = True
    item = np.repeat(np.arange(n_items), per_item)
    annotator = rng.choice(n_annotators, item.size, p=activity / activity.sum())
    true = truth[item]
    other = (true + rng.integers(1, n_classes, item.size)) % n_classes
    sibling = true ^ 1 if n_classes % 2 == 0 else other
    wrong = np.where(rng.random(item.size) < 0.5, sibling, other)
    label = np.where(rng.random(item.size) < accuracy[annotator], true, wrong)
    label = np.where(spam[annotator], rng.integers(0, n_classes, item.size), label)
    return item, annotator, label, truth, accuracy, spam


def crowdkit_frame(item: np.ndarray, annotator: np.ndarray, label: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"task": item, "worker": annotator, "label": label})


def assert_matches(reference: pd.DataFrame, ours: DSResult, n_classes: int) -> None:
    """Posteriors within 1e-4 and the same predicted class on at least 99.5 % of items."""
    expected = reference.reindex(index=ours.item_ids, columns=np.arange(n_classes)).fillna(0.0).to_numpy()
    assert np.abs(expected - ours.posteriors).max() < 1e-4
    assert (expected.argmax(axis=1) == ours.labels).mean() >= 0.995


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_crowdkit_dawid_skene_on_generated_answers(seed: int) -> None:
    item, annotator, label, *_ = synthetic_answers(1500, 5, 40, 5, seed=seed)
    reference = DawidSkene(n_iter=100)
    probas = reference.fit_predict_proba(crowdkit_frame(item, annotator, label))
    ours = dawid_skene(item, annotator, label, n_iter=100)
    assert ours.iterations == len(reference.loss_history_)
    assert_matches(probas, ours, 5)
    assert np.allclose(ours.loss_history, reference.loss_history_, atol=1e-6)


def test_matches_crowdkit_at_a_fixed_iteration_count() -> None:
    item, annotator, label, *_ = synthetic_answers(800, 3, 25, 4, seed=5)
    reference = DawidSkene(n_iter=7, tol=-np.inf)
    probas = reference.fit_predict_proba(crowdkit_frame(item, annotator, label))
    ours = dawid_skene(item, annotator, label, n_iter=7, tol=-np.inf)
    assert ours.iterations == 7
    assert_matches(probas, ours, 3)


def test_matches_crowdkit_one_coin() -> None:
    item, annotator, label, *_ = synthetic_answers(1500, 4, 30, 5, seed=2)
    reference = OneCoinDawidSkene(n_iter=100)
    probas = reference.fit_predict_proba(crowdkit_frame(item, annotator, label))
    ours = dawid_skene(item, annotator, label, n_iter=100, one_coin=True)
    assert ours.iterations == len(reference.loss_history_)
    assert_matches(probas, ours, 4)
    assert np.allclose(ours.accuracy, reference.skills_.reindex(ours.annotator_ids).to_numpy(), atol=1e-5)


def test_matches_crowdkit_with_known_true_labels() -> None:
    item, annotator, label, truth, *_ = synthetic_answers(1500, 4, 30, 4, seed=3)
    gold = np.arange(0, 1500, 7)
    reference = DawidSkene(n_iter=100)
    probas = reference.fit_predict_proba(
        crowdkit_frame(item, annotator, label), true_labels=pd.Series(truth[gold], index=gold)
    )
    ours = dawid_skene(item, annotator, label, n_iter=100, gold=(gold, truth[gold]))
    assert ours.iterations == len(reference.loss_history_)
    assert_matches(probas, ours, 4)
    assert (ours.labels[gold] == truth[gold]).all()


def real_answers(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.Series]:
    folder = require_shared(name)
    answers = pd.read_csv(folder / "answers.csv", dtype=str)
    truth = pd.read_csv(folder / "truth.csv", dtype=str).set_index("question")["truth"]
    item_codes, item_ids = pd.factorize(answers["question"])
    worker_codes, _ = pd.factorize(answers["worker"])
    label_codes, labels = pd.factorize(answers["answer"], sort=True)
    truth_codes = pd.Series(pd.Categorical(truth, categories=labels).codes, index=truth.index)
    return item_codes, worker_codes, label_codes, truth_codes.reindex(item_ids)


@pytest.mark.parametrize("name", ["face_sentiment", "product_matching", "duck_identification"])
def test_matches_crowdkit_on_real_crowd_data(name: str) -> None:
    item, worker, label, truth = real_answers(name)
    reference = DawidSkene(n_iter=100)
    probas = reference.fit_predict_proba(crowdkit_frame(item, worker, label))
    iterations = len(reference.loss_history_)
    # The posteriors are float32, so the stopping rule may fire one iteration apart; compare at equal ones.
    assert abs(dawid_skene(item, worker, label, n_iter=100).iterations - iterations) <= 1
    ours = dawid_skene(item, worker, label, n_iter=iterations, tol=-np.inf)
    k = int(label.max()) + 1
    assert_matches(probas, ours, k)
    known = truth.notna().to_numpy() & (truth.to_numpy() >= 0)
    ours_accuracy = (ours.labels[known] == truth.to_numpy()[known]).mean()
    theirs = probas.reindex(index=ours.item_ids, columns=np.arange(k)).to_numpy().argmax(axis=1)
    assert ours_accuracy >= (theirs[known] == truth.to_numpy()[known]).mean()
    if name != "duck_identification":
        # On these two the model beats majority voting against the published truth.
        mv = MajorityVote().fit_predict(crowdkit_frame(item, worker, label)).reindex(ours.item_ids).to_numpy()
        assert ours_accuracy >= (mv[known] == truth.to_numpy()[known]).mean()


def test_accuracy_estimates_and_spammers_on_planted_crowd() -> None:
    # Seven answers per item make the posteriors, and so the accuracy estimates, sharp.
    item, annotator, label, truth, _, spam = synthetic_answers(6000, 6, 60, 7, seed=4)
    ours = dawid_skene(item, annotator, label)
    realised = pd.Series(label == truth[item]).groupby(annotator).mean().reindex(ours.annotator_ids)
    busy = ours.answers >= 200
    assert np.abs(ours.accuracy[busy] - realised.to_numpy()[busy]).max() < 0.03
    planted = spam[ours.annotator_ids]
    # Spammers have the lowest estimated accuracy and the highest spammer scores.
    assert ours.accuracy[planted].max() < ours.accuracy[~planted].min()
    assert ours.spammer_score[planted].min() > np.nanmax(ours.spammer_score[~planted])
    assert (ours.labels == truth).mean() > 0.9


def raykar_yu(result: DSResult, position: int) -> float:
    """The class-weighted rank-one distance computed cell by cell from one annotator's confusion table."""
    cells = result.confusion_of(position)
    table = cells.pivot_table(index="label", columns="true_class", values="p", aggfunc="sum").to_numpy()
    mix = cells.groupby("true_class")["expected_n"].sum().to_numpy()
    mix = mix / mix.sum()
    total = 0.0
    for c in range(table.shape[1]):
        for d in range(table.shape[1]):
            total += mix[c] * mix[d] * float(((table[:, c] - table[:, d]) ** 2).sum()) / 2.0
    return 1.0 - total / (1.0 - float((mix**2).sum()))


def test_spammer_score_is_the_weighted_raykar_yu_distance() -> None:
    item, annotator, label, *_ = synthetic_answers(3000, 4, 20, 5, seed=6)
    ours = dawid_skene(item, annotator, label)
    for position in range(ours.annotator_ids.size):
        assert ours.spammer_score[position] == pytest.approx(raykar_yu(ours, position), abs=1e-6)


def test_one_coin_for_few_answers_only_and_its_score() -> None:
    item, annotator, label, *_ = synthetic_answers(3000, 4, 40, 4, seed=8)
    counts = np.bincount(annotator)
    ours = dawid_skene(item, annotator, label, one_coin=counts < 100)
    assert (ours.one_coin == (counts[ours.annotator_ids] < 100)).all()
    coin = np.flatnonzero(ours.one_coin)
    skill = ours.accuracy[coin]
    assert np.allclose(1.0 - ours.spammer_score[coin], (skill - (1.0 - skill) / 3.0) ** 2)


def test_coarse_answers_are_evidence_for_their_subtree() -> None:
    # Classes 0,1 sit under coarse node 4 and 2,3 under node 5; one annotator only ever answers the parent.
    item, annotator, label, truth, *_ = synthetic_answers(3000, 4, 20, 3, seed=9, spammers=0.0)
    coarse_items = np.arange(3000)
    parent = np.where(truth < 2, 4, 5)
    item = np.concatenate([item, coarse_items])
    annotator = np.concatenate([annotator, np.full(3000, 99)])
    label = np.concatenate([label, parent])
    spread = np.vstack([np.eye(4), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]])
    ours = dawid_skene(item, annotator, label, n_classes=4, spread=spread)
    subtree_mass = np.where(parent == 4, ours.posteriors[:, :2].sum(axis=1), ours.posteriors[:, 2:].sum(axis=1))
    assert np.median(subtree_mass) > 0.999
    # Coarse answers are neither right nor wrong at leaf level: no leaf answers, no accuracy.
    assert np.isnan(ours.accuracy[ours.annotator_ids == 99]).all()
    without = dawid_skene(item[:-3000], annotator[:-3000], label[:-3000])
    assert (ours.labels == truth).mean() > (without.labels == truth).mean()


def test_trusted_answers_take_half_the_start() -> None:
    """Before any iteration the posterior is the start: half the trusted answers' shares, half the others'."""
    item = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    annotator = np.array([0, 1, 2, 9, 0, 1, 2, 9])
    label = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    trusted = np.arange(10) == 9
    start = dawid_skene(item, annotator, label, n_iter=0, trusted=trusted).posteriors
    expected = [[0.5 * 2 / 3, 0.5 * 1 / 3 + 0.5], [1 / 3, 2 / 3], [1.0, 0.0]]
    assert np.allclose(start, expected)
    plain = dawid_skene(item, annotator, label, n_iter=0).posteriors
    assert np.allclose(plain, [[0.5, 0.5], [1 / 3, 2 / 3], [1.0, 0.0]])


def test_no_trusted_annotator_is_the_plain_fit() -> None:
    item, annotator, label, *_ = synthetic_answers(2000, 4, 20, 5, seed=11)
    nobody = np.zeros(annotator.max() + 1, dtype=bool)
    assert np.array_equal(
        dawid_skene(item, annotator, label, trusted=nobody).posteriors, dawid_skene(item, annotator, label).posteriors
    )


def test_frame_input_equals_array_input() -> None:
    item, annotator, label, *_ = synthetic_answers(500, 3, 10, 3, seed=10)
    frame = pd.DataFrame({"item_idx": item, "annotator_idx": annotator, "label_idx": label})
    assert np.array_equal(dawid_skene(frame).posteriors, dawid_skene(item, annotator, label).posteriors)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([], [], []), {}, "at least one answer"),
        (([0, 1], [0, 0], [0, 3]), {"n_classes": 2}, "spread"),
        (([0, 1], [0, 0], [0, 1]), {"gold": ([0], [5])}, "gold"),
        ((pd.DataFrame({"item_idx": [0]}),), {}, "missing"),
        (([0, -1], [0, 0], [0, 1]), {}, "non-negative"),
        (([0, 1], [0, 3], [0, 1]), {"trusted": [True]}, "trusted needs a flag"),
    ],
)
def test_bad_input_is_one_clear_error(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(LabelgovError, match=message):
        dawid_skene(*args, **kwargs)


def test_count_matrix_and_ranks_equal_scipy_and_numpy_with_repeated_answers() -> None:
    rng = np.random.default_rng(3)
    # Items 0..49 with gaps and repeats, so that rows are empty, long and hold the same response twice.
    item = rng.choice(np.arange(0, 100, 2), size=2000)
    response = rng.integers(0, 30, size=item.size)
    ids, ranks = _dense(item)
    assert np.array_equal(ids, np.unique(item)) and np.array_equal(ranks, np.searchsorted(ids, item))
    indptr, indices, data = _count_matrix(ranks, response, ids.size)
    expected = sparse.csr_matrix((np.ones(item.size, dtype=np.float32), (ranks, response)), shape=(ids.size, 30))
    expected.sum_duplicates()
    assert data.max() > 1  # some item did get a response twice
    assert np.array_equal(indptr, expected.indptr) and np.array_equal(indices, expected.indices)
    assert np.array_equal(data, expected.data)

