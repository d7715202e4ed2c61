"""The simulated labelling pipeline: crowd answers, adaptive extension, escalation to experts, audits.

Errors are not uniform: a wrong answer is usually a sibling of the true leaf (the hard pair partner
most of all), sometimes a cousin in the same branch and rarely anything else, because that is how
real reviewers err and what the reliability and confusion analytics must recover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from queries import demo_config as cfg
from queries.demo_world import (
    END_S,
    WEEK_S,
    Annotators,
    Items,
    TreeIndex,
    choose,
    later_within_window,
    pick_padded,
)

TRIGGERS = ("confidence_threshold", "consensus_gap", "conflict", "manual")
STAGES = ("initial", "escalated")
GUIDELINES = ("g1", "g2")


@dataclass(frozen=True)
class Answers:
    """Flat answer rows before they are merged and ordered."""

    item: np.ndarray
    annotator: np.ndarray
    node: np.ndarray
    t: np.ndarray


def _confusion(rng: np.random.Generator, index: TreeIndex, truth: np.ndarray, sibling_bias: np.ndarray) -> np.ndarray:
    """A wrong leaf for each truth: hard partner, else sibling, else cousin, else anything."""
    m = len(truth)
    u = rng.random(m)
    p_sibling = np.where(sibling_bias, 0.85, 0.6)
    p_cousin = p_sibling + np.where(sibling_bias, 0.1, 0.25)
    sibling = pick_padded(rng, index.siblings, index.sibling_count, truth)
    cousin = pick_padded(rng, index.cousins, index.cousin_count, truth)
    anything = (truth + 1 + rng.integers(0, index.n_leaves - 1, m)) % index.n_leaves
    wrong = np.where(u < p_sibling, sibling, np.where(u < p_cousin, cousin, anything))
    partner = index.partner[truth]
    return np.where((partner >= 0) & (rng.random(m) < 0.75), partner, wrong)


def degraded_accuracy(week: np.ndarray) -> np.ndarray:
    """The degrading annotator's accuracy: steady, then a linear slide from the given week."""
    progress = np.clip((week - cfg.DEGRADE_FROM_WEEK + 1) / (cfg.WEEKS - cfg.DEGRADE_FROM_WEEK), 0.0, 1.0)
    slide = cfg.DEGRADE_START_ACCURACY - (cfg.DEGRADE_START_ACCURACY - cfg.DEGRADE_END_ACCURACY) * progress
    return np.where(week >= cfg.DEGRADE_FROM_WEEK, slide, cfg.DEGRADE_START_ACCURACY)


def guideline_affected(index: TreeIndex, truth: np.ndarray, t: np.ndarray, events: bool) -> np.ndarray:
    branch = index.branch_position(cfg.GUIDELINE_BRANCH)
    return events & (index.leaf_branch[truth] == branch) & (t >= cfg.GUIDELINE_WEEK * WEEK_S)


