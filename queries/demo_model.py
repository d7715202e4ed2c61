"""The simulated moderation classifier: calibrated by construction, overconfident where planted.

Scores are drawn as Gaussian evidence around a class signature (the true leaf strongly, its siblings
and hard partner partly), and the probabilities are the exact Bayes posterior for that generative
model under the ordinary class prior. That makes the model well calibrated everywhere except where
the scenario sharpens it on purpose (temperature < 1 on items predicted in a miscalibrated branch),
and except after the drift, when the prior it assumes is no longer true.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from queries import demo_config as cfg
from queries.demo_world import TreeIndex, leaf_prior

CHUNK = 100_000


@dataclass(frozen=True)
class Predictions:
    item: np.ndarray
    version: np.ndarray  # 0 -> v1, 1 -> v2
    leaf: np.ndarray  # argmax leaf position
    offsets: np.ndarray  # into keys/values, one more than items
    keys: np.ndarray  # leaf positions with probability >= MIN_PROBABILITY
    values: np.ndarray
    delay_s: np.ndarray  # scoring happens seconds after an item arrives
    share_scored: float


def signatures(index: TreeIndex) -> np.ndarray:
    """Row c: the mean evidence vector of an item whose true leaf is c, per unit of signal."""
    n = index.n_leaves
    sig = np.eye(n)
    rows = np.repeat(np.arange(n), index.siblings.shape[1])
    cols = index.siblings.ravel()
    keep = cols >= 0
    sig[rows[keep], cols[keep]] = cfg.SIBLING_SIGNAL_SHARE
    has_partner = np.flatnonzero(index.partner >= 0)
    sig[has_partner, index.partner[has_partner]] = cfg.HARD_PAIR_SIGNAL_SHARE
    return sig


def temperatures(index: TreeIndex) -> np.ndarray:
    """Temperature per leaf, applied by the predicted leaf's branch."""
    per_branch = np.array([cfg.MISCALIBRATED.get(b, 1.0) for b in index.branches])
    return per_branch[index.leaf_branch]


def predict(rng: np.random.Generator, index: TreeIndex, truth: np.ndarray, week: np.ndarray) -> Predictions:
    """Probabilities over leaves for the scored items, kept sparse above MIN_PROBABILITY and renormalised."""
    n = len(truth)
    if n > cfg.PREDICTION_FULL_UP_TO:
        scored = np.flatnonzero(rng.random(n) < cfg.PREDICTION_SAMPLE_SHARE)
    else:
        scored = np.arange(n)
    version = (week[scored] >= cfg.MODEL_V2_WEEK).astype(np.int64)
    sig = signatures(index)
    log_prior = np.log(leaf_prior(index, {}, {}))
    temp = temperatures(index)
    strengths = np.array(list(cfg.MODEL_SIGNAL.values()))
    leaves, keys, values, counts = [], [], [], []
    for start in range(0, len(scored), CHUNK):
        part = scored[start : start + CHUNK]
        m = len(part)
        y = truth[part]
        s = strengths[version[start : start + m]]
        evidence = sig[y] * s[:, None] + rng.standard_normal((m, index.n_leaves))
        # log p(z | c) = s * z . sig_c - s^2 |sig_c|^2 / 2 (+ terms equal for every c)
        logit = log_prior + s[:, None] * (evidence @ sig.T) - 0.5 * (s**2)[:, None] * (sig**2).sum(axis=1)
        best = logit.argmax(axis=1)
        logit = logit / temp[best][:, None]
        prob = np.exp(logit - logit.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        keep = prob >= cfg.MIN_PROBABILITY
        prob = np.where(keep, prob, 0.0)
        prob /= prob.sum(axis=1, keepdims=True)
        rows, cols = np.nonzero(keep)
        leaves.append(best)
        keys.append(cols)
        values.append(prob[rows, cols])
        counts.append(keep.sum(axis=1))
    count = np.concatenate(counts)
    offsets = np.zeros(len(scored) + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    return Predictions(
        item=scored, version=version,
        leaf=np.concatenate(leaves),
        offsets=offsets,
        keys=np.concatenate(keys),
        values=np.concatenate(values),
        delay_s=rng.uniform(1, 120, len(scored)),
        share_scored=len(scored) / n,
    )
