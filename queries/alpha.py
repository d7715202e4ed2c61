"""Krippendorff's alpha from per-item value counts, vectorised for tens of millions of answers.

Alpha is computed from the coincidence matrix, which only needs, for every item, how many times each
value was given (n_uc). Working from those counts instead of a units-by-coders matrix keeps memory
linear in the number of answers and lets DuckDB do the grouping in parallel. Optional per-item weights
make a bootstrap resample a reweighting rather than a copy of the data.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.integer]
FloatArray = npt.NDArray[np.floating]


def alpha_from_counts(
    item: IntArray,
    value: IntArray,
    count: npt.NDArray[np.number],
    n_values: int,
    delta2: FloatArray | None = None,
    item_weight: FloatArray | None = None,
) -> float:
    """Alpha for rows (item, value, n_uc), one row per distinct value per item.

    ``item`` must be dense indices 0..U-1 and ``value`` indices 0..n_values-1. ``delta2`` is the squared
    distance between values (None means nominal: 0 on the diagonal, 1 elsewhere). Items with fewer than
    two answers are not pairable and drop out, as in Krippendorff's definition. Returns NaN when there is
    no expected disagreement (every pairable answer has the same value).
    """
    item = np.asarray(item, dtype=np.int64)
    value = np.asarray(value, dtype=np.int64)
    count = np.asarray(count, dtype=np.float64)
    if item.size == 0:
        return float("nan")
    m = np.bincount(item, weights=count)
    keep = m[item] >= 2
    item, value, count = item[keep], value[keep], count[keep]
    if item.size == 0:
        return float("nan")
    mult = np.ones(m.size) if item_weight is None else np.asarray(item_weight, dtype=np.float64)
    pair_weight = mult[item] / (m[item] - 1.0)
    n_c = np.bincount(value, weights=count * mult[item], minlength=n_values)
    n = n_c.sum()
    if delta2 is None:
        observed_same = np.bincount(value, weights=count * (count - 1.0) * pair_weight, minlength=n_values).sum()
        disagreement_observed = n - observed_same
        disagreement_expected = (n * n - float(np.dot(n_c, n_c))) / (n - 1.0)
    else:
        delta2 = np.asarray(delta2, dtype=np.float64)
        disagreement_observed = _observed_off_diagonal(item, value, count, pair_weight, delta2)
        disagreement_expected = float(n_c @ delta2 @ n_c) / (n - 1.0)
    if disagreement_expected <= 0:
        return float("nan")
    return float(1.0 - disagreement_observed / disagreement_expected)


def _observed_off_diagonal(
    item: IntArray, value: IntArray, count: FloatArray, pair_weight: FloatArray, delta2: FloatArray
) -> float:
    """Sum of o_ck * delta2_ck over c != k, pairing the distinct values within each item.

    Rows are sorted by item; the row at offset ``s`` further down belongs to the same item while the
    item index matches, so each offset yields one batch of within-item pairs. Items carry only a
    handful of distinct values, so the loop runs a handful of times.
    """
    order = np.lexsort((value, item))
    item, value, count, pair_weight = item[order], value[order], count[order], pair_weight[order]
    total = 0.0
    for shift in range(1, item.size):
        same = item[shift:] == item[:-shift]
        if not same.any():
            break
        left = np.flatnonzero(same)
        right = left + shift
        contribution = count[left] * count[right] * pair_weight[left] * delta2[value[left], value[right]]
        total += 2.0 * float(contribution.sum())
    return total
