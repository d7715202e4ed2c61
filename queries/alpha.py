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
    pairable = m >= 2
    unit_weight = np.zeros(m.size)
    unit_weight[pairable] = mult[pairable] / (m[pairable] - 1.0)
    n_c = np.bincount(value, weights=count * mult[item], minlength=n_values)
    n = n_c.sum()
    observed = observed_by_item(item, value, count, m.size, None if delta2 is None else np.asarray(delta2, float))
    disagreement_observed = float(np.dot(unit_weight, observed))
    if delta2 is None:
        disagreement_expected = (n * n - float(np.dot(n_c, n_c))) / (n - 1.0)
    else:
        disagreement_expected = float(n_c @ np.asarray(delta2, dtype=np.float64) @ n_c) / (n - 1.0)
    if disagreement_expected <= 0:
        return float("nan")
    return float(1.0 - disagreement_observed / disagreement_expected)


def observed_by_item(
    item: IntArray, value: IntArray, count: FloatArray, n_items: int, delta2: FloatArray | None = None
) -> FloatArray:
    """Per item, sum over ordered value pairs c != k of n_uc * n_uk * delta2_ck (not yet divided by m_u - 1).

    Kept per item so that any reweighting of items (a bootstrap replicate, a subgroup) is one dot
    product. Nominal needs no pairing: the sum is m_u^2 - sum_c n_uc^2. Otherwise the rows must be
    grouped by item; SQL delivers them sorted, so the sort here is skipped when they already are. The row
    ``shift`` places further down belongs to the same item while the item index matches, so each shift
    yields one batch of within-item pairs; items carry a handful of distinct values, so the loop runs a
    handful of times.
    """
    item = np.asarray(item, dtype=np.int64)
    count = np.asarray(count, dtype=np.float64)
    if delta2 is None:
        m = np.bincount(item, weights=count, minlength=n_items)
        return m * m - np.bincount(item, weights=count * count, minlength=n_items)
    value = np.asarray(value, dtype=np.int64)
    if item.size > 1 and bool((item[1:] < item[:-1]).any()):
        order = np.argsort(item, kind="stable")
        item, value, count = item[order], value[order], count[order]
    total = np.zeros(n_items)
    for shift in range(1, item.size):
        same = item[shift:] == item[:-shift]
        left = np.flatnonzero(same)
        if left.size == 0:
            break
        right = left + shift
        contribution = count[left] * count[right] * delta2[value[left], value[right]]
        total += 2.0 * np.bincount(item[left], weights=contribution, minlength=n_items)
    return total
