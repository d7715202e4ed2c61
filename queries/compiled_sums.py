"""Sums over the answers in one compiled pass each.

The statistics of a filtered page are sums over units (an item, or an item in a window: its answers
contiguous) or over (key, window) cells of small per-answer quantities. In numpy each step of such a
computation is a pass over every answer (compare neighbours, find run starts, gather, cumulative sums, pack
codes, bincount, per depth of the tree), and at millions of answers those passes, not the arithmetic, are the
cost of the page. numba compiles each loop once (cached beside the module) and walks the answers once. The
public functions give the loops fixed array types (int32 answer columns, int32 or int64 codes, float64 values),
so that each compiles once or twice rather than once per combination of the callers' integer widths. The
orderings and selections such sums need (a counting sort by item, medians and pluralities per key) are here too.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numba
import numpy as np

T = TypeVar("T")


def label_counts(
    item: np.ndarray, day: np.ndarray, value: np.ndarray, weight: np.ndarray | None, first_day: int,
    window_of_day: np.ndarray, ancestors: np.ndarray, depth: np.ndarray, parent: np.ndarray, n_windows: int,
) -> tuple[np.ndarray, ...]:
    """drift.label_counts' sums: counts, sum y^2 and sum y m per (branch, window, child), as branches x windows x
    children arrays, and items and sum m^2 per (branch, window), as branches x windows arrays (see
    _label_counts; branch codes are node indices and the root as the last); ``weight``: the answers of each row
    (see runs), None for one each. Whole items go to one of two threads."""
    arrays = (_int32(item), _int32(day), _int32(value), _weights(weight, item.size))
    tables = (_int64(window_of_day), _int64(ancestors), _int64(depth), _int64(parent))
    n_values = parent.size
    n_cells = (n_values + 1) * n_windows

    def run(low: int, high: int) -> tuple[np.ndarray, ...]:
        out = (np.zeros(n_cells * n_values * 3), np.zeros(n_cells * 2))
        _label_counts(*(a[low:high] for a in arrays), first_day, *tables, n_windows, *out)
        return out

    middle = int(np.searchsorted(arrays[0], arrays[0][item.size // 2])) if item.size else 0
    by_child, by_cell = _halves(run, item.size, middle)
    # Stored window-major with a cell's sums side by side (see _label_counts); handed out branch-major.
    by_child = by_child.reshape(n_windows, n_values + 1, n_values, 3).transpose(1, 0, 2, 3)
    by_cell = by_cell.reshape(n_windows, n_values + 1, 2).transpose(1, 0, 2)
    return by_child[..., 0], by_child[..., 1], by_child[..., 2], by_cell[..., 0], by_cell[..., 1]


def runs(item: np.ndarray, day: np.ndarray | None, value: np.ndarray) -> tuple[np.ndarray, ...]:
    """Answers sorted by item, day and value as runs of equal item, day and value: each run's item, day (None
    without ``day``) and value, and its answers, as int32 arrays. The walks over units (label_counts, unit_sums,
    unit_spread) then visit each value of a unit once: a unit's answers mostly repeat a few values (a filtered
    drift question's five million answers are two and a half million runs), and the walk, a branch on every
    row, cost more than the statistics. The arrays are views of buffers as long as the answers."""
    size = item.size
    out = [np.empty(size, dtype=np.int32) for _ in range(3)]
    weight = np.zeros(size, dtype=np.int32)
    # Read at their own widths (the held answers' are narrow): widening copies cost more than the walk.
    columns = (np.ascontiguousarray(c) for c in (item, item if day is None else day, value))
    n = _runs(*columns, *out, weight)
    run_item, run_day, run_value = (column[:n] for column in out)
    return run_item, None if day is None else run_day, run_value, weight[:n]


@numba.njit(cache=True, nogil=True)
def _runs(
    item: np.ndarray, day: np.ndarray, value: np.ndarray, out_item: np.ndarray, out_day: np.ndarray,
    out_value: np.ndarray, weight: np.ndarray,
) -> int:
    """Every row is written to its run's slot without a branch (a run ends every other row in no pattern)."""
    if item.size == 0:
        return 0
    r = 0
    for i in range(item.size):
        r += (i > 0) & ((item[i] != item[i - 1]) | (day[i] != day[i - 1]) | (value[i] != value[i - 1]))
        out_item[r], out_day[r], out_value[r] = item[i], day[i], value[i]
        weight[r] += 1
    return r + 1


def _weights(weight: np.ndarray | None, size: int) -> np.ndarray:
    """Rows' answer counts as the loops take them: empty for one answer a row (no array of ones to read)."""
    if weight is None:
        return np.zeros(0, dtype=np.int32)
    if weight.size != size:
        raise ValueError("one weight per row")
    return _int32(weight)


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


