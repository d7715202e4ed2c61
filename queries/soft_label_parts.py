"""The soft-label sums refresh stores per group of items, added up from each chunk's walk.

Pages read sums per group of items (the same consensus node, source and segment), over every answer and per
annotator tier (see soft_labels: ``SUMMARIES`` and ``TIER_PARTS``). They were GROUP BYs: the tier sums over each
chunk's walked rows, handed to DuckDB as Arrow and joined to the chunk's items, about half a second a chunk at ten
million answers (more than the walk that made the rows), and the all-tier sums over the whole stored tables. The
groups are few (the tier, the depth or node, and the group of items), so here each row's group is a dense integer
code and one compiled pass adds the rows up. Each sum row carries its group's code and first item (``item_idx``:
a filter on items then decides for the whole group); the group's attributes are joined to the few thousand rows
afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from queries import compiled_sums, frame_writes
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


class _Part(NamedTuple):
    """Rows of one part (the answers, or the posterior): each row's key and the row of ``item``, ``sums`` (values
    to add, rows x columns) and ``counts`` (0/1 flags) it is; a posterior row counts once per tier."""

    key: np.ndarray
    rows: np.ndarray
    item: np.ndarray
    sums: np.ndarray
    counts: np.ndarray


class _Summed(NamedTuple):
    """Per group, in the order of its key: rows, smallest item, column sums and flag counts."""

    keys: np.ndarray
    rows: np.ndarray
    first_item: np.ndarray
    sums: np.ndarray
    counts: np.ndarray

    def sum(self, column: int) -> np.ndarray:
        return np.ascontiguousarray(self.sums[:, column])

    def count(self, column: int) -> np.ndarray:
        return np.ascontiguousarray(self.counts[:, column])


def _summed(parts: Sequence[_Part], size: int) -> _Summed:
    """The parts' rows added up by key, in one compiled pass per part (not a bincount per column)."""
    index, keys = rank_keys([part.key for part in parts], size)
    n = keys.size
    out = (
        np.zeros(n, dtype=np.int64), np.full(n, np.iinfo(np.int64).max, dtype=np.int64),
        np.zeros((n, parts[0].sums.shape[1])), np.zeros((n, parts[0].counts.shape[1]), dtype=np.int64),
    )
    for part, at in zip(parts, index, strict=True):
        compiled_sums.group_sums(at, part.rows, part.item, part.sums, part.counts, out)
    return _Summed(keys, *out)


def level_parts(
    walked: Walked, tiers: list[str], item_group: np.ndarray, posterior: Posterior, amb: Thresholds
) -> pa.Table:
    """Level sums per (tier, soft source, depth, group) of a chunk's (item, tier) pairs as walked (item codes
    ``item * len(tiers) + tier``); the posterior rows count under every tier an item has answers of."""
    n_tiers = max(len(tiers), 1)  # no tiers: no rows either
    pseudo = np.asarray(walked.level_item, dtype=np.int64)
    item, tier = np.divmod(pseudo, n_tiers)
    pairs = np.flatnonzero(np.r_[pseudo.size > 0, pseudo[1:] != pseudo[:-1]])  # the walk's rows are in item order
    per_item = np.bincount(posterior.item, minlength=int(item.max(initial=-1)) + 1)
    start, per_pair = (np.cumsum(per_item) - per_item)[item[pairs]], per_item[item[pairs]]
    rows = np.repeat(start - (np.cumsum(per_pair) - per_pair), per_pair) + np.arange(int(per_pair.sum()))
    n_depths = max(int(walked.level_depth.max(initial=0)), int(posterior.depth.max(initial=0))) + 1
    n_groups = int(item_group.max(initial=0)) + 1
    # The answers' rows, then the posterior's under each tier (soft source 1), as one key space.
    key = ((tier * 2) * n_depths + walked.level_depth) * n_groups + item_group[item]
    at_cut = posterior.depth * n_groups + item_group[posterior.item]
    posterior_key = (np.repeat(tier[pairs], per_pair) * 2 + 1) * (n_depths * n_groups) + at_cut[rows]
    judged = np.asarray(walked.level_answers) >= 2  # posterior rows are always judged
    ambiguous = (walked.top_share < amb.top_share_below) | (walked.gap < amb.gap_below)
    posterior_ambiguous = (posterior.top_share < amb.top_share_below) | (posterior.gap < amb.gap_below)
    summed = _summed(
        (
            _Part(key, np.arange(key.size), item, np.column_stack([walked.entropy, walked.top_share, walked.gap]),
                  np.column_stack([judged, judged & ambiguous])),
            _Part(posterior_key, rows, posterior.item,
                  np.column_stack([posterior.entropy, posterior.top_share, posterior.gap]),
                  np.column_stack([np.ones(posterior.item.size, dtype=bool), posterior_ambiguous])),
        ),
        n_tiers * 2 * n_depths * n_groups,
    )
    rest, part_group = np.divmod(summed.keys, n_groups)
    rest, part_depth = np.divmod(rest, n_depths)
    part_tier, part_source = np.divmod(rest, 2)
    return pa.table(
        {
            "tier": frame_writes.dictionary(part_tier, tiers),
            "soft_source": frame_writes.dictionary(part_source, list(SOFT_SOURCES)),
            "depth": part_depth,
            "group_code": part_group,
            "item_idx": pa.array(summed.first_item, pa.int32()),
            "items": summed.rows,
            "s_entropy": summed.sum(0),
            "s_top_share": summed.sum(1),
            "s_gap": summed.sum(2),
            "judged": summed.count(0),
            "ambiguous": summed.count(1),
        }
    )


def branch_parts(
    walked: Walked, tiers: list[str], item_group: np.ndarray, node_ids: np.ndarray, children: np.ndarray,
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
    ambiguous = child & ((walked.child_top_share < amb.top_share_below) | (walked.child_gap < amb.gap_below))
    normalised = np.where(norm, child_entropy / np.log2(np.maximum(kids, 2)), 0.0)
    agree, disagree = level & (mass == 1) & (walked.leaves >= 2), level & (mass < 1)
    summed = _summed(
        (
            _Part(
                key, np.arange(key.size), item, np.column_stack([mass, child_entropy, normalised]),
                np.column_stack([child, ambiguous, level, agree, disagree, norm]),
            ),
        ),
        n_tiers * n_nodes * n_depths * n_groups,
    )
    rest, part_group = np.divmod(summed.keys, n_groups)
    rest, part_depth = np.divmod(rest, n_depths)
    part_tier, part_node = np.divmod(rest, n_nodes)
    n_child, n_norm = summed.count(0), summed.count(5)
    return pa.table(
        {
            "tier": frame_writes.dictionary(part_tier, tiers),
            "node_id": frame_writes.dictionary(part_node, node_ids),
            "depth": part_depth,
            "group_code": part_group,
            "item_idx": pa.array(summed.first_item, pa.int32()),
            "items": summed.rows,
            "s_mass": summed.sum(0),
            "n_child": n_child,
            # A sum over no rows is NULL, as SQL's sum ... FILTER gave it.
            "s_child_entropy": pa.array(summed.sum(1), pa.float64(), mask=n_child == 0),
            "n_ambiguous": summed.count(1),
            "n_level": summed.count(2),
            "n_agree": summed.count(3),
            "n_disagree": summed.count(4),
            "n_norm": n_norm,
            "s_norm": pa.array(summed.sum(2), pa.float64(), mask=n_norm == 0),
        }
    )
