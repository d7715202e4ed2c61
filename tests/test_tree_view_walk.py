"""The tree view's compiled walk against a direct count on a flat tree of twelve leaves (144 sibling pairs,
more than the pair table's first allocation, so it grows)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from queries import tree_view_walk


def test_volumes_and_pairs_equal_a_direct_count() -> None:
    rng = np.random.default_rng(5)
    k = 13  # node codes 1..12 are leaves under the root; 0 is "none"
    parent = np.zeros(k, dtype=np.int64)
    depth = np.r_[0, np.ones(12, dtype=np.int64)]
    cut = np.arange(1, 13, dtype=np.int64)[None, :]  # place p is node p + 1
    siblings = tree_view_walk.sibling_pairs(parent, depth)
    assert siblings.size == 144
    pseudo, place, n = [], [], []
    for item in range(300):
        for leaf in rng.choice(12, size=int(rng.integers(1, 6)), replace=False):
            for _ in range(int(rng.integers(1, 3))):  # an (item, node) may come split over rows, as by tier
                pseudo.append(item)
                place.append(int(leaf))
                n.append(float(rng.integers(1, 4)))
    order = rng.permutation(len(pseudo))
    pseudo_a, place_a, n_a = (np.asarray(x)[order] for x in (pseudo, place, n))
    cell_of = rng.integers(0, 3, 300)
    volume, ambiguity, items = (np.zeros((3, k)) for _ in range(3))
    pairs = tree_view_walk.PairSums.empty(siblings.size, 3)
    tree_view_walk.walk(
        pseudo_a, place_a, n_a, np.arange(12), cell_of, cut, depth, parent, np.ones(12, dtype=np.int64), siblings,
        volume, ambiguity, items, pairs,
    )
    counts: dict[int, Counter[int]] = defaultdict(Counter)
    for i, p, c in zip(pseudo, place, n, strict=True):
        counts[i][p + 1] += c
    want_volume, want_ambiguity, want_items = (np.zeros((3, k)) for _ in range(3))
    want_pairs: Counter[tuple[int, int, int]] = Counter()
    for i, nodes in counts.items():
        total, cell = sum(nodes.values()), cell_of[i]
        for node, c in nodes.items():
            want_volume[cell, node] += c / total
            want_ambiguity[cell, node] += 1 - c / total
            want_items[cell, node] += 1
            for other, d in nodes.items():
                want_pairs[(cell, node, other)] += c * d - (c if node == other else 0)
    np.testing.assert_allclose(volume, want_volume, rtol=1e-12)
    np.testing.assert_allclose(ambiguity, want_ambiguity, rtol=1e-12)
    np.testing.assert_array_equal(items, want_items)
    cell, slot = np.nonzero(pairs.table[:, : pairs.used])
    code = pairs.codes()[slot]
    got = {
        (int(c), int(siblings.first[x]), int(siblings.second[x])): v
        for c, x, v in zip(cell, code, pairs.table[cell, slot], strict=True)
    }
    assert pairs.used > 64 and got == {key: v for key, v in want_pairs.items() if v}