def crowd_answers(
    rng: np.random.Generator, index: TreeIndex, people: Annotators, truth: np.ndarray,
    annotator: np.ndarray, t: np.ndarray, events: bool,
) -> np.ndarray:
    """Node answers of crowd workers for (truth, annotator, time) triples."""
    m = len(truth)
    accuracy = people.accuracy[annotator].copy()
    if people.degrading is not None:
        mine = annotator == people.degrading
        accuracy[mine] = degraded_accuracy((t[mine] // WEEK_S).astype(np.int64))
    hard = index.partner[truth] >= 0
    accuracy[hard] *= cfg.HARD_PAIR_ACCURACY_FACTOR
    guided = guideline_affected(index, truth, t, events)
    accuracy[guided] *= cfg.GUIDELINE_ACCURACY_FACTOR
    leaf = truth.copy()
    wrong = rng.random(m) >= accuracy
    leaf[wrong] = _confusion(rng, index, truth[wrong], guided[wrong])
    spam = people.spammer[annotator]
    leaf[spam] = rng.integers(0, index.n_leaves, int(spam.sum()))
    node = index.leaves[leaf]
    coarse = ~spam & (rng.random(m) < cfg.COARSE_SHARE)
    up = np.where(rng.random(m) < 0.2, index.top[node], index.parent[node])
    return np.where(coarse, up, node)


def distinct_draws(rng: np.random.Generator, weights: np.ndarray, n: int, k: int) -> np.ndarray:
    """k different annotators per item, drawn by workload weight; clashes are redrawn in bulk."""
    draws = choose(rng, weights, n * k).reshape(n, k)
    for j in range(1, k):
        clash = (draws[:, :j] == draws[:, [j]]).any(axis=1)
        while clash.any():
            draws[clash, j] = choose(rng, weights, int(clash.sum()))
            clash = (draws[:, :j] == draws[:, [j]]).any(axis=1)
    return draws


def consensus(answers: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority answer, its share and the gap to the runner-up, over each row's valid answers."""
    same = (answers[:, :, None] == answers[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    votes = same.sum(axis=2)
    best = votes.argmax(axis=1)
    rows = np.arange(len(answers))
    majority = answers[rows, best]
    top = votes[rows, best]
    runner_up = np.where(valid & (answers != majority[:, None]), votes, 0).max(axis=1)
    k = valid.sum(axis=1)
    return majority, top / k, (top - runner_up) / k


@dataclass(frozen=True)
class Labels:
    annotations: Answers
    stage: np.ndarray
    confidence: np.ndarray  # NaN when not reported
    duration_s: np.ndarray
    cost: np.ndarray
    guideline: np.ndarray
    escalated: np.ndarray  # item positions
    trigger: np.ndarray
    routed_to: np.ndarray  # annotator positions
    escalated_at: np.ndarray
    resolved_at: np.ndarray  # NaN while in flight
    expert_answers: Answers
    gold: np.ndarray  # item positions


def _crowd_round(
    rng: np.random.Generator, index: TreeIndex, people: Annotators, items: Items, events: bool
) -> tuple[Answers, np.ndarray, np.ndarray, np.ndarray]:
    """K_INITIAL answers per item, extended to K_EXTENDED for half of the split first rounds.

    Returns the answers, the (items, K_EXTENDED) grid of answered nodes (-1 where none), its validity
    mask and the time of each item's last crowd answer.
    """
    n = len(items.t)
    who = distinct_draws(rng, people.activity, n, cfg.K_EXTENDED)
    first = items.t[:, None] + rng.lognormal(np.log(3 * 3600), 1.0, (n, cfg.K_INITIAL))
    first = later_within_window(rng, np.repeat(items.t, cfg.K_INITIAL), first.ravel()).reshape(n, -1)
    more = first.max(axis=1)[:, None] + rng.lognormal(np.log(6 * 3600), 0.8, (n, cfg.K_EXTENDED - cfg.K_INITIAL))
    more = later_within_window(
        rng, np.repeat(first.max(axis=1), cfg.K_EXTENDED - cfg.K_INITIAL), more.ravel()
    ).reshape(n, -1)
    when = np.hstack([first, more])
    nodes = crowd_answers(
        rng, index, people, np.repeat(items.truth, cfg.K_EXTENDED), who.ravel(), when.ravel(), events
    ).reshape(n, -1)
    unanimous = (nodes[:, : cfg.K_INITIAL] == nodes[:, [0]]).all(axis=1)
    extend = ~unanimous & (rng.random(n) < cfg.EXTEND_SHARE)
    valid = np.ones((n, cfg.K_EXTENDED), dtype=bool)
    valid[:, cfg.K_INITIAL :] = extend[:, None]
    item = np.repeat(np.arange(n), cfg.K_EXTENDED).reshape(n, -1)
    answers = Answers(item=item[valid], annotator=who[valid], node=nodes[valid], t=when[valid])
    return answers, np.where(valid, nodes, -1), valid, np.where(valid, when, 0.0).max(axis=1)


def _triggers(
    rng: np.random.Generator, index: TreeIndex, nodes: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which rule escalates each item (-1: none), checked in the order of TRIGGERS."""
    majority, share, gap = consensus(nodes, valid)
    branch = np.where(valid, index.node_branch[np.where(valid, nodes, 0)], -1)
    severe = np.isin(branch, [index.branch_position(b) for b in cfg.HIGH_SEVERITY]) & valid
    mixed = (np.where(valid, branch, branch[:, [0]]) != branch[:, [0]]).any(axis=1)
    conflict = severe.any(axis=1) & mixed
    manual = rng.random(len(nodes)) < cfg.MANUAL_SHARE
    trigger = np.select([share < cfg.CONFIDENCE_THRESHOLD, gap < cfg.GAP_THRESHOLD, conflict, manual],
                        [0, 1, 2, 3], -1)
    return trigger, majority


def _route(
    rng: np.random.Generator, index: TreeIndex, people: Annotators, majority: np.ndarray, segment: np.ndarray
) -> np.ndarray:
    """The expert covering the crowd majority's branch, preferring one who reads the item's language."""
    branch = index.node_branch[majority]
    score = (4.0 * people.expert_branches[:, branch].T + 2.0 * people.expert_languages[:, segment].T
             + rng.random((len(branch), len(people.expert_branches))))
    return people.n_crowd + score.argmax(axis=1)


def _expert_answers(
    rng: np.random.Generator, index: TreeIndex, people: Annotators, truth: np.ndarray, expert: np.ndarray
) -> np.ndarray:
    in_area = people.expert_branches[expert - people.n_crowd, index.leaf_branch[truth]]
    accuracy = np.where(in_area, people.accuracy[expert], cfg.EXPERT_OUT_OF_AREA_ACCURACY)
    accuracy = np.where(index.partner[truth] >= 0, accuracy - 0.03, accuracy)
    leaf = truth.copy()
    wrong = rng.random(len(truth)) >= accuracy
    leaf[wrong] = _confusion(rng, index, truth[wrong], np.ones(int(wrong.sum()), dtype=bool))
    return index.leaves[leaf]


def _describe(
    rng: np.random.Generator, index: TreeIndex, people: Annotators, items: Items, answers: Answers, events: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Self-reported confidence (loosely tied to being right), time spent and pay per answer."""
    m = len(answers.item)
    truth = items.truth[answers.item]
    right = answers.node == index.leaves[truth]
    hard = index.partner[truth] >= 0
    expert = answers.annotator >= people.n_crowd
    spam = people.spammer[answers.annotator]
    noise = rng.normal(0, 0.15, m)
    raw = np.where(expert, 0.8 + 0.15 * right + noise / 2, 0.55 + 0.25 * right - 0.1 * hard + noise)
    raw = np.where(spam, rng.uniform(0.6, 1.0, m), raw)
    confidence = np.clip(np.round(raw * 20) / 20, 0.05, 1.0)
    confidence[~people.reports_confidence[answers.annotator]] = np.nan
    duration = people.median_duration_s[answers.annotator] * rng.lognormal(0, 0.45, m) * np.where(hard, 1.3, 1.0)
    cost = people.cost_rate[answers.annotator]
    guideline = (events & (answers.t >= cfg.GUIDELINE_WEEK * WEEK_S)).astype(np.int64)
    return confidence, np.round(duration, 1), cost, guideline


def label_items(
    rng: np.random.Generator, index: TreeIndex, people: Annotators, items: Items, events: bool
) -> Labels:
    """Run the whole pipeline; annotations come back ordered by time."""
    crowd, nodes, valid, last_crowd = _crowd_round(rng, index, people, items, events)
    trigger, majority = _triggers(rng, index, nodes, valid)
    escalated = np.flatnonzero(trigger >= 0)
    routed = _route(rng, index, people, majority[escalated], items.segment[escalated])
    last = last_crowd[escalated]
    raised = later_within_window(rng, last, last + rng.lognormal(np.log(3600), 0.7, len(escalated)))
    answered = raised + rng.lognormal(np.log(8 * 3600), 0.8, len(escalated))
    resolved = answered < END_S
    expert = Answers(
        item=escalated[resolved], annotator=routed[resolved],
        node=_expert_answers(rng, index, people, items.truth[escalated[resolved]], routed[resolved]),
        t=answered[resolved],
    )
    merged = Answers(*(np.concatenate([getattr(crowd, f), getattr(expert, f)]) for f in Answers.__dataclass_fields__))
    stage = np.concatenate([np.zeros(len(crowd.item), dtype=np.int64), np.ones(len(expert.item), dtype=np.int64)])
    order = np.argsort(merged.t, kind="stable")
    merged = Answers(*(getattr(merged, f)[order] for f in Answers.__dataclass_fields__))
    confidence, duration, cost, guideline = _describe(rng, index, people, items, merged, events)
    return Labels(
        annotations=merged, stage=stage[order], confidence=confidence, duration_s=duration,
        cost=cost, guideline=guideline, escalated=escalated,
        trigger=trigger[escalated], routed_to=routed, escalated_at=raised,
        resolved_at=np.where(resolved, answered, np.nan), expert_answers=expert,
        gold=np.flatnonzero(rng.random(len(items.t)) < cfg.GOLD_SHARE),
    )
