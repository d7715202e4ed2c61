"""The soft-label sums per annotator tier that refresh stores, added up from the walk's arrays.

A filter on one tier reads sums per tier and group of items (see soft_labels: ``TIER_PARTS``). They were a
GROUP BY over each chunk's walked rows, handed to DuckDB as Arrow and joined to the chunk's items: about half a
second a chunk at ten million answers, more than the walk that made the rows. The groups are few (the tier,
the depth or node, and the item's consensus node, source and segment), so here each row's group is a dense
integer code and the sums are bincounts over it. A group's attributes are joined afterwards to the few
thousand result rows through the group's first item, which every part carries anyway (``item_idx``: a filter
on items then decides for the whole group).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from queries.soft_label_walk import Walked

# Group keys up to this many combinations are ranked through a table of that size (a pass over the rows and
# one over the table); larger key spaces, many groups of items, sort the keys instead.
DENSE_KEYS = 1 << 22
SOFT_SOURCES = ("annotations", "posterior")


class Thresholds(NamedTuple):
    """soft_labels.Ambiguity's two thresholds."""

    top_share_below: float
    gap_below: float


class Posterior(NamedTuple):
    """A chunk's stored posterior level rows, in item order."""

    item: np.ndarray
    depth: np.ndarray
    entropy: np.ndarray
    top_share: np.ndarray
    gap: np.ndarray


