"""Every item's soft label at every cut of the tree, in one compiled walk over its weighted answers.

An item's answers reach a few nodes per cut (their ancestors at each depth). As array operations, rolling
them up meant expanding every row to every depth, sorting the expansion by (item, depth, node), and a dozen
reductions over the runs for the level statistics and again for the children of each branch: at ten
million answers those passes, not the arithmetic, were most of the refresh's soft-label step. Here each
item is gathered into a small dense table of its cells (depth, node), the table's cells are sorted, and
the mass rows, level rows and branch rows are written from it in the same order the array version
produced: by item, then depth, then node code. Sums run in that order too.

The walk runs twice per call: once to count the rows, once to fill arrays of exactly that size, which
keeps the peak memory at the output's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from queries import compiled_sums


@dataclass(frozen=True)
class Walked:
    """Rows of the three soft-label tables, as arrays in item, depth, node order."""

    # d_soft_mass: per item and cell
    item: np.ndarray
    node: np.ndarray
    depth: np.ndarray
    mass: np.ndarray
    answers: np.ndarray
    # d_soft_levels: per item and cut
    level_item: np.ndarray
    level_depth: np.ndarray
    level_answers: np.ndarray
    entropy: np.ndarray
    top_node: np.ndarray
    top_share: np.ndarray
    gap: np.ndarray
    # d_soft_branches: per item and internal node on its own cut; the child columns are valid where has_children
    branch_row: np.ndarray  # index into the mass rows
    branch_level_answers: np.ndarray
    has_children: np.ndarray
    child_answers: np.ndarray
    child_entropy: np.ndarray
    child_top_share: np.ndarray
    child_gap: np.ndarray
    leaves: np.ndarray


def walk(
    item: np.ndarray, place: np.ndarray, w: np.ndarray, answers: np.ndarray, cut: np.ndarray, ordinal: np.ndarray,
    node_depth: np.ndarray, parent: np.ndarray, is_leaf: np.ndarray, branches: bool,
) -> Walked:
    """Soft-label rows of weight rows (item, place, w, answers); ``cut[depth - 1, place]`` is the place's node
    code at each depth (0: none). Rows of one (item, place) may come split: they add up."""
    item = np.asarray(item, dtype=np.int64)
    order = compiled_sums.group_order(item)
    # Gathered once into item order, the walks read the rows sequentially: through the permutation, every
    # row was a cache miss in each of the two walks.
    rows = (
        item[order], np.asarray(place, dtype=np.int64)[order], np.asarray(w, dtype=np.float64)[order],
        np.asarray(answers, dtype=np.float64)[order],
    )
    del order
    tree = (
        np.ascontiguousarray(cut, dtype=np.int64), np.asarray(ordinal, dtype=np.int64),
        np.asarray(node_depth, dtype=np.int64), np.asarray(parent, dtype=np.int64), np.asarray(is_leaf, dtype=np.bool_),
    )
    n_mass, n_levels, n_branches = _walk(*rows, *tree, branches, *_outputs(0, 0, 0))
    out = _outputs(n_mass, n_levels, n_branches)
    _walk(*rows, *tree, branches, *out)
    return Walked(*out)


def _outputs(n_mass: int, n_levels: int, n_branches: int) -> tuple[np.ndarray, ...]:
    """Output arrays in the order of Walked's fields."""
    return (
        np.empty(n_mass, np.int64), np.empty(n_mass, np.int32), np.empty(n_mass, np.int64),
        np.empty(n_mass, np.float64), np.empty(n_mass, np.float64),
        np.empty(n_levels, np.int64), np.empty(n_levels, np.int64), np.empty(n_levels, np.float64),
        np.empty(n_levels, np.float64), np.empty(n_levels, np.int32), np.empty(n_levels, np.float64),
        np.empty(n_levels, np.float64),
        np.empty(n_branches, np.int64), np.empty(n_branches, np.float64), np.empty(n_branches, np.bool_),
        np.empty(n_branches, np.float64), np.empty(n_branches, np.float64), np.empty(n_branches, np.float64),
        np.empty(n_branches, np.float64), np.empty(n_branches, np.int64),
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _walk(
    item: np.ndarray, place: np.ndarray, w: np.ndarray, answers: np.ndarray, cut: np.ndarray,
    ordinal: np.ndarray, node_depth: np.ndarray, parent: np.ndarray, is_leaf: np.ndarray, branches: bool,
    m_item: np.ndarray, m_node: np.ndarray, m_depth: np.ndarray, m_mass: np.ndarray, m_answers: np.ndarray,
    l_item: np.ndarray, l_depth: np.ndarray, l_answers: np.ndarray, l_entropy: np.ndarray, l_top: np.ndarray,
    l_top_share: np.ndarray, l_gap: np.ndarray,
    b_row: np.ndarray, b_level_answers: np.ndarray, b_found: np.ndarray, b_child_answers: np.ndarray,
    b_child_entropy: np.ndarray, b_child_top: np.ndarray, b_child_gap: np.ndarray, b_leaves: np.ndarray,
) -> tuple[int, int, int]:
    """Counts the rows of each table (given empty outputs) or writes them (given outputs of those sizes).
    Rows come sorted by item."""
    depths, k = cut.shape[0], ordinal.size
    fill = m_item.size > 0 or l_item.size > 0
    s = np.zeros(depths * k)
    n = np.zeros(depths * k)
    seen = np.zeros(depths * k, dtype=np.bool_)
    cells = np.empty(depths * k, dtype=np.int64)
    mass = np.empty(depths * k)
    level_low = np.empty(depths, dtype=np.int64)
    level_high = np.empty(depths, dtype=np.int64)
    level_answers = np.empty(depths)
    n_mass = n_levels = n_branches = 0
    at = 0
    while at < item.size:
        it = item[at]
        m = 0
        while at < item.size and item[at] == it:
            for d in range(depths):
                c = cut[d, place[at]]
                if c > 0:
                    cell = d * k + c
                    if not seen[cell]:
                        seen[cell] = True
                        cells[m] = cell
                        m += 1
                    s[cell] += w[at]
                    n[cell] += answers[at]
            at += 1
        if not fill:  # counting: the cells, their cuts and the branches among them
            level_low[:] = 0
            for q in range(m):
                d, node = cells[q] // k, cells[q] % k
                level_low[d] = 1
                n_branches += branches and node_depth[node] == d + 1 and not is_leaf[node]
                s[cells[q]], n[cells[q]], seen[cells[q]] = 0.0, 0.0, False
            n_mass += m
            n_levels += level_low.sum()
            continue
        for q in range(1, m):  # an insertion sort: an item has a few cells, mostly in order already
            cell = cells[q]
            j = q
            while j > 0 and cells[j - 1] > cell:
                cells[j] = cells[j - 1]
                j -= 1
            cells[j] = cell
        level_low[:] = -1
        # Per cut: the level's total, each cell's share, entropy, the top cell (ties to the first in tree order).
        a = 0
        while a < m:
            d = cells[a] // k
            b = a
            total = 0.0
            counted = 0.0
            while b < m and cells[b] // k == d:
                total += s[cells[b]]
                counted += n[cells[b]]
                b += 1
            level_low[d], level_high[d], level_answers[d] = n_mass, n_mass + b - a, counted
            spread = 0.0
            top = a
            for q in range(a, b):
                mass[q] = s[cells[q]] / total
                if 0 < mass[q] < 1:
                    spread += mass[q] * np.log2(mass[q])
                node, best = cells[q] % k, cells[top] % k
                if mass[q] > mass[top] or (mass[q] == mass[top] and ordinal[node] < ordinal[best]):
                    top = q
            runner = -np.inf
            for q in range(a, b):
                if q != top and mass[q] > runner:
                    runner = mass[q]
            if b - a == 1:
                runner = 0.0
            l_item[n_levels], l_depth[n_levels], l_answers[n_levels] = it, d + 1, counted
            l_entropy[n_levels] = max(0.0, -spread)
            l_top[n_levels], l_top_share[n_levels], l_gap[n_levels] = cells[top] % k, mass[top], mass[top] - runner
            for q in range(a, b):
                row = n_mass + q - a
                m_item[row], m_node[row], m_depth[row] = it, cells[q] % k, d + 1
                m_mass[row], m_answers[row] = mass[q], n[cells[q]]
            n_levels += 1
            n_mass += b - a
            a = b
        if branches:
            first = n_mass - m  # this item's first mass row
            leaves = 0 if level_low[depths - 1] < 0 else level_high[depths - 1] - level_low[depths - 1]
            for q in range(m):
                d, node = cells[q] // k, cells[q] % k
                if node_depth[node] != d + 1 or is_leaf[node]:
                    continue
                # Its children: cells of the next cut on their own depth under this node, in node order.
                total = spread = counted = 0.0
                top = runner = -np.inf
                kids = 0
                if d + 1 < depths and level_low[d + 1] >= 0:
                    for row in range(level_low[d + 1], level_high[d + 1]):
                        kq = row - first
                        kid = cells[kq] % k
                        if node_depth[kid] != d + 2 or parent[kid] != node:
                            continue
                        kids += 1
                        total += mass[kq]
                        counted += n[cells[kq]]
                        if 0 < mass[kq] < 1:
                            spread += mass[kq] * np.log2(mass[kq])
                        if mass[kq] > top:
                            runner, top = top, mass[kq]
                        elif mass[kq] > runner:
                            runner = mass[kq]
                b_row[n_branches] = first + q
                b_level_answers[n_branches], b_leaves[n_branches] = level_answers[d], leaves
                b_found[n_branches] = kids > 0
                if kids:
                    runner = runner if kids > 1 else 0.0
                    b_child_answers[n_branches] = counted
                    b_child_entropy[n_branches] = max(0.0, np.log2(total) - spread / total)
                    b_child_top[n_branches], b_child_gap[n_branches] = top / total, (top - runner) / total
                n_branches += 1
        for q in range(m):
            s[cells[q]] = 0.0
            n[cells[q]] = 0.0
            seen[cells[q]] = False
    return n_mass, n_levels, n_branches