def day_windows(day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct window-start days present, sorted, and for each day from the first its window's index (-1:
    none): grouping answers by window is then an indexing, where numpy needed an offset copy of every day and
    a bincount over it."""
    if day.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return _day_windows(np.ascontiguousarray(day))


@numba.njit(cache=True, nogil=True)
def _day_windows(day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first, last = np.int64(day[0]), np.int64(day[0])
    for d in day:
        first, last = min(first, np.int64(d)), max(last, np.int64(d))
    window_of_day = np.full(last - first + 1, -1, dtype=np.int64)
    for d in day:
        window_of_day[d - first] = 0
    n_windows = 0
    for k in range(window_of_day.size):
        if window_of_day[k] == 0:
            window_of_day[k] = n_windows
            n_windows += 1
    days = np.empty(n_windows, dtype=np.int64)
    for k in range(window_of_day.size):
        if window_of_day[k] >= 0:
            days[window_of_day[k]] = first + k
    return days, window_of_day


def answer_week_sums(
    item: np.ndarray, value: np.ndarray, day: np.ndarray, annotator: np.ndarray | None,
    confidence: np.ndarray | None, top_of_value: np.ndarray, consensus: np.ndarray, levels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drift's per-week sums over the answers themselves, in one pass where a gather, a comparison and a
    grouping each walked every answer: the window days present (sorted); per (top-level branch of the answer's
    value, window) the stated confidences' count, sum and sum of squares (``confidence`` None: no rows; with
    ``levels``, positions in them); per (annotator, window) the answers and those equal to their item's
    ``consensus`` (``annotator`` None: no rows); and which items have an answer. The columns keep their own
    integer widths: copying millions of narrow codes to a common width cost more than the loop."""
    n_items = int(item.max(initial=-1)) + 1
    consensus = _int64(consensus)
    if annotator is not None and consensus.size < n_items:
        raise ValueError("the consensus table does not cover every item")
    days, window_of_day = day_windows(day)
    first = int(days[0]) if days.size else 0
    sums = _answer_week_sums(
        np.ascontiguousarray(item), np.ascontiguousarray(value), np.ascontiguousarray(day),
        np.ascontiguousarray(annotator if annotator is not None else np.zeros(0, dtype=day.dtype)),
        np.zeros(0) if confidence is None else np.ascontiguousarray(confidence),
        np.zeros(0) if levels is None else np.asarray(levels, dtype=np.float64),
        _int64(top_of_value), consensus, n_items, first, window_of_day, days.size,
    )
    return days, *sums


