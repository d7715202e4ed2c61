"""The compiled passes over held answers, against numpy and pandas on random rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from queries import compiled_sums


@pytest.mark.parametrize("rows", [1_000, 300_000])
def test_medians_by_key_equal_pandas(rows: int) -> None:
    """Both sizes: below and above the size that splits the passes over two threads. Whole-second values make
    ties common; keys with no, one and two kept values are included."""
    rng = np.random.default_rng(rows)
    key = rng.integers(0, 60, rows).astype(np.int16)
    key[key == 7] = 8  # key 7: no rows at all
    x = rng.integers(0, 40, rows).astype(np.float64)
    x[rng.random(rows) < 0.05] = np.nan
    keep = rng.random(rows) < 0.7
    keep[key == 9] = False
    keep[np.flatnonzero(key == 9)[:1]] = True  # key 9: one kept row
    keep[key == 10] = False
    keep[np.flatnonzero((key == 10) & ~np.isnan(x))[:2]] = True  # key 10: two, an even count
    got = compiled_sums.medians_by(keep, key, x, 64)
    want = pd.Series(x[keep]).groupby(key[keep]).median().reindex(range(64))
    np.testing.assert_array_equal(got, want.to_numpy())
    assert np.isnan(got[7]) and not np.isnan(got[9]) and not np.isnan(got[10])


def test_annotator_sums_equal_a_direct_count() -> None:
    rng = np.random.default_rng(3)
    rows = 50_000
    annotator, item = rng.integers(0, 30, rows), rng.integers(0, 500, rows)
    value, cost = rng.integers(0, 5, rows), rng.random(rows)
    cost[rng.random(rows) < 0.1] = np.nan
    keep = rng.random(rows) < 0.8
    gold = np.where(rng.random(450) < 0.3, rng.integers(0, 5, 450), -1)  # items 450 and up have no gold entry
    answers, on_gold, correct, total, costed = compiled_sums.annotator_sums(
        keep, annotator, item, value, cost, gold, 30
    )
    g = np.where(item < gold.size, gold[np.minimum(item, gold.size - 1)], -1)
    frame = pd.DataFrame({"a": annotator, "gold": g >= 0, "hit": (g >= 0) & (value == g), "cost": cost})[keep]
    by = frame.groupby("a")
    np.testing.assert_array_equal(answers, by.size().reindex(range(30), fill_value=0))
    np.testing.assert_array_equal(on_gold, by["gold"].sum().reindex(range(30), fill_value=0))
    np.testing.assert_array_equal(correct, by["hit"].sum().reindex(range(30), fill_value=0))
    np.testing.assert_allclose(total, by["cost"].sum().reindex(range(30), fill_value=0), rtol=1e-12)
    np.testing.assert_array_equal(costed, by["cost"].count().reindex(range(30), fill_value=0))


def test_masked_min_leaves_out_nulls_and_unkept_rows() -> None:
    none = np.iinfo(np.int32).min
    x = np.array([5, none, 3, 9, none, 2], dtype=np.int32)
    keep = np.array([True, True, True, True, True, False])
    assert compiled_sums.masked_min(keep, x, none) == 3  # 2 is not kept, NULLs never win
    assert compiled_sums.masked_min(keep & (x == none), x, none) == none  # only NULLs
    assert compiled_sums.masked_min(np.zeros(6, dtype=bool), x, none) == none


def test_plurality_of_slices_breaks_ties_by_rank() -> None:
    value = np.array([2, 1, 1, 2, 0, 3, 3, 0, 0], dtype=np.int8)
    keep = np.array([True, True, True, True, False, True, True, True, False])
    rank = np.array([5, 9, 1, 0])  # value 3 comes first in tree order, then 2, 0, 1
    low, high = np.array([0, 4, 5, 8]), np.array([4, 5, 8, 8])
    # 2,1,1,2: a tie between 1 and 2, to 2 (rank 1); 0 unkept: none; 3,3,0: 3; an empty slice: none.
    np.testing.assert_array_equal(compiled_sums.plurality_of(keep, value, low, high, rank), [2, -1, 3, -1])


def test_answer_week_sums_equal_pandas_group_bys() -> None:
    """Confidence sums by (top-level branch of the value, week) and agreement with the item's consensus by
    (annotator, week), against pandas group-bys in the narrow integer widths the held answers use; unstated
    confidences (NaN), answers without an annotator (-1) and weeks absent from the rows are left out."""
    rng = np.random.default_rng(11)
    rows = 40_000
    item = np.sort(rng.integers(0, 900, rows)).astype(np.int32)
    value = rng.integers(0, 6, rows).astype(np.int8)
    day = (20454 + 7 * rng.choice([0, 1, 3, 4, 8], rows)).astype(np.int16)  # weeks 2, 5, 6, 7 absent
    annotator = rng.integers(-1, 40, rows).astype(np.int16)
    confidence = np.where(rng.random(rows) < 0.4, np.nan, rng.random(rows))
    top = np.array([0, 0, 2, 2, 4, 4])  # each value's top-level node
    consensus = rng.integers(-1, 6, 1000)
    days, stated, agreed, seen = compiled_sums.answer_week_sums(
        item, value, day, annotator, confidence, top, consensus
    )
    np.testing.assert_array_equal(days, np.unique(day))
    np.testing.assert_array_equal(np.flatnonzero(seen), np.unique(item))
    week = np.searchsorted(days, day)
    frame = pd.DataFrame({"top": top[value], "week": week, "c": confidence})
    want = frame.dropna().groupby(["top", "week"])["c"].agg(["size", "sum", lambda v: (v * v).sum()])
    got = stated[want.index.get_level_values(0), want.index.get_level_values(1)]
    np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-12)
    assert stated[..., 0].sum() == want["size"].sum()  # nothing counted outside those cells
    people = pd.DataFrame({"a": annotator, "week": week, "agree": consensus[item] == value})
    want = people[annotator >= 0].groupby(["a", "week"])["agree"].agg(["size", "sum"])
    got = agreed[want.index.get_level_values(0), want.index.get_level_values(1)]
    np.testing.assert_array_equal(got, want.to_numpy())
    assert agreed[..., 0].sum() == want["size"].sum()
    # Confidences on a coarse scale as positions in their distinct values (NaN among them), as the held answers
    # keep them: the same counts and sums as the doubles (the sums taken from counts per value).
    coarse = np.round(confidence * 20) / 20
    codes, levels = pd.factorize(coarse, use_na_sentinel=False)
    assert levels.size == 22
    doubles, coded = (
        compiled_sums.answer_week_sums(item, value, day, annotator, c, top, consensus, scale)[1]
        for c, scale in ((coarse, None), (codes.astype(np.uint8), np.asarray(levels)))
    )
    np.testing.assert_array_equal(coded[..., 0], doubles[..., 0])
    np.testing.assert_allclose(coded, doubles, rtol=1e-12)
    days, stated, agreed, seen = compiled_sums.answer_week_sums(item, value, day, None, None, top, consensus[:0])
    assert stated.size == 0 and agreed.size == 0 and seen.sum() == np.unique(item).size


@pytest.mark.parametrize("size", [10_001, 250_001])  # the larger is split between two threads
def test_compress_keeps_the_marked_rows_in_order(size: int) -> None:
    rng = np.random.default_rng(13)
    columns = [rng.integers(-100, 100, size).astype(t) for t in (np.int8, np.int16, np.int32, np.float64)]
    # A first half with no kept row, and one whose kept rows end well before the middle: the halves must not
    # write into each other's rows.
    late = rng.random(size) < 0.37
    late[: size // 2] = False
    early = np.zeros(size, bool)
    early[: size // 3] = rng.random(size // 3) < 0.5
    early[size // 2 + 7 :: 97] = True
    for keep in (rng.random(size) < 0.37, np.ones(size, bool), np.zeros(size, bool), late, early):
        for got, column in zip(compiled_sums.compress(keep, columns), columns, strict=True):
            assert got.dtype == column.dtype
            np.testing.assert_array_equal(got, column[keep])
    assert [c.size for c in compiled_sums.compress(np.zeros(0, bool), [c[:0] for c in columns])] == [0] * 4


def test_masked_extremes_equal_numpy_on_scattered_rows() -> None:
    """Rows kept at random (as a tier filter keeps them), NULLs among them: the branch-free loops agree with
    numpy over the kept, non-NULL rows."""
    none = np.iinfo(np.int32).min
    rng = np.random.default_rng(17)
    x = rng.integers(20000, 21000, 100_000).astype(np.int16)
    x = np.where(rng.random(x.size) < 0.1, none, x).astype(np.int32)
    keep = rng.random(x.size) < 0.5
    valid = x[keep & (x != none)]
    assert compiled_sums.masked_min(keep, x, none) == valid.min()
    assert compiled_sums.masked_max(keep, x, none) == valid.max()
    assert compiled_sums.masked_max(np.zeros(x.size, bool), x, none) == none


def test_group_sums_of_repeated_rows_equal_pandas() -> None:
    """Rows gathered through an index (a posterior row under each of its item's tiers) add as copies would."""
    rng = np.random.default_rng(11)
    item = rng.integers(0, 1000, 400)
    sums = rng.random((400, 3))
    flags = rng.random((400, 2)) < 0.4
    rows = rng.integers(0, 400, 1500)
    group = rng.integers(0, 40, 1500)
    out = (np.zeros(40, dtype=np.int64), np.full(40, np.iinfo(np.int64).max), np.zeros((40, 3)),
           np.zeros((40, 2), dtype=np.int64))
    compiled_sums.group_sums(group, rows, item, sums, flags, out)
    copies = pd.DataFrame({"group": group, "item": item[rows], **{f"s{j}": sums[rows, j] for j in range(3)},
                           **{f"c{j}": flags[rows, j] for j in range(2)}})
    want = copies.groupby("group").agg(
        n=("item", "size"), first=("item", "min"), s0=("s0", "sum"), s1=("s1", "sum"), s2=("s2", "sum"),
        c0=("c0", "sum"), c1=("c1", "sum"),
    ).reindex(range(40))
    assert np.array_equal(out[0], want["n"].to_numpy())
    assert np.array_equal(out[1], want["first"].to_numpy())
    np.testing.assert_allclose(out[2], want[["s0", "s1", "s2"]].to_numpy(), rtol=1e-12)
    assert np.array_equal(out[3], want[["c0", "c1"]].to_numpy())
