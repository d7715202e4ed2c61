"""The tree view's stored cells (volumes and sibling pairs per group of items and tier) in one compiled walk.

Each pseudo-item (an item, or an item's answers of one tier) contributes, at every cut of the tree, its mass
at the cut's nodes (to the volume cells) and the ordered pairs of its answers between siblings (to the
confusion cells). As array operations that meant, per chunk of items and per depth, run detection, reductions
and a repeat-based expansion of every item's pairs; here each pseudo-item's few rows are walked once per
depth while they are in cache, and the sums go straight into tables: volumes per (cell, node), dense, and pairs
per (sibling pair, cell), where a sibling pair is one (first, second) of the children of one parent. A tree of
wide parents has many possible pairs and few of them answered together, so the pair table has a row per pair
seen, added as the walk meets them, rather than one per possible pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from queries import compiled_sums


@dataclass(frozen=True)
class SiblingPairs:
    """Every ordered pair of children of one parent (the top level's parent is 0), as dense codes."""

    first: np.ndarray  # per code: node code of the first child
    second: np.ndarray  # per code: node code of the second child
    offset: np.ndarray  # per parent node code: its first pair code
    position: np.ndarray  # per node code: its rank among its parent's children
    width: np.ndarray  # per parent node code: its number of children

    @property
    def size(self) -> int:
        return int(self.first.size)


@dataclass
class PairSums:
    """Sums per (cell, sibling pair seen): ``table[cell, slot_of[code]]``; columns beyond ``used`` are spare.

    A pseudo-item adds all its pairs to one cell, so a cell's pairs lie side by side: with the pairs as rows,
    each addition was a cache line of its own, thousands of cells apart, and the walk took a fifth longer."""

    slot_of: np.ndarray  # per pair code: its column of the table, -1 until seen
    table: np.ndarray
    used: int = 0

    @classmethod
    def empty(cls, codes: int, cells: int) -> PairSums:
        return cls(np.full(codes, -1, dtype=np.int64), np.zeros((cells, 64)))

    def codes(self) -> np.ndarray:
        """The pair code of each used column."""
        out = np.zeros(self.used, dtype=np.int64)
        seen = np.flatnonzero(self.slot_of >= 0)
        out[self.slot_of[seen]] = seen
        return out

    def merged(self, other: PairSums) -> PairSums:
        """Both tables' sums in one, a column per pair either has seen: walks that add into disjoint cells can
        then run side by side, each with its own table."""
        codes = np.union1d(self.codes(), other.codes())
        slot_of = np.full(self.slot_of.size, -1, dtype=np.int64)
        slot_of[codes] = np.arange(codes.size)
        table = np.zeros((self.table.shape[0], codes.size))
        for part in (self, other):
            table[:, slot_of[part.codes()]] += part.table[:, : part.used]
        return PairSums(slot_of, table, int(codes.size))


def sibling_pairs(parent: np.ndarray, node_depth: np.ndarray) -> SiblingPairs:
    """The pair codes of a tree given each node code's parent code (0: top level) and depth (0: no node)."""
    nodes = np.flatnonzero(node_depth > 0)
    k = parent.size
    width = np.bincount(parent[nodes], minlength=k)
    position = np.zeros(k, dtype=np.int64)
    seen = np.zeros(k, dtype=np.int64)
    for node in nodes:  # node codes in order: children ranked in code order
        position[node] = seen[parent[node]]
        seen[parent[node]] += 1
    offset = np.r_[0, np.cumsum(width * width)[:-1]]
    first = np.zeros(int((width * width).sum()), dtype=np.int64)
    second = np.zeros_like(first)
    for node in nodes:
        p = parent[node]
        for other in nodes[parent[nodes] == p]:
            code = offset[p] + position[node] * width[p] + position[other]
            first[code], second[code] = node, other
    return SiblingPairs(first, second, offset, position, width)


def walk(
    pseudo: np.ndarray,
    place: np.ndarray,
    n: np.ndarray,
    place_rank: np.ndarray,
    cell_of: np.ndarray,
    cut: np.ndarray,
    node_depth: np.ndarray,
    parent: np.ndarray,
    place_depth: np.ndarray,
    siblings: SiblingPairs,
    volume: np.ndarray,
    ambiguity: np.ndarray,
    items: np.ndarray,
    pairs: PairSums,
) -> None:
    """Adds the rows' volumes into ``volume``, ``ambiguity`` and ``items`` (cells x nodes) and their pairs into
    ``pairs``. A row is (pseudo-item, place, answers); ``cell_of[pseudo]`` is its cell."""
    pseudo = np.asarray(pseudo, dtype=np.int64)
    cell_of = np.asarray(cell_of, dtype=np.int64)
    order = compiled_sums.group_order(pseudo)
    pairs.table, pairs.used = _walk(
        pseudo[order], np.asarray(place, dtype=np.int64)[order], np.asarray(n, dtype=np.float64)[order],
        np.asarray(place_rank, dtype=np.int64), cell_of,
        np.ascontiguousarray(cut, dtype=np.int64), np.asarray(node_depth, dtype=np.int64),
        np.asarray(parent, dtype=np.int64), np.asarray(place_depth, dtype=np.int64), siblings.offset,
        siblings.position, siblings.width, volume, ambiguity, items, pairs.slot_of, pairs.table, pairs.used,
    )


@numba.njit(cache=True, nogil=True)
def _walk(
    pseudo: np.ndarray, place: np.ndarray, n: np.ndarray, place_rank: np.ndarray, cell_of: np.ndarray,
    cut: np.ndarray, node_depth: np.ndarray, parent: np.ndarray, place_depth: np.ndarray, offset: np.ndarray,
    position: np.ndarray, width: np.ndarray, volume: np.ndarray, ambiguity: np.ndarray, items: np.ndarray,
    slot_of: np.ndarray, pairs: np.ndarray, used: int,
) -> tuple[np.ndarray, int]:
    """Rows come grouped by pseudo-item. Within one, they are put in depth-first place order, so that at every
    cut the answers under one node, and the children of one parent, are runs of rows. d_answers holds one tree
    version, so a node has one parent and one place: the cut's parent of a child is the child's own."""
    depths = cut.shape[0]
    rows = np.empty(0, dtype=np.int64)
    run_node = np.empty(0, dtype=np.int64)
    run_sum = np.empty(0)
    run_place = np.empty(0, dtype=np.int64)
    run_up = np.empty(0, dtype=np.int64)
    run_kid = np.empty(0, dtype=np.int64)
    at = 0
    while at < pseudo.size:
        end = at
        while end < pseudo.size and pseudo[end] == pseudo[at]:
            end += 1
        m = end - at
        if rows.size < m:
            rows, run_node = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
            run_sum, run_place = np.empty(m), np.empty(m, dtype=np.int64)
            run_up, run_kid = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
        for q in range(m):  # an insertion sort by place rank: a pseudo-item has a few rows
            r = at + q
            j = q
            while j > 0 and place_rank[place[rows[j - 1]]] > place_rank[place[r]]:
                rows[j] = rows[j - 1]
                j -= 1
            rows[j] = r
        cell = cell_of[pseudo[at]]
        for d in range(depths):
            # Runs of one node of the cut at depth d + 1, and the pseudo-item's total there.
            runs = 0
            for q in range(m):
                c = cut[d, place[rows[q]]]
                if c <= 0:
                    continue
                if runs == 0 or run_node[runs - 1] != c:
                    run_node[runs], run_sum[runs], run_place[runs] = c, 0.0, place[rows[q]]
                    runs += 1
                run_sum[runs - 1] += n[rows[q]]
            total = 0.0
            for q in range(runs):
                total += run_sum[q]
            # Volumes: a node at its own depth only (a shallow leaf also stands in deeper cuts).
            for q in range(runs):
                node = run_node[q]
                if node_depth[node] == d + 1:
                    mass = run_sum[q] / total
                    volume[cell, node] += mass
                    ambiguity[cell, node] += 1.0 - mass
                    items[cell, node] += 1.0
            # Pairs: runs at or below this depth, grouped by their parent (consecutive runs of equal parent).
            kids = 0
            for q in range(runs):
                if place_depth[run_place[q]] >= d + 1:
                    run_up[kids] = cut[d - 1, run_place[q]] if d > 0 else 0
                    run_kid[kids] = q
                    kids += 1
            q = 0
            while q < kids:
                stop = q
                while stop < kids and run_up[stop] == run_up[q]:
                    stop += 1
                up = run_up[q]
                for i in range(q, stop):
                    a = run_kid[i]
                    for j in range(q, stop):
                        b = run_kid[j]
                        value = run_sum[a] * run_sum[b] - (run_sum[a] if a == b else 0.0)
                        if value == 0:
                            continue
                        code = offset[up] + position[run_node[a]] * width[up] + position[run_node[b]]
                        if slot_of[code] < 0:
                            if used == pairs.shape[1]:  # a full table doubles
                                bigger = np.zeros((pairs.shape[0], 2 * used))
                                bigger[:, :used] = pairs
                                pairs = bigger
                            slot_of[code] = used
                            used += 1
                        pairs[cell, slot_of[code]] += value
                q = stop
        at = end
    return pairs, used
