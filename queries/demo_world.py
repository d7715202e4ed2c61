"""The simulated world before anyone labels it: the tree as index arrays, the items and the people.

Everything is a numpy array indexed by position (node, leaf, item, annotator) so that a million items
are generated in a few vectorised passes; strings appear only when the rows are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from queries import demo_config as cfg
from queries.taxonomy import Tree, parse_tree

WEEK_S = 7 * 24 * 3600.0
END_S = cfg.WEEKS * WEEK_S


def demo_tree_text() -> str:
    return resources.files("queries").joinpath(cfg.TAXONOMY_FILE).read_text(encoding="utf-8")


def choose(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Categorical draws by inverse CDF: one uniform per draw, so the stream is stable across numpy."""
    cdf = np.cumsum(weights, dtype=np.float64)
    return np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right").astype(np.int64)


def pick_padded(rng: np.random.Generator, table: np.ndarray, counts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A uniform pick from each row's first ``counts`` entries of a padded table."""
    column = (rng.random(len(rows)) * counts[rows]).astype(np.int64)
    return table[rows, column]


def later_within_window(rng: np.random.Generator, start: np.ndarray, proposed: np.ndarray) -> np.ndarray:
    """Keep event times inside the 26 weeks: what would fall after the end lands between start and end."""
    out = proposed.copy()
    over = out >= END_S
    out[over] = start[over] + (END_S - start[over]) * rng.uniform(0.05, 0.95, int(over.sum()))
    return out


@dataclass(frozen=True)
class TreeIndex:
    """The tree as arrays; answers are node positions, truths are leaf positions."""

    tree: Tree
    node_ids: list[str]
    parent: np.ndarray
    top: np.ndarray
    leaves: np.ndarray
    branches: list[str]
    leaf_branch: np.ndarray
    node_branch: np.ndarray
    siblings: np.ndarray
    sibling_count: np.ndarray
    cousins: np.ndarray
    cousin_count: np.ndarray
    partner: np.ndarray

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    def branch_position(self, node_id: str) -> int:
        return self.branches.index(node_id)


def _padded(groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(g) for g in groups)
    table = np.full((len(groups), width), -1, dtype=np.int64)
    for row, group in enumerate(groups):
        table[row, : len(group)] = group
    return table, np.array([len(g) for g in groups], dtype=np.int64)


def index_tree(tree: Tree) -> TreeIndex:
    """Index arrays for a three-level tree; the loops run over ~70 nodes, not over data."""
    ids = [n.node_id for n in tree.nodes]
    position = {node_id: i for i, node_id in enumerate(ids)}
    parent = np.array([position[n.parent_id] if n.parent_id else -1 for n in tree.nodes], dtype=np.int64)
    top = np.array([position[n.path.split("/")[0]] for n in tree.nodes], dtype=np.int64)
    leaves = np.array([i for i, n in enumerate(tree.nodes) if n.is_leaf], dtype=np.int64)
    branches = [n.node_id for n in tree.nodes if n.depth == 1]
    node_branch = np.array([branches.index(ids[t]) for t in top], dtype=np.int64)
    leaf_branch = node_branch[leaves]
    leaf_parent = parent[leaves]
    sibling_groups = [[j for j in range(len(leaves)) if j != i and leaf_parent[j] == leaf_parent[i]]
                      for i in range(len(leaves))]
    cousin_groups = [[j for j in range(len(leaves)) if j != i and leaf_branch[j] == leaf_branch[i]]
                     for i in range(len(leaves))]
    siblings, sibling_count = _padded(sibling_groups)
    cousins, cousin_count = _padded(cousin_groups)
    partner = np.full(len(leaves), -1, dtype=np.int64)
    leaf_of = {ids[node]: j for j, node in enumerate(leaves)}
    for a, b in cfg.HARD_SIBLING_PAIRS:
        partner[leaf_of[a]], partner[leaf_of[b]] = leaf_of[b], leaf_of[a]
    return TreeIndex(
        tree=tree, node_ids=ids, parent=parent, top=top, leaves=leaves, branches=branches,
        leaf_branch=leaf_branch, node_branch=node_branch, siblings=siblings, sibling_count=sibling_count,
        cousins=cousins, cousin_count=cousin_count, partner=partner,
    )


def load_demo_tree() -> TreeIndex:
    return index_tree(parse_tree(demo_tree_text(), cfg.TAXONOMY_FILE))


def leaf_prior(index: TreeIndex, branch_boost: dict[str, float], leaf_boost: dict[str, float]) -> np.ndarray:
    """Branch shares from the scenario, Zipf-like weights within a branch, optional boosts."""
    prior = np.zeros(index.n_leaves)
    for b, branch in enumerate(index.branches):
        members = np.flatnonzero(index.leaf_branch == b)
        zipf = 1.0 / np.arange(1, len(members) + 1) ** cfg.LEAF_ZIPF
        boosts = np.array([leaf_boost.get(index.node_ids[index.leaves[m]], 1.0) for m in members])
        weights = zipf * boosts
        prior[members] = cfg.BRANCH_PRIOR[branch] * branch_boost.get(branch, 1.0) * weights / weights.sum()
    return prior / prior.sum()


@dataclass(frozen=True)
class Items:
    t: np.ndarray  # seconds since the start, sorted
    week: np.ndarray
    source: np.ndarray  # positions in source_names
    source_names: list[str]
    segment: np.ndarray
    split: np.ndarray
    truth: np.ndarray  # leaf positions
    content_key: np.ndarray
    duplicate_items: int
    chars: np.ndarray
    has_media: np.ndarray
    user_reported: np.ndarray
    account_age_days: np.ndarray
    weekly_volume: np.ndarray


def make_items(rng: np.random.Generator, index: TreeIndex, n: int, events: bool) -> Items:
    """Items over 26 weeks; with events a new source arrives at the drift week and skews one branch."""
    weeks = np.arange(cfg.WEEKS)
    base = (1 + 0.15 * np.sin(2 * np.pi * weeks / 8)) * (1 + 0.02 * weeks) * rng.lognormal(0, 0.1, cfg.WEEKS)
    extra = np.where(events & (weeks >= cfg.DRIFT_WEEK), cfg.DRIFT_EXTRA_VOLUME * base, 0.0)
    drawn = choose(rng, base + extra, n)
    t = np.sort(drawn * WEEK_S + rng.random(n) * WEEK_S)
    week = (t // WEEK_S).astype(np.int64)
    source_names = [*cfg.SOURCES, cfg.DRIFT_SOURCE]
    new_source = rng.random(n) < (extra / (base + extra))[week]
    source = np.where(new_source, len(source_names) - 1, choose(rng, np.array(list(cfg.SOURCES.values())), n))
    segment = choose(rng, np.array(list(cfg.LANGUAGES.values())), n)
    split = choose(rng, np.array(list(cfg.SPLITS.values())), n)
    ordinary = choose(rng, leaf_prior(index, {}, {}), n)
    drifted = choose(rng, leaf_prior(index, {cfg.DRIFT_BRANCH: cfg.DRIFT_BRANCH_BOOST}, cfg.DRIFT_LEAF_BOOST), n)
    truth = np.where(new_source, drifted, ordinary)
    # Re-posted content: the same text (hash) and label under another split, a leakage to find.
    targets = rng.choice(n, size=max(2, round(cfg.DUPLICATE_SHARE * n)), replace=False)
    originals = rng.integers(0, n, len(targets))
    usable = (split[targets] != split[originals]) & ~np.isin(originals, targets)
    targets, originals = targets[usable], originals[usable]
    content_key = np.arange(n, dtype=np.int64)
    content_key[targets] = originals
    truth[targets] = truth[originals]
    shared = np.bincount(content_key, minlength=n)[content_key] > 1
    safe = index.leaf_branch[truth] == index.branch_position("safe")
    return Items(
        t=t, week=week, source=source, source_names=source_names, segment=segment, split=split, truth=truth,
        content_key=content_key, duplicate_items=int(shared.sum()),
        chars=np.round(rng.lognormal(np.log(180), 0.9, n)).astype(np.int64) + 1,
        has_media=rng.random(n) < 0.3,
        user_reported=rng.random(n) < np.where(safe, 0.05, 0.35),
        account_age_days=np.round(rng.lognormal(np.log(400), 1.2, n)).astype(np.int64),
        weekly_volume=np.bincount(week, minlength=cfg.WEEKS),
    )


@dataclass(frozen=True)
class Annotators:
    ids: list[str]
    kind: list[str]
    tier: list[str]
    expertise: list[list[str] | None]
    n_crowd: int
    accuracy: np.ndarray  # planted: base accuracy (crowd), in-area accuracy (experts)
    spammer: np.ndarray
    degrading: int | None  # position of the degrading annotator
    activity: np.ndarray
    reports_confidence: np.ndarray
    median_duration_s: np.ndarray
    cost_rate: np.ndarray
    expert_branches: np.ndarray  # (experts, branches) bool
    expert_languages: np.ndarray  # (experts, languages) bool


def _expert_areas(rng: np.random.Generator, n_experts: int, n_branches: int) -> tuple[np.ndarray, np.ndarray]:
    """Every branch gets at least two experts; every expert reads English plus one or two languages."""
    branches = np.zeros((n_experts, n_branches), dtype=bool)
    primary = np.arange(n_experts) % n_branches
    secondary = (primary + 1 + rng.integers(0, n_branches - 1, n_experts)) % n_branches
    branches[np.arange(n_experts), primary] = True
    branches[np.arange(n_experts), secondary] = True
    n_languages = len(cfg.LANGUAGES)
    languages = np.zeros((n_experts, n_languages), dtype=bool)
    languages[:, 0] = True
    languages[np.arange(n_experts), rng.integers(1, n_languages, n_experts)] = True
    extra = rng.random(n_experts) < 0.4
    languages[np.flatnonzero(extra), rng.integers(1, n_languages, int(extra.sum()))] = True
    return branches, languages


def make_annotators(rng: np.random.Generator, index: TreeIndex, n_items: int, events: bool) -> Annotators:
    """A crowd of varied skill with a few spammers and (with events) one who degrades, plus experts."""
    n_crowd = int(np.clip(n_items // cfg.CROWD_ITEMS_PER_WORKER, cfg.CROWD_MIN, cfg.CROWD_MAX))
    n_experts = int(np.clip(cfg.EXPERTS_MIN + n_items // 100_000, cfg.EXPERTS_MIN, cfg.EXPERTS_MAX))
    low, high = cfg.CROWD_ACCURACY_RANGE
    accuracy = low + (high - low) * rng.beta(2.5, 1.5, n_crowd)
    spammer = np.zeros(n_crowd, dtype=bool)
    spammer[rng.choice(n_crowd, max(2, round(cfg.SPAMMER_SHARE * n_crowd)), replace=False)] = True
    accuracy[spammer] = 1.0 / index.n_leaves
    trusted = ~spammer & (rng.random(n_crowd) < np.where(accuracy >= 0.8, 0.85, 0.1))
    activity = rng.lognormal(0, 0.8, n_crowd)
    degrading = None
    if events:
        degrading = int(np.flatnonzero(~spammer)[0])
        accuracy[degrading] = cfg.DEGRADE_START_ACCURACY
        trusted[degrading] = True
        activity[degrading] = np.quantile(activity, 0.9)
    tier = np.where(trusted, "crowd-trusted", "crowd-standard").tolist()
    crowd_duration = np.where(spammer, rng.uniform(2, 4, n_crowd), rng.lognormal(np.log(25), 0.35, n_crowd))
    expert_branches, expert_languages = _expert_areas(rng, n_experts, len(index.branches))
    languages = list(cfg.LANGUAGES)
    expertise = [None] * n_crowd + [
        [index.branches[b] for b in np.flatnonzero(row_b)] + [languages[x] for x in np.flatnonzero(row_l)]
        for row_b, row_l in zip(expert_branches, expert_languages, strict=True)
    ]
    tiers = tier + ["expert"] * n_experts
    return Annotators(
        ids=[f"w-{i + 1:04d}" for i in range(n_crowd)] + [f"expert-{i + 1:02d}" for i in range(n_experts)],
        kind=["crowd"] * n_crowd + ["expert"] * n_experts,
        tier=tiers,
        expertise=expertise,
        n_crowd=n_crowd,
        accuracy=np.concatenate([accuracy, rng.uniform(*cfg.EXPERT_ACCURACY_RANGE, n_experts)]),
        spammer=np.concatenate([spammer, np.zeros(n_experts, dtype=bool)]),
        degrading=degrading,
        activity=activity,
        reports_confidence=np.concatenate([rng.random(n_crowd) < cfg.CONFIDENCE_REPORTER_SHARE,
                                           np.ones(n_experts, dtype=bool)]),
        median_duration_s=np.concatenate([crowd_duration, rng.lognormal(np.log(120), 0.3, n_experts)]),
        cost_rate=np.array([cfg.COST_RATE[t] for t in tiers]),
        expert_branches=expert_branches,
        expert_languages=expert_languages,
    )