def rank_keys(keys: Sequence[np.ndarray], size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Each row's rank among the distinct keys (integers in [0, size)) of all the parts, and those keys in
    increasing order."""
    if size <= DENSE_KEYS:
        seen = np.zeros(size, dtype=bool)
        for key in keys:
            seen[key] = True
        rank = np.cumsum(seen) - 1
        return [rank[key] for key in keys], np.flatnonzero(seen)
    distinct, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return np.split(inverse.reshape(-1), np.cumsum([key.size for key in keys])[:-1]), distinct


class _Groups(NamedTuple):
    """Rows that come in parts (answers and posterior), grouped without concatenating the parts."""

    index: list[np.ndarray]  # per part, each row's group
    keys: np.ndarray  # each group's combined key
    first_item: np.ndarray  # each group's smallest item index
    size: int


def _group(items: Sequence[np.ndarray], keys: Sequence[np.ndarray], size: int) -> _Groups:
    index, distinct = rank_keys(keys, size)
    first = np.full(distinct.size, np.iinfo(np.int64).max, dtype=np.int64)
    for item, at in zip(items, index, strict=True):
        np.minimum.at(first, at, item.astype(np.int64, copy=False))
    return _Groups(index, distinct, first, int(distinct.size))


def _sum(groups: _Groups, *values: np.ndarray) -> np.ndarray:
    """Per group, the sum of the values given per part."""
    return sum(
        (np.bincount(at, weights=v, minlength=groups.size) for at, v in zip(groups.index, values, strict=True)),
        np.zeros(groups.size),
    )


def _count(groups: _Groups, *where: np.ndarray | None) -> np.ndarray:
    """Per group, its rows (all of a part where its mask is None, or none given)."""
    masks = where or (None,) * len(groups.index)
    counts = np.zeros(groups.size, dtype=np.int64)
    for at, mask in zip(groups.index, masks, strict=True):
        counts += np.bincount(at if mask is None else at[mask], minlength=groups.size)
    return counts


def _names(codes: np.ndarray, names: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(names, pa.string()))


def level_parts(
    walked: Walked, tiers: list[str], item_group: np.ndarray, posterior: Posterior, amb: Thresholds
) -> pa.Table:
    """Level sums per (tier, soft source, depth, group) of a chunk's (item, tier) pairs as walked (item codes
    ``item * len(tiers) + tier``); the posterior rows count under every tier an item has answers of."""
    n_tiers = max(len(tiers), 1)  # no tiers: no rows either
    pseudo = np.asarray(walked.level_item, dtype=np.int64)
    item, tier = np.divmod(pseudo, n_tiers)
    pairs = np.flatnonzero(np.r_[pseudo.size > 0, pseudo[1:] != pseudo[:-1]])  # the walk's rows are in item order
    start = np.searchsorted(posterior.item, item[pairs], "left")
    per_pair = np.searchsorted(posterior.item, item[pairs], "right") - start
    rows = np.repeat(start - (np.cumsum(per_pair) - per_pair), per_pair) + np.arange(int(per_pair.sum()))
    n_depths = max(int(walked.level_depth.max(initial=0)), int(posterior.depth.max(initial=0))) + 1
    n_groups = int(item_group.max(initial=0)) + 1
    # The answers' rows, then the posterior's under each tier (soft source 1), as one key space.
    key = ((tier * 2) * n_depths + walked.level_depth) * n_groups + item_group[item]
    at_cut = posterior.depth * n_groups + item_group[posterior.item]
    posterior_key = (np.repeat(tier[pairs], per_pair) * 2 + 1) * (n_depths * n_groups) + at_cut[rows]
    groups = _group((item, posterior.item[rows]), (key, posterior_key), n_tiers * 2 * n_depths * n_groups)
    rest, _ = np.divmod(groups.keys, n_groups)
    rest, part_depth = np.divmod(rest, n_depths)
    part_tier, part_source = np.divmod(rest, 2)
    judged = np.asarray(walked.level_answers) >= 2
    ambiguous = (walked.top_share < amb.top_share_below) | (walked.gap < amb.gap_below)
    posterior_ambiguous = (posterior.top_share < amb.top_share_below) | (posterior.gap < amb.gap_below)
    return pa.table(
        {
            "tier": _names(part_tier, tiers),
            "soft_source": _names(part_source, list(SOFT_SOURCES)),
            "depth": part_depth,
            "item_idx": pa.array(groups.first_item, pa.int32()),
            "items": _count(groups),
            "s_entropy": _sum(groups, walked.entropy, posterior.entropy[rows]),
            "s_top_share": _sum(groups, walked.top_share, posterior.top_share[rows]),
            "s_gap": _sum(groups, walked.gap, posterior.gap[rows]),
            "judged": _count(groups, judged, None),  # posterior rows are always judged
            "ambiguous": _count(groups, judged & ambiguous, posterior_ambiguous[rows]),
        }
    )


def branch_parts(
    walked: Walked, tiers: list[str], item_group: np.ndarray, node_ids: list[str], children: np.ndarray,
    amb: Thresholds,
) -> pa.Table:
    """Branch sums per (tier, node, depth, group) of a chunk's (item, tier) pairs as walked; ``children`` is
    each node code's number of children, for the entropy normalised by its maximum."""
    n_tiers = max(len(tiers), 1)  # no tiers: no rows either
    row = walked.branch_row
    pseudo = np.asarray(walked.item[row], dtype=np.int64)
    item, tier = np.divmod(pseudo, n_tiers)
    node = np.asarray(walked.node[row], dtype=np.int64)
    depth = np.asarray(walked.depth[row], dtype=np.int64)
    mass = walked.mass[row]
    child = walked.has_children & (walked.child_answers >= 2)
    child_entropy = np.where(child, walked.child_entropy, 0.0)
    level = walked.branch_level_answers >= 2
    kids = children[node]
    norm = child & (kids >= 2)
    n_nodes, n_depths, n_groups = len(node_ids), int(depth.max(initial=0)) + 1, int(item_group.max(initial=0)) + 1
    key = ((tier * n_nodes + node) * n_depths + depth) * n_groups + item_group[item]
    groups = _group((item,), (key,), n_tiers * n_nodes * n_depths * n_groups)
    rest, _ = np.divmod(groups.keys, n_groups)
    rest, part_depth = np.divmod(rest, n_depths)
    part_tier, part_node = np.divmod(rest, n_nodes)
    n_child, n_norm = _count(groups, child), _count(groups, norm)
    ambiguous = child & ((walked.child_top_share < amb.top_share_below) | (walked.child_gap < amb.gap_below))
    return pa.table(
        {
            "tier": _names(part_tier, tiers),
            "node_id": _names(part_node, node_ids),
            "depth": part_depth,
            "item_idx": pa.array(groups.first_item, pa.int32()),
            "items": _count(groups),
            "s_mass": _sum(groups, mass),
            "n_child": n_child,
            # A sum over no rows is NULL, as SQL's sum ... FILTER gave it.
            "s_child_entropy": pa.array(_sum(groups, child_entropy), pa.float64(), mask=n_child == 0),
            "n_ambiguous": _count(groups, ambiguous),
            "n_level": _count(groups, level),
            "n_agree": _count(groups, level & (mass == 1) & (walked.leaves >= 2)),
            "n_disagree": _count(groups, level & (mass < 1)),
            "n_norm": n_norm,
            "s_norm": pa.array(
                _sum(groups, np.where(norm, child_entropy / np.log2(np.maximum(kids, 2)), 0.0)), pa.float64(),
                mask=n_norm == 0,
            ),
        }
    )
