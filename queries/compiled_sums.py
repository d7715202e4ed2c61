"""Sums over the answers in one compiled pass each.

The statistics of a filtered page are sums over units (an item, or an item in a window: its answers
contiguous) or over (key, window) cells of small per-answer quantities. In numpy each step of such a
computation is a pass over every answer (compare neighbours, find run starts, gather, cumulative sums, pack
codes, bincount, per depth of the tree), and at millions of answers those passes, not the arithmetic, are the
cost of the page. numba compiles each loop once (cached beside the module) and walks the answers once. The
public functions give the loops fixed array types (int32 answer columns, int32 or int64 codes, float64 values),
so that each compiles once or twice rather than once per combination of the callers' integer widths.
"""

from __future__ import annotations

import numba
import numpy as np


def label_counts(
    item: np.ndarray, day: np.ndarray, value: np.ndarray, first_day: int, window_of_day: np.ndarray,
    ancestors: np.ndarray, depth: np.ndarray, parent: np.ndarray, n_windows: int, counts: np.ndarray,
    sum_y2: np.ndarray, sum_ym: np.ndarray, items: np.ndarray, sum_m2: np.ndarray,
) -> None:
    """drift.label_counts' sums, added into the cell arrays (see _label_counts)."""
    _label_counts(
        _int32(item), _int32(day), _int32(value), first_day, _int64(window_of_day), _int64(ancestors),
        _int64(depth), _int64(parent), n_windows, counts, sum_y2, sum_ym, items, sum_m2,
    )


def unit_keys(
    group: np.ndarray, item: np.ndarray, value: np.ndarray, salt: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (a run of equal group and item): its first row, its answers and its pattern hash (see
    _unit_keys)."""
    return _unit_keys(_codes(group), _int32(item), _int32(value), salt, _int64(count))


def window_sums(
    key: np.ndarray, day: np.ndarray, x: np.ndarray, first_day: int, window_of_day: np.ndarray, n_windows: int,
    n_keys: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (key, window) cell: rows, sum of x and sum of x^2, rows with NaN x or a negative key left out (see
    _window_sums)."""
    return _window_sums(
        _codes(key), _int32(day), np.asarray(x, dtype=np.float64), first_day, _int64(window_of_day), n_windows,
        n_keys,
    )


def _int32(column: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(column, dtype=np.int32)


def _int64(column: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(column, dtype=np.int64)


def _codes(column: np.ndarray) -> np.ndarray:
    """Group or key codes as they are when int32 or int64 (a node and a day packed together need 64 bits),
    else widened to int32: copying millions of narrow codes to int64 cost more than the loop."""
    return np.ascontiguousarray(column) if column.dtype in (np.int32, np.int64) else _int32(column)


@numba.njit(cache=True, nogil=True)
def _label_counts(
    item: np.ndarray,
    day: np.ndarray,
    value: np.ndarray,
    first_day: int,
    window_of_day: np.ndarray,
    ancestors: np.ndarray,
    depth: np.ndarray,
    parent: np.ndarray,
    n_windows: int,
    counts: np.ndarray,
    sum_y2: np.ndarray,
    sum_ym: np.ndarray,
    items: np.ndarray,
    sum_m2: np.ndarray,
) -> None:
    """drift.label_counts' sums, added into the cell arrays: per (item, window) unit and depth, y answers per child
    and m per branch (the child's parent) in scratch arrays indexed by node, then y, y^2, y m per (branch,
    window, child) and 1, m^2 per (branch, window). Linear in the answers; the order within a unit is free."""
    n_values = parent.size
    per_value = np.zeros(n_values, dtype=np.int64)  # the unit's answers per value
    distinct = np.empty(n_values, dtype=np.int64)
    y = np.zeros(n_values, dtype=np.int64)
    m = np.zeros(n_values + 1, dtype=np.int64)
    counted = np.zeros(n_values + 1, dtype=np.bool_)  # the branch's item and m^2 are added once per unit
    touched = np.empty(n_values, dtype=np.int64)
    low = 0
    size = item.size
    while low < size:
        high = low
        n_distinct = 0
        while high < size and item[high] == item[low] and day[high] == day[low]:
            v = value[high]
            if per_value[v] == 0:
                distinct[n_distinct] = v
                n_distinct += 1
            per_value[v] += 1
            high += 1
        window = window_of_day[day[low] - first_day]
        for d in range(ancestors.shape[0]):
            n_touched = 0
            for j in range(n_distinct):
                v = distinct[j]
                if depth[v] > d:
                    child = ancestors[d, v]
                    if y[child] == 0:
                        touched[n_touched] = child
                        n_touched += 1
                    y[child] += per_value[v]
                    m[parent[child]] += per_value[v]
            for t in range(n_touched):
                child = touched[t]
                branch = parent[child]
                cell = branch * n_windows + window
                if not counted[branch]:
                    counted[branch] = True
                    items[cell] += 1
                    sum_m2[cell] += m[branch] * m[branch]
                code = cell * n_values + child
                counts[code] += y[child]
                sum_y2[code] += y[child] * y[child]
                sum_ym[code] += y[child] * m[branch]
            for t in range(n_touched):
                child = touched[t]
                y[child] = 0
                m[parent[child]] = 0
                counted[parent[child]] = False
        for j in range(n_distinct):
            per_value[distinct[j]] = 0
        low = high


@numba.njit(cache=True, nogil=True)
def _unit_keys(
    group: np.ndarray, item: np.ndarray, value: np.ndarray, salt: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (a run of equal group and item): its first row, its answers and its pattern hash, the sum of
    salt[value] over its answers (wrapping uint64). ``count`` is each row's number of answers, or empty when
    a row is one answer. Two passes: the first only counts the units, so nothing as long as the rows is
    allocated."""
    size = item.size
    units = 0
    for i in range(size):
        if i == 0 or group[i] != group[i - 1] or item[i] != item[i - 1]:
            units += 1
    starts = np.empty(units, dtype=np.int64)
    answers = np.zeros(units, dtype=np.int64)
    keys = np.zeros(units, dtype=np.uint64)
    weighted = count.size > 0
    u = -1
    for i in range(size):
        if i == 0 or group[i] != group[i - 1] or item[i] != item[i - 1]:
            u += 1
            starts[u] = i
        n = count[i] if weighted else 1
        answers[u] += n
        keys[u] += salt[value[i]] * np.uint64(n)
    return starts, answers, keys


@numba.njit(cache=True, nogil=True)
def _window_sums(
    key: np.ndarray, day: np.ndarray, x: np.ndarray, first_day: int, window_of_day: np.ndarray, n_windows: int,
    n_keys: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (key, window) cell, code key * n_windows + window: the rows, the sum of x and the sum of x^2, rows
    whose x is NaN (a confidence not stated) or whose key is negative (none, as pandas codes a missing value)
    left out."""
    n = np.zeros(n_keys * n_windows, dtype=np.int64)
    total = np.zeros(n_keys * n_windows)
    squares = np.zeros(n_keys * n_windows)
    for i in range(key.size):
        value = np.float64(x[i])
        if value != value or key[i] < 0:
            continue
        cell = key[i] * n_windows + window_of_day[day[i] - first_day]
        n[cell] += 1
        total[cell] += value
        squares[cell] += value * value
    return n, total, squares