@numba.njit(cache=True, nogil=True)
def _answer_week_sums(
    item: np.ndarray, value: np.ndarray, day: np.ndarray, annotator: np.ndarray, confidence: np.ndarray,
    levels: np.ndarray, top_of_value: np.ndarray, consensus: np.ndarray, n_items: int, first: int,
    window_of_day: np.ndarray, n_windows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows with a NaN confidence (not stated), a negative value or a negative annotator (none) count nowhere
    in the sums they lack. With ``levels`` each confidence is a position in them, and the rows are only counted
    per (cell, position), the sums taken from the counts at the end: an increment per row instead of three
    additions of doubles."""
    n_top = np.int64(top_of_value.max()) + 1 if confidence.size else 0
    n_annotators = 0
    for a in annotator:
        n_annotators = max(n_annotators, np.int64(a) + 1)
    stated = np.zeros(n_top * n_windows * 3)
    n_slots = levels.size + 1  # the last slot: rows without a value, counted nowhere
    tally = np.zeros(n_top * n_windows * n_slots if levels.size else 0, dtype=np.int64)
    agreed = np.zeros(n_annotators * n_windows * 2, dtype=np.int64)
    seen = np.zeros(n_items, dtype=np.bool_)
    for i in range(item.size):
        it, v, w = item[i], value[i], window_of_day[day[i] - first]
        seen[it] = True
        if levels.size:
            slot = np.int64(confidence[i]) if v >= 0 else levels.size
            tally[(top_of_value[max(v, 0)] * n_windows + w) * n_slots + slot] += 1
        elif confidence.size:
            # Added as zero when not stated, not branched on: half the answers state none, in no pattern, and a
            # mispredicted branch at every other answer cost more than the additions.
            c = np.float64(confidence[i])
            stated_here = (c == c) and v >= 0
            c = c if stated_here else 0.0
            cell = (top_of_value[max(v, 0)] * n_windows + w) * 3  # a cell's sums side by side: one cache line
            stated[cell] += 1.0 if stated_here else 0.0
            stated[cell + 1] += c
            stated[cell + 2] += c * c
        if annotator.size and annotator[i] >= 0:
            slot = (np.int64(annotator[i]) * n_windows + w) * 2
            agreed[slot] += 1
            agreed[slot + 1] += consensus[it] == v
    for cell in range(tally.size // n_slots if levels.size else 0):
        for slot in range(levels.size):
            c, rows = levels[slot], tally[cell * n_slots + slot]
            if c == c and rows:
                stated[cell * 3] += rows
                stated[cell * 3 + 1] += rows * c
                stated[cell * 3 + 2] += rows * c * c
    return stated.reshape((n_top, n_windows, 3)), agreed.reshape((n_annotators, n_windows, 2)), seen


def compress(keep: np.ndarray, columns: list[np.ndarray]) -> list[np.ndarray]:
    """``column[keep]`` of each column: the rows a filter keeps out of ten million, copied without a branch per
    row (a filter on annotators or tiers keeps rows scattered through the answers, where a branch is
    mispredicted at every other row) and without numpy's index array of the kept rows. The rows are split in
    two halves, each copied on its own thread into its own part of the output (the copy releases the GIL)."""
    # A row's value is written before it is known to be kept, so a run that ends on a dropped row writes one
    # past its kept rows: the first half ends just after a kept row, so as not to write into the second's start.
    before = keep[: keep.size // 2][::-1]
    middle = keep.size // 2 - int(np.argmax(before)) if before.any() else 0
    first = int(np.count_nonzero(keep[:middle]))
    kept = first + int(np.count_nonzero(keep[middle:]))
    outs = [np.empty(kept + 1, dtype=column.dtype) for column in columns]
    sources = [np.ascontiguousarray(column) for column in columns]

    def run(low: int, high: int, at: int) -> None:
        for column, out in zip(sources, outs, strict=True):
            _compress(keep[low:high], column[low:high], out[at:])

    if keep.size < SPLIT_UNITS:
        run(0, keep.size, 0)
    else:
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(run, middle, keep.size, first)
            run(0, middle, 0)
            second.result()
    return [out[:kept] for out in outs]


@numba.njit(cache=True, nogil=True)
def _compress(keep: np.ndarray, column: np.ndarray, out: np.ndarray) -> None:
    j = 0
    for i in range(keep.size):
        out[j] = column[i]
        j += keep[i]


def by_item(item: np.ndarray, n_items: int, columns: dict[str, np.ndarray]) -> np.ndarray:
    """Group rows by item, for walks that take an item's answers together out of a table stored in no order:
    returns where each item's rows start (``n_items`` + 1 bounds) and replaces each of ``columns`` by its rows in
    that order. A counting sort (see group_order); the columns are reordered one at a time, so that only one
    exists twice (refresh runs this beside the model fit, under its memory budget)."""
    order = np.empty(item.size, dtype=np.int32 if item.size < np.iinfo(np.int32).max else np.int64)
    start = _counting_sort(_codes(item), 0, n_items, order)
    for name in list(columns):
        columns[name] = np.take(columns[name], order)
    return start


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
    weight: np.ndarray,
    first_day: int,
    window_of_day: np.ndarray,
    ancestors: np.ndarray,
    depth: np.ndarray,
    parent: np.ndarray,
    n_windows: int,
    by_child: np.ndarray,
    by_cell: np.ndarray,
) -> None:
    """drift.label_counts' sums, added into the cell arrays: per (item, window) unit and depth, y answers per child
    and m per branch (the child's parent) in scratch arrays indexed by node, then y, y^2, y m per (branch,
    window, child) into ``by_child`` and 1, m^2 per (branch, window) into ``by_cell``. Linear in the answers;
    the order within a unit is free. Cells are numbered window-major, each cell's sums side by side: a unit
    adds to the cells of one window, so its additions land close together and a triple in one cache line (with
    three arrays by branch, the cells of one unit lay a window's stride apart in each)."""
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
            per_value[v] += weight[high] if weight.size else 1
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
                cell = window * (n_values + 1) + branch
                if not counted[branch]:
                    counted[branch] = True
                    by_cell[cell * 2] += 1
                    by_cell[cell * 2 + 1] += m[branch] * m[branch]
                code = (cell * n_values + child) * 3
                by_child[code] += y[child]
                by_child[code + 1] += y[child] * y[child]
                by_child[code + 2] += y[child] * m[branch]
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



def unit_bounds(item: np.ndarray, day: np.ndarray | None, weight: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Where each unit's rows start, and the row count at the end: a unit is a run of equal item, and of equal
    day too when ``day`` is given; and the most answers in one unit (rows weighing ``weight`` answers each, see
    runs), found in the same walk."""
    item = _int32(item)
    return _unit_bounds(item, _int32(item if day is None else day), day is not None, _weights(weight, item.size))


def unit_sums(
    value: np.ndarray, weight: np.ndarray | None, bounds: np.ndarray, group: np.ndarray, pass_row: np.ndarray,
    seen: np.ndarray, n_groups: int, delta2: np.ndarray, width: int, full: bool = True,
) -> tuple[np.ndarray, ...]:
    """Per group: the sums alpha, percent agreement and Fleiss' modal count need (see _unit_sums); without
    ``full`` only those of nominal alpha. ``weight``: the answers of each row (see runs), None for one each;
    ``width`` exceeds every unit's answers."""
    arrays = (
        _int32(value), _weights(weight, value.size), _int64(bounds), _int32(group), _int64(pass_row), _int64(seen)
    )
    return _halves(
        lambda lo, hi: _unit_sums(*arrays, lo, hi, n_groups, np.asarray(delta2, dtype=np.float64), width, full),
        bounds.size - 1,
    )


def unit_spread(
    value: np.ndarray, weight: np.ndarray | None, bounds: np.ndarray, group: np.ndarray, pass_row: np.ndarray,
    seen: np.ndarray, tree: bool, delta2: np.ndarray, dot: np.ndarray, group_terms: np.ndarray, modal: np.ndarray,
    fleiss: bool = True,
) -> tuple[np.ndarray, ...]:
    """Per group: sums of the units' influence on alpha and of its square, and the sums over the units with
    the modal answer count that Fleiss' kappa reads (see _unit_spread; left at zero without ``fleiss``); rows
    and ``weight`` as in unit_sums."""
    arrays = (
        _int32(value), _weights(weight, value.size), _int64(bounds), _int32(group), _int64(pass_row), _int64(seen)
    )
    terms = (
        np.asarray(delta2, dtype=np.float64), np.ascontiguousarray(dot, dtype=np.float64),
        np.ascontiguousarray(group_terms, dtype=np.float64), _int64(modal),
    )
    return _halves(lambda lo, hi: _unit_spread(*arrays, lo, hi, tree, *terms, fleiss), bounds.size - 1)



def branch_groups(unit_item: np.ndarray, window: np.ndarray, consensus: np.ndarray, branches: np.ndarray) -> np.ndarray:
    """Per depth and unit, the unit's branch group (see _branch_groups)."""
    return _branch_groups(_int32(unit_item), _int32(window), _int64(consensus), _int64(branches))

# Units or rows below which splitting a pass over them between two threads costs more than it saves.
SPLIT_UNITS = 100_000


def _halves(
    run: Callable[[int, int], tuple[np.ndarray, ...]], size: int, middle: int | None = None
) -> tuple[np.ndarray, ...]:
    """``run`` over [0, size) as two halves, split at ``middle`` (default the middle), on two threads, its
    per-cell sums added: the loops release the GIL, and a page's question is otherwise one core's work while
    the other waits."""
    if size < SPLIT_UNITS:
        return run(0, size)
    half = size // 2 if middle is None else middle
    with ThreadPoolExecutor(max_workers=1) as pool:
        second = pool.submit(run, half, size)
        first = run(0, half)
        return tuple(a + b for a, b in zip(first, second.result(), strict=True))


@numba.njit(cache=True, nogil=True)
def _unit_bounds(item: np.ndarray, day: np.ndarray, by_day: bool, weight: np.ndarray) -> tuple[np.ndarray, int]:
    """Counted, then written, without a branch per row: a unit starts every few rows in no pattern, and a
    mispredicted branch there cost more than the comparisons."""
    units = 1 if item.size else 0
    for i in range(1, item.size):
        units += (item[i] != item[i - 1]) | (by_day & (day[i] != day[i - 1]))
    bounds = np.empty(units + 1, dtype=np.int64)
    bounds[0] = 0
    u = 1 if item.size else 0
    size = weight[0] if weight.size else 1  # the answers of the unit so far
    widest = size if item.size else 0
    for i in range(1, item.size):
        bounds[u] = i  # kept only when row i starts a unit: the next start overwrites it otherwise
        start = (item[i] != item[i - 1]) | (by_day & (day[i] != day[i - 1]))
        u += start
        size = (0 if start else size) + (weight[i] if weight.size else 1)
        widest = max(widest, size)
    bounds[units] = item.size
    return bounds, widest


@numba.njit(cache=True, nogil=True)
def _scratch(n_values: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit counts by own value and their distinct values (one slot more: _own_counts writes a row's value
    before it knows it is new), then the same as a pass sees them."""
    return (
        np.zeros(n_values, dtype=np.int64),
        np.empty(n_values + 1, dtype=np.int64),
        np.zeros(n_values, dtype=np.int64),
        np.empty(n_values, dtype=np.int64),
    )


@numba.njit(cache=True, nogil=True)
def _own_counts(
    low: int, high: int, value: np.ndarray, weight: np.ndarray, count: np.ndarray, distinct: np.ndarray
) -> int:
    """The unit's answers per own value into ``count`` (zero on entry), its distinct values into ``distinct``;
    returns how many distinct values. Rows are answers, or runs of answers with their count in ``weight`` (see
    runs). Without a branch per row: each row's value is written as the next distinct one, which counts only
    when the value is new."""
    n_distinct = 0
    for r in range(low, high):
        v = value[r]
        distinct[n_distinct] = v
        n_distinct += count[v] == 0
        count[v] += weight[r] if weight.size else 1
    return n_distinct


@numba.njit(cache=True, nogil=True)
def _seen_counts(
    n_own: int, own: np.ndarray, own_distinct: np.ndarray, seen: np.ndarray, row: int, count: np.ndarray,
    distinct: np.ndarray,
) -> tuple[int, int]:
    """The unit's answers per value as one pass sees them (seen[row]: own value -> seen value, -1 drops the
    answer) into ``count`` (zero on entry) and ``distinct``; returns (distinct values, answers)."""
    n_distinct = 0
    m = 0
    for a in range(n_own):
        v = own_distinct[a]
        w = seen[row, v]
        if w < 0:
            continue
        if count[w] == 0:
            distinct[n_distinct] = w
            n_distinct += 1
        count[w] += own[v]
        m += own[v]
    return n_distinct, m


@numba.njit(cache=True, nogil=True)
def _row(pass_row: int, group: int, n_values: int) -> int:
    """The row of ``seen`` a unit of ``group`` is counted through: the pass's, or the group's branch."""
    return pass_row if pass_row >= 0 else group % n_values


@numba.njit(cache=True, nogil=True)
def _clear(count: np.ndarray, distinct: np.ndarray, n_distinct: int) -> None:
    for a in range(n_distinct):
        count[distinct[a]] = 0


@numba.njit(cache=True, nogil=True)
def _tree_pairs(n_distinct: int, count: np.ndarray, distinct: np.ndarray, delta2: np.ndarray) -> float:
    """sum over ordered pairs of distinct values c != k of n_c n_k delta2_ck."""
    total = 0.0
    if n_distinct < 2:
        return total
    for a in range(n_distinct):
        for b in range(n_distinct):
            if a != b:
                total += count[distinct[a]] * count[distinct[b]] * delta2[distinct[a], distinct[b]]
    return total


@numba.njit(cache=True, nogil=True)
def _unit_sums(
    value: np.ndarray, weight: np.ndarray, bounds: np.ndarray, group: np.ndarray, pass_row: np.ndarray,
    seen: np.ndarray, lo: int, hi: int, n_groups: int, delta2: np.ndarray, width: int, full: bool,
) -> tuple[np.ndarray, ...]:
    """Per group: pairable units, their answers, the observed disagreement (nominal and tree; each unit's over
    m - 1), the sum of the units' shares of agreeing pairs, the answers per value (groups x values) and the
    units per answer count (groups x width, for Fleiss' modal count). Without ``full`` only what nominal alpha
    needs: the tree disagreement, the shares and the units per count are left at zero.

    Each unit in [lo, hi) has its own values counted once; each pass p then sees them through a row of
    ``seen`` and adds them to group[p, u] (-1: the unit is in no group of that pass), so the passes of a
    grouping (its depths or levels) cost one walk over the answers. The row is pass_row[p], or when that is
    -1 the group's branch (groups numbered (window * passes + pass) * values + branch, see _row)."""
    n_values = seen.shape[1]
    units = np.zeros(n_groups)
    answers = np.zeros(n_groups)
    observed = np.zeros(n_groups)
    observed_tree = np.zeros(n_groups)
    share = np.zeros(n_groups)
    by_value = np.zeros((n_groups, n_values))
    tally = np.zeros((n_groups, width))
    own, own_distinct, count, distinct = _scratch(n_values)
    for u in range(lo, hi):
        n_own = _own_counts(bounds[u], bounds[u + 1], value, weight, own, own_distinct)
        last_row, n_distinct, m = -1, 0, 0
        unit_observed = unit_tree = unit_share = 0.0
        for p in range(group.shape[0]):
            g = group[p, u]
            if g < 0:
                continue
            row = _row(pass_row[p], g, seen.shape[1])
            if row != last_row:  # passes through the same row (a subtree's depths) see the same counts
                _clear(count, distinct, n_distinct)
                n_distinct, m = _seen_counts(n_own, own, own_distinct, seen, row, count, distinct)
                last_row = row
                if m >= 2 and n_distinct > 1:
                    squares = 0
                    for a in range(n_distinct):
                        squares += count[distinct[a]] * count[distinct[a]]
                    unit_observed = (m * m - squares) / (m - 1.0)
                    if full:  # a pair loop per unit: a third of the pass where only nominal alpha is asked
                        unit_tree = _tree_pairs(n_distinct, count, distinct, delta2) / (m - 1.0)
                        unit_share = (squares - m) / (m * (m - 1.0))
            if m >= 2:
                units[g] += 1
                answers[g] += m
                if full:
                    tally[g, m] += 1
                if n_distinct == 1:  # unanimous, the commonest unit: no disagreement, every pair agrees
                    by_value[g, distinct[0]] += m
                    share[g] += 1.0
                else:
                    for a in range(n_distinct):
                        by_value[g, distinct[a]] += count[distinct[a]]
                    observed[g] += unit_observed
                    if full:
                        observed_tree[g] += unit_tree
                        share[g] += unit_share
        _clear(count, distinct, n_distinct)
        _clear(own, own_distinct, n_own)
    return units, answers, observed, observed_tree, share, by_value, tally


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _unit_spread(
    value: np.ndarray, weight: np.ndarray, bounds: np.ndarray, group: np.ndarray, pass_row: np.ndarray,
    seen: np.ndarray, lo: int, hi: int, tree: bool, delta2: np.ndarray, dot: np.ndarray, group_terms: np.ndarray,
    modal: np.ndarray, fleiss: bool,
) -> tuple[np.ndarray, ...]:
    """Per group: the sum of the units' influence on alpha and of its square, and over the units with the
    modal answer count, their number, their shares of agreeing pairs and their answers per value (the units
    and passes as in _unit_sums).

    A unit's influence is -(o d_exp - d_obs dd_exp) / d_exp^2 (see agreement.summed_table) with o its observed
    disagreement over m - 1 and dd_exp = ds / (N - 1) - s m / (N - 1)^2, where ds = 2 N m - 2 t (nominal, t =
    n.N_g with ``dot`` the group's answers per value) or 2 t (tree, t = n.(delta2 N_g), ``dot`` = N_g delta2).
    ``group_terms`` holds N, s, d_exp and d_obs per group. The influence is linear in o, m and t, so each group's
    three coefficients are found once and a unit costs three products: no division but its own o."""
    n_groups, n_values = dot.shape
    total, s, d_exp, d_obs = group_terms[:, 0], group_terms[:, 1], group_terms[:, 2], group_terms[:, 3]
    slope = 1.0 / (total - 1.0)
    curve = s * slope * slope
    scale = 1.0 / (d_exp * d_exp)
    coefficients = np.empty((n_groups, 3))  # of o, m and t: side by side, one cache line per group
    coefficients[:, 0] = -d_exp * scale
    coefficients[:, 1] = -d_obs * curve * scale if tree else d_obs * (2.0 * total * slope - curve) * scale
    coefficients[:, 2] = (2.0 if tree else -2.0) * d_obs * slope * scale
    first = np.zeros(n_groups)
    second = np.zeros(n_groups)
    chosen = np.zeros(n_groups)
    chosen_share = np.zeros(n_groups)
    chosen_value = np.zeros((n_groups, n_values))
    own, own_distinct, count, distinct = _scratch(n_values)
    for u in range(lo, hi):
        n_own = _own_counts(bounds[u], bounds[u + 1], value, weight, own, own_distinct)
        last_row, n_distinct, m, squares = -1, 0, 0, 0
        o = 0.0
        for p in range(group.shape[0]):
            g = group[p, u]
            if g < 0:
                continue
            row = _row(pass_row[p], g, seen.shape[1])
            if row != last_row:  # as in _unit_sums: the counts, squares and disagreement once per row
                _clear(count, distinct, n_distinct)
                n_distinct, m = _seen_counts(n_own, own, own_distinct, seen, row, count, distinct)
                last_row = row
                squares = 0
                for a in range(n_distinct):
                    squares += count[distinct[a]] * count[distinct[a]]
                o = 0.0  # a unanimous unit observes no disagreement
                if m >= 2 and n_distinct > 1:
                    if tree:
                        o = _tree_pairs(n_distinct, count, distinct, delta2) / (m - 1.0)
                    else:
                        o = (m * m - squares) / (m - 1.0)
            if m >= 2:
                towards = 0.0
                for a in range(n_distinct):
                    towards += count[distinct[a]] * dot[g, distinct[a]]
                influence = coefficients[g, 0] * o + coefficients[g, 1] * m + coefficients[g, 2] * towards
                first[g] += influence
                second[g] += influence * influence
                if fleiss and m == modal[g]:
                    chosen[g] += 1
                    chosen_share[g] += 1.0 if n_distinct == 1 else (squares - m) / (m * (m - 1.0))
                    for a in range(n_distinct):
                        chosen_value[g, distinct[a]] += count[distinct[a]]
        _clear(count, distinct, n_distinct)
        _clear(own, own_distinct, n_own)
    return first, second, chosen, chosen_share, chosen_value


@numba.njit(cache=True, nogil=True)
def _branch_groups(
    unit_item: np.ndarray, window: np.ndarray, consensus: np.ndarray, branches: np.ndarray
) -> np.ndarray:
    """A unit's branch at depth d is branches[d, its item's consensus] (the last column for none); its group is
    window * values + branch, -1 without a branch. A branch has one depth, so the depth needs no place in the
    group: numbering it in too left two of every three groups empty and spread the per-group arrays a unit
    adds to over three times the memory. Window-major, so that the groups a unit adds to at every depth lie
    close together."""
    depths = branches.shape[0]
    n_values = branches.shape[1] - 1
    group = np.empty((depths, unit_item.size), dtype=np.int32)
    for u in range(unit_item.size):
        c = consensus[unit_item[u]]
        for d in range(depths):
            b = branches[d, c if c >= 0 else n_values]
            group[d, u] = window[u] * n_values + b if b >= 0 else -1
    return group


def timed_counts(
    keep: np.ndarray, annotator: np.ndarray, duration: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the rows ``keep`` marks: answers and timed answers (duration not NaN) per annotator index, and the
    durations of the timed ones. The annotator column keeps its held integer type: one compilation per type,
    where a widened copy of ten million indices cost more than the loop."""
    return _timed_counts(keep, np.ascontiguousarray(annotator), np.asarray(duration, dtype=np.float64), size)


def under_counts(keep: np.ndarray, annotator: np.ndarray, duration: np.ndarray, bar: float, size: int) -> np.ndarray:
    """Over the rows ``keep`` marks: answers per annotator index with a duration below ``bar``."""
    return _under_counts(keep, np.ascontiguousarray(annotator), np.asarray(duration, dtype=np.float64), bar, size)


def durations_of(
    keep: np.ndarray, annotator: np.ndarray, duration: np.ndarray, chosen: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Over the rows ``keep`` marks, the ``size`` timed answers of the ``chosen`` annotators (a boolean table by
    annotator index): their annotators and durations, in row order."""
    return _durations_of(keep, np.ascontiguousarray(annotator), np.asarray(duration, dtype=np.float64), chosen, size)


# The loops below test a filter's mask on every answer; a mask over rows sorted by item is irregular, so each
# test is added as 0 or 1 instead of branched on (a mispredicted branch per answer cost more than the loop).
@numba.njit(cache=True, nogil=True)
def _timed_counts(
    keep: np.ndarray, annotator: np.ndarray, duration: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    answers = np.zeros(size, dtype=np.int64)
    timed = np.zeros(size, dtype=np.int64)
    n_timed = 0
    for i in range(keep.size):
        counted = np.int64(keep[i])
        is_timed = counted & (duration[i] == duration[i])
        answers[annotator[i]] += counted
        timed[annotator[i]] += is_timed
        n_timed += is_timed
    seconds = np.empty(n_timed + 1)
    n_timed = 0
    for i in range(keep.size):
        seconds[n_timed] = duration[i]  # overwritten by the next timed answer unless this one is
        n_timed += np.int64(keep[i]) & (duration[i] == duration[i])
    return answers, timed, seconds[:n_timed]


@numba.njit(cache=True, nogil=True)
def _under_counts(keep: np.ndarray, annotator: np.ndarray, duration: np.ndarray, bar: float, size: int) -> np.ndarray:
    under = np.zeros(size, dtype=np.int64)
    for i in range(keep.size):
        under[annotator[i]] += np.int64(keep[i]) & (duration[i] < bar)  # False for NaN
    return under


@numba.njit(cache=True, nogil=True)
def _durations_of(
    keep: np.ndarray, annotator: np.ndarray, duration: np.ndarray, chosen: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    who = np.empty(size + 1, dtype=annotator.dtype)
    seconds = np.empty(size + 1)
    n = 0
    for i in range(keep.size):
        who[n] = annotator[i]
        seconds[n] = duration[i]
        n += np.int64(keep[i]) & np.int64(chosen[annotator[i]]) & (duration[i] == duration[i])
    return who[:n], seconds[:n]


def medians_by(keep: np.ndarray, key: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
    """Per key index below ``size``, the median of x over the rows ``keep`` marks (NaN x left out; the mean
    of the two middle values for an even count, as DuckDB's median; NaN for none).

    A counting sort of the values by key, then a selection in each key's slice: linear, where sorting every row
    by (key, value) is not. Each phase runs as two halves on two threads: the rows (each half counts its rows
    and writes them to its own part of every key's slice) and then the keys.
    """
    key, x = np.ascontiguousarray(key), np.asarray(x, dtype=np.float64)
    middle = keep.size // 2 if keep.size >= SPLIT_UNITS else keep.size
    with ThreadPoolExecutor(max_workers=1) as pool:

        def halves(run: Callable[..., T], first: tuple[Any, ...], second: tuple[Any, ...]) -> tuple[T, T]:
            later = pool.submit(run, *second)
            return run(*first), later.result()

        rows = ((0, middle), (middle, keep.size))
        low, high = halves(_valid_counts, (keep, key, x, *rows[0], size), (keep, key, x, *rows[1], size))
        starts = np.r_[0, np.cumsum(low + high)]
        values = np.empty(int(starts[-1]))
        halves(
            _scatter, (keep, key, x, *rows[0], starts[:-1].copy(), values),
            (keep, key, x, *rows[1], starts[:-1] + low, values),
        )
        out = np.full(size, np.nan)
        split = min(int(np.searchsorted(starts, starts[-1] // 2)), size)
        halves(_select_medians, (values, starts, 0, split, out), (values, starts, split, size, out))
    return out


@numba.njit(cache=True, nogil=True)
def _valid_counts(keep: np.ndarray, key: np.ndarray, x: np.ndarray, low: int, high: int, size: int) -> np.ndarray:
    counts = np.zeros(size, dtype=np.int64)
    for i in range(low, high):
        counts[key[i]] += np.int64(keep[i]) & (x[i] == x[i])
    return counts


@numba.njit(cache=True, nogil=True)
def _scatter(
    keep: np.ndarray, key: np.ndarray, x: np.ndarray, low: int, high: int, place: np.ndarray, values: np.ndarray
) -> None:
    for i in range(low, high):
        if keep[i] and x[i] == x[i]:
            values[place[key[i]]] = x[i]
            place[key[i]] += 1


@numba.njit(cache=True, nogil=True)
def _select_medians(values: np.ndarray, starts: np.ndarray, low: int, high: int, out: np.ndarray) -> None:
    """Medians of the slices of keys ``low:high``, each found by selection in place (the slices are scratch)."""
    for k in range(low, high):
        first, n = starts[k], starts[k + 1] - starts[k]
        if n == 0:
            continue
        middle = first + (n - 1) // 2
        _select(values, first, starts[k + 1] - 1, middle)
        below = values[middle]
        above = below
        if n % 2 == 0:  # the smallest of the upper part, which selection left to the right of the middle
            above = values[middle + 1]
            for i in range(middle + 2, starts[k + 1]):
                above = min(above, values[i])
        out[k] = (below + above) / 2


@numba.njit(cache=True, nogil=True)
def _select(values: np.ndarray, left: int, right: int, k: int) -> None:
    """Reorder ``values[left:right + 1]`` so that position k holds the value a sort would put there, smaller or
    equal values before it and larger or equal after (Hoare's selection, median-of-three pivots)."""
    while left < right:
        mid = (left + right) // 2
        a, b, c = values[left], values[mid], values[right]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = left, right
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            right = j
        elif k >= i:
            left = i
        else:
            return


def counts_by(keep: np.ndarray, key: np.ndarray, size: int) -> np.ndarray:
    """Rows per key index below ``size`` among the rows ``keep`` marks."""
    return _counts_by(keep, np.ascontiguousarray(key), size)


@numba.njit(cache=True, nogil=True)
def _counts_by(keep: np.ndarray, key: np.ndarray, size: int) -> np.ndarray:
    counts = np.zeros(size, dtype=np.int64)
    for i in range(keep.size):
        counts[key[i]] += np.int64(keep[i])
    return counts


def annotator_sums(
    keep: np.ndarray, annotator: np.ndarray, item: np.ndarray, value: np.ndarray, cost: np.ndarray,
    gold_value: np.ndarray, size: int,
) -> tuple[np.ndarray, ...]:
    """Per annotator index below ``size``, over the rows ``keep`` marks: answers, answers on gold items
    (``gold_value[item] >= 0``), those equal to the gold value, and the sum and the number of the stated costs
    (NaN: none). The annotator table's columns in one pass."""
    return _annotator_sums(
        keep, np.ascontiguousarray(annotator), np.ascontiguousarray(item), np.ascontiguousarray(value),
        np.asarray(cost, dtype=np.float64), _int64(gold_value), size,
    )


@numba.njit(cache=True, nogil=True)
def _annotator_sums(
    keep: np.ndarray, annotator: np.ndarray, item: np.ndarray, value: np.ndarray, cost: np.ndarray,
    gold_value: np.ndarray, size: int,
) -> tuple[np.ndarray, ...]:
    answers = np.zeros(size, dtype=np.int64)
    gold = np.zeros(size, dtype=np.int64)
    correct = np.zeros(size, dtype=np.int64)
    cost_sum = np.zeros(size)
    costed = np.zeros(size, dtype=np.int64)
    for i in range(keep.size):
        if not keep[i]:
            continue
        a = annotator[i]
        answers[a] += 1
        g = gold_value[item[i]] if item[i] < gold_value.size else -1
        if g >= 0:
            gold[a] += 1
            correct[a] += value[i] == g
        if not np.isnan(cost[i]):
            cost_sum[a] += cost[i]
            costed[a] += 1
    return answers, gold, correct, cost_sum, costed


def masked_max(keep: np.ndarray, x: np.ndarray, none: int) -> int:
    """The largest x among the rows ``keep`` marks, ``none`` when it marks none."""
    return int(_masked_max(keep, np.ascontiguousarray(x), none))


@numba.njit(cache=True, nogil=True)
def _masked_max(keep: np.ndarray, x: np.ndarray, none: int) -> int:
    """Selects rather than branches (see _masked_min)."""
    below = np.int64(none)
    best = below
    for i in range(keep.size):
        v = np.int64(x[i])
        best = max(best, v if keep[i] & (v != below) else below)
    return best


def masked_min(keep: np.ndarray, x: np.ndarray, none: int) -> int:
    """The smallest x other than ``none`` (a NULL) among the rows ``keep`` marks, ``none`` when there is none."""
    return int(_masked_min(keep, np.ascontiguousarray(x), none))


@numba.njit(cache=True, nogil=True)
def _masked_min(keep: np.ndarray, x: np.ndarray, none: int) -> int:
    """Selects rather than branches: a filter on annotators or tiers keeps rows scattered through the answers,
    where a branch on ``keep`` is mispredicted at every other row."""
    above = np.iinfo(np.int64).max
    best = above
    for i in range(keep.size):
        v = np.int64(x[i])
        best = min(best, v if keep[i] & (v != none) else above)
    return none if best == above else best


def plurality_of(
    keep: np.ndarray, value: np.ndarray, low: np.ndarray, high: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """Per slice [low, high) of the rows: the value most of its kept rows hold, ties to the smallest ``rank``
    (-1 for a slice without kept rows)."""
    return _plurality_of(keep, np.ascontiguousarray(value), _int64(low), _int64(high), _int64(rank))


@numba.njit(cache=True, nogil=True)
def _plurality_of(
    keep: np.ndarray, value: np.ndarray, low: np.ndarray, high: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    out = np.full(low.size, -1, dtype=np.int64)
    count = np.zeros(rank.size, dtype=np.int64)
    seen = np.empty(rank.size, dtype=np.int64)
    for s in range(low.size):
        m = 0
        for i in range(low[s], high[s]):
            if keep[i]:
                v = value[i]
                if count[v] == 0:
                    seen[m] = v
                    m += 1
                count[v] += 1
        best = -1
        for t in range(m):
            v = seen[t]
            if best < 0 or count[v] > count[best] or (count[v] == count[best] and rank[v] < rank[best]):
                best = v
        out[s] = best
        for t in range(m):
            count[seen[t]] = 0
    return out


def period_items(
    keep: np.ndarray, item: np.ndarray, created: np.ndarray, start: int, cost: np.ndarray, confidence: np.ndarray,
    outcome: np.ndarray,
) -> np.ndarray:
    """Per period (row 0: the rows ``keep`` marks created before day ``start``; row 1: from it on): distinct
    items, answers, the sum and count of the items' confidences (NaN: none), items with an outcome (0 or 1;
    -1: none), items with outcome 1, and the sum and count of the answers' stated costs (NaN: none). ``item``
    must be sorted, so that an item's rows are contiguous; items past the tables' ends have neither."""
    return _period_items(
        keep, np.ascontiguousarray(item), np.ascontiguousarray(created), start, np.asarray(cost, dtype=np.float64),
        np.asarray(confidence, dtype=np.float64), np.asarray(outcome, dtype=np.int8),
    )


@numba.njit(cache=True, nogil=True)
def _period_items(
    keep: np.ndarray, item: np.ndarray, created: np.ndarray, start: int, cost: np.ndarray, confidence: np.ndarray,
    outcome: np.ndarray,
) -> np.ndarray:
    out = np.zeros((2, 8))
    last = np.full(2, -1, dtype=np.int64)
    for i in range(keep.size):
        if not keep[i]:
            continue
        p = 1 if created[i] >= start else 0
        out[p, 1] += 1
        if cost[i] == cost[i]:
            out[p, 6] += cost[i]
            out[p, 7] += 1
        it = item[i]
        if it == last[p]:
            continue
        last[p] = it
        out[p, 0] += 1
        if it < confidence.size and confidence[it] == confidence[it]:
            out[p, 2] += confidence[it]
            out[p, 3] += 1
        if it < outcome.size and outcome[it] >= 0:
            out[p, 4] += 1
            out[p, 5] += outcome[it] == 1
    return out


def group_order(key: np.ndarray) -> np.ndarray:
    """The stable permutation that sorts rows by an integer key of a small range (item indices): a counting
    sort, linear where a comparison sort of millions of keys is not (ten times as long at ten million)."""
    key = _int64(key)
    order = np.empty(key.size, dtype=np.int64)
    if key.size:
        low = int(key.min())
        _counting_sort(key, low, int(key.max()) - low + 1, order)
    return order


@numba.njit(cache=True, nogil=True)
def _counting_sort(key: np.ndarray, low: int, n_keys: int, order: np.ndarray) -> np.ndarray:
    """Writes into ``order`` the rows by key (each ``key - low`` in [0, n_keys)), stably; returns where each
    key's rows start, then the number of rows."""
    start = np.zeros(n_keys + 1, dtype=np.int64)
    for x in key:
        start[x - low + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    for r in range(key.size):
        at = key[r] - low
        order[fill[at]] = r
        fill[at] += 1
    return start


def group_sums(
    group: np.ndarray, rows: np.ndarray, item: np.ndarray, sums: np.ndarray, counts: np.ndarray,
    out: tuple[np.ndarray, ...],
) -> None:
    """Adds rows into their groups: row r is ``rows[r]`` of ``item``, ``sums`` (float columns) and ``counts``
    (boolean columns), in group ``group[r]``, so that a row can count more than once without being copied. Per
    group: its rows, its smallest item, the column sums and the flag counts; ``out`` is (rows, first item, sums,
    counts), each with a row per group, so that parts of the rows add into one result."""
    flags = np.ascontiguousarray(counts, dtype=np.bool_)
    _group_sums(_int64(group), _int64(rows), _int64(item), np.ascontiguousarray(sums, dtype=np.float64), flags, *out)


@numba.njit(cache=True, nogil=True)
def _group_sums(
    group: np.ndarray, rows: np.ndarray, item: np.ndarray, sums: np.ndarray, counts: np.ndarray, n: np.ndarray,
    first: np.ndarray, out_sums: np.ndarray, out_counts: np.ndarray,
) -> None:
    for i in range(group.size):
        g, r = group[i], rows[i]
        n[g] += 1
        first[g] = min(first[g], item[r])
        for j in range(sums.shape[1]):
            out_sums[g, j] += sums[r, j]
        for j in range(counts.shape[1]):
            out_counts[g, j] += counts[r, j]
