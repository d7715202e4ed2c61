"""Agreement statistics against independent references (krippendorff, statsmodels, scikit-learn)."""

from __future__ import annotations

import itertools
from collections import Counter

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from queries import agreement, compiled_sums, derived_base, drift
from queries.alpha import alpha_from_counts
from queries.connection import memory
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.refresh import RefreshContext
from tests.conftest import load_answers

TREE = """
taxonomy: t
nodes:
  a:
    children:
      a1: {children: {a1x: {}, a1y: {}}}
      a2: {children: {a2x: {}, a2y: {}}}
  b:
    children:
      b1: {children: {b1x: {}, b1y: {}}}
      b2: {}
  c: {}
"""
LINEAGE = {
    "a": ["a"], "a1": ["a", "a1"], "a2": ["a", "a2"], "a1x": ["a", "a1", "a1x"], "a1y": ["a", "a1", "a1y"],
    "a2x": ["a", "a2", "a2x"], "a2y": ["a", "a2", "a2y"], "b": ["b"], "b1": ["b", "b1"], "b2": ["b", "b2"],
    "b1x": ["b", "b1", "b1x"], "b1y": ["b", "b1", "b1y"], "c": ["c"],
}  # fmt: skip
LEAVES = ["a1x", "a1y", "a2x", "a2y", "b1x", "b1y", "b2", "c"]
NODES = sorted(LINEAGE)


def synthetic(n_items: int, seed: int, right: float = 0.6, weeks: int = 6) -> pd.DataFrame:
    """Items with a true leaf, 1-5 distinct annotators each, right with probability ``right`` else any node."""
    rng = np.random.default_rng(seed)
    rows = []
    for item in range(n_items):
        truth = LEAVES[rng.integers(len(LEAVES))]
        for annotator in rng.choice(8, size=rng.integers(1, 6), replace=False):
            node = truth if rng.random() < right else NODES[rng.integers(len(NODES))]
            day = pd.Timestamp("2026-01-05") + pd.Timedelta(days=int(rng.integers(7 * weeks)))
            rows.append((f"i{item:04d}", f"u{annotator}", node, day))
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id", "created_at"])


def warehouse(answers: pd.DataFrame):
    con = memory()
    load_answers(con, TREE, answers)
    return con


@pytest.fixture(scope="module")
def answers() -> pd.DataFrame:
    return synthetic(400, seed=1)


@pytest.fixture
def con(answers: pd.DataFrame):
    c = warehouse(answers)
    derived_base.build(c)
    assert agreement.refresh_step(c, RefreshContext(full=True, since_batch=0, touched_items=0)) == "full"
    yield c
    c.close()


def reference_alpha(frame: pd.DataFrame, values: list[str], distance: np.ndarray | None = None) -> float:
    """krippendorff on an annotators x items matrix of value indices."""
    index = {v: i for i, v in enumerate(values)}
    coded = frame.assign(v=frame["node_id"].map(index))
    data = coded.groupby(["annotator_id", "item_id"])["v"].first().unstack().to_numpy(dtype=float)
    level = "nominal" if distance is None else (lambda v1, v2, i1, i2, n_v, dtype=None: distance[i1, i2])
    return krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=list(range(len(values))))


def counts_rows(frame: pd.DataFrame, values: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {v: i for i, v in enumerate(values)}
    items = {v: i for i, v in enumerate(sorted(frame["item_id"].unique()))}
    tally = Counter(zip(frame["item_id"].map(items), frame["node_id"].map(index), strict=True))
    keys = np.array(list(tally))
    return keys[:, 0], keys[:, 1], np.array(list(tally.values()))


def test_alpha_from_counts_matches_krippendorff_on_random_data() -> None:
    rng = np.random.default_rng(7)
    for _ in range(4):
        data = rng.integers(0, 6, size=(9, 80)).astype(float)
        data[rng.random(data.shape) < 0.5] = np.nan
        distance = rng.random((6, 6))
        distance = distance + distance.T
        np.fill_diagonal(distance, 0)
        cells = [(u, int(v)) for u in range(data.shape[1]) for v in data[:, u] if not np.isnan(v)]
        tally = Counter(cells)
        keys = np.array(list(tally))
        n = np.array(list(tally.values()))
        order = rng.permutation(len(n))  # rows need not arrive sorted
        got = alpha_from_counts(keys[order, 0], keys[order, 1], n[order], 6)
        got_tree = alpha_from_counts(keys[order, 0], keys[order, 1], n[order], 6, distance)
        want = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal", value_domain=list(range(6)))
        want_tree = krippendorff.alpha(
            reliability_data=data,
            level_of_measurement=lambda v1, v2, i1, i2, n_v, dtype=None: distance[i1, i2],
            value_domain=list(range(6)),
        )
        assert got == pytest.approx(want, abs=1e-12)
        assert got_tree == pytest.approx(want_tree, abs=1e-12)


def test_tree_distance_orders_siblings_cousins_and_branches() -> None:
    d = agreement.tree_distance([LINEAGE[n] for n in NODES])
    at = {n: i for i, n in enumerate(NODES)}
    sibling, cousin, far = d[at["a1x"], at["a1y"]], d[at["a1x"], at["a2x"]], d[at["a1x"], at["b1x"]]
    assert 0 < sibling < cousin < far == 1.0
    assert d[at["a1"], at["a1x"]] == pytest.approx(sibling / 2)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)


def test_alpha_matches_krippendorff_nominal_tree_and_levels(con, answers: pd.DataFrame) -> None:
    space = agreement.value_space(con)
    assert space.node_ids == NODES
    nominal = agreement.alpha(con, Filters(), bootstrap=0)
    tree = agreement.alpha(con, Filters(), metric="tree", bootstrap=0)
    assert nominal.value == pytest.approx(reference_alpha(answers, NODES), abs=1e-9)
    assert tree.value == pytest.approx(reference_alpha(answers, NODES, space.delta2), abs=1e-9)
    assert tree.value > nominal.value  # random wrong answers are often near the truth in the tree
    per_item = answers.groupby("item_id").size()
    assert nominal.n_items == int((per_item >= 2).sum())
    assert nominal.n_answers == int(per_item[per_item >= 2].sum())
    for level in (1, 2, 3):
        # A leaf above the level (b2, c) stands for itself there; internal nodes above it drop out.
        reaches = (answers["node_id"].map(len_lineage) >= level) | answers["node_id"].isin(LEAVES)
        mapped = answers[reaches].assign(
            node_id=lambda x, lv=level: x["node_id"].map(lambda n: LINEAGE[n][min(lv, len(LINEAGE[n])) - 1])
        )
        got = agreement.alpha(con, Filters(), level=level, bootstrap=0)
        got_tree = agreement.alpha(con, Filters(), metric="tree", level=level, bootstrap=0)
        assert got.value == pytest.approx(reference_alpha(mapped, NODES), abs=1e-9)
        assert got_tree.value == pytest.approx(reference_alpha(mapped, NODES, space.delta2), abs=1e-9)
    table = agreement.agreement_table(con, Filters(start=pd.Timestamp("2026-01-05").date()), by="level")
    assert list(table["group"]) == ["1", "2", "3"]
    assert table["alpha_nominal"].iloc[0] == pytest.approx(agreement.alpha(con, Filters(), level=1).value)


def len_lineage(node: str) -> int:
    return len(LINEAGE[node])


def branch_frame(answers: pd.DataFrame, consensus: dict[str, str], branch: str) -> pd.DataFrame:
    """By hand: items whose consensus is under ``branch``, answers coarsened to its children."""
    depth = len(LINEAGE[branch])
    inside = answers[answers["item_id"].map(lambda i: branch in LINEAGE[consensus[i]])]

    def coarsen(node: str) -> str | None:
        lineage = LINEAGE[node]
        if len(lineage) > depth and lineage[depth - 1] == branch:
            return lineage[depth]
        if node in LINEAGE[branch]:
            return None
        return node

    return inside.assign(node_id=inside["node_id"].map(coarsen)).dropna(subset=["node_id"])


def test_branch_and_week_tables_match_krippendorff_on_the_same_subsets(con, answers: pd.DataFrame) -> None:
    space = agreement.value_space(con)
    consensus = dict(con.execute("SELECT item_id, consensus_node FROM d_items").fetchall())
    table = agreement.agreement_table(con, Filters(), by="branch").set_index("group")
    assert set(table.index) <= {"a", "a1", "a2", "b", "b1"} and {"a", "b", "a1"} <= set(table.index)
    for branch in table.index:
        frame = branch_frame(answers, consensus, branch)
        assert table.loc[branch, "alpha_nominal"] == pytest.approx(reference_alpha(frame, NODES), abs=1e-9)
        assert table.loc[branch, "alpha_tree"] == pytest.approx(reference_alpha(frame, NODES, space.delta2), abs=1e-9)
    weekly = agreement.agreement_table(con, Filters(), by="week").set_index("group")
    week_of = answers["created_at"].dt.to_period("W-SUN").dt.start_time.dt.date.astype(str)
    assert list(weekly.index) == sorted(week_of.unique())
    for week, frame in answers.groupby(week_of):
        assert weekly.loc[week, "alpha_nominal"] == pytest.approx(reference_alpha(frame, NODES), abs=1e-9)


def test_fleiss_uses_items_with_the_modal_count_and_matches_statsmodels() -> None:
    answers = synthetic(300, seed=3, right=0.7)
    per_item = answers.groupby("item_id").size()
    modal = int(per_item[per_item >= 2].value_counts().idxmax())
    con = warehouse(answers)
    derived_base.build(con)
    got = agreement.agreement_table(con, Filters(tree_version=1))
    chosen = answers[answers["item_id"].map(per_item) == modal]
    table = pd.crosstab(chosen["item_id"], chosen["node_id"]).to_numpy()
    assert got["fleiss_kappa"].iloc[0] == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-9)


def test_percent_agreement_by_hand() -> None:
    answers = pd.DataFrame(
        {
            "item_id": ["i1"] * 3 + ["i2"] * 2 + ["i3"] * 4 + ["i4"],
            "annotator_id": ["u1", "u2", "u3", "u1", "u2", "u1", "u2", "u3", "u4", "u1"],
            "node_id": ["a1x", "a1x", "b2", "c", "c", "a1x", "a1x", "a1y", "a1y", "c"],
        }
    )
    con = warehouse(answers)
    derived_base.build(con)
    got = agreement.agreement_table(con, Filters(tree_version=1)).iloc[0]
    # i1: 1 agreeing pair of 3; i2: 1 of 1; i3: 2 of 6; i4 has one answer and is not pairable.
    assert got["percent_agreement"] == pytest.approx((1 / 3 + 1 + 2 / 6) / 3)
    assert got["n_items"] == 3 and got["n_answers"] == 9


def test_pairwise_kappa_matches_scikit_learn(con, answers: pd.DataFrame) -> None:
    got = agreement.pairwise_kappa(con, Filters(), top=4)
    busiest = answers["annotator_id"].value_counts()
    top = sorted(busiest.index[:4]) if busiest.iloc[3] != busiest.iloc[4] else None
    assert len(got) == 6
    if top is not None:
        assert sorted(set(got["annotator_a"]) | set(got["annotator_b"])) == top
    for row in got.itertuples():
        a = answers[answers["annotator_id"] == row.annotator_a].set_index("item_id")["node_id"]
        b = answers[answers["annotator_id"] == row.annotator_b].set_index("item_id")["node_id"]
        shared = a.index.intersection(b.index)
        assert row.n_items == len(shared)
        assert row.kappa == pytest.approx(cohen_kappa_score(a[shared], b[shared]), abs=1e-9)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_items() -> None:
    widths = []
    for n_items in (150, 1200):
        con = warehouse(synthetic(n_items, seed=5, right=0.7))
        derived_base.build(con)
        result = agreement.alpha(con, Filters(), bootstrap=100)
        assert result.ci_low < result.value < result.ci_high
        widths.append(result.ci_high - result.ci_low)
        con.close()
    assert widths[1] < 0.6 * widths[0]


def week_units(con) -> tuple[agreement.ValueSpace, agreement.Units]:
    space = agreement.value_space(con)
    return space, agreement._week_units(agreement.scan(con, Filters()), space)


@pytest.mark.parametrize("metric", ["nominal", "tree"])
def test_analytic_interval_matches_a_brute_force_bootstrap_over_items(answers: pd.DataFrame, metric: str) -> None:
    """The closed-form standard error against the spread of alpha_from_counts over items drawn with
    replacement (data copied, no patterns), per week group."""
    con = warehouse(answers)
    derived_base.build(con)
    space = agreement.value_space(con)
    table = agreement.grouped(con, Filters(), "week", 0, metric)
    se = ((table["ci_high"] - table["ci_low"]) / (2 * agreement.Z95)).to_numpy()
    con.close()
    frame = answers.assign(week=pd.to_datetime(answers["created_at"]).dt.to_period("W-SUN").dt.start_time)
    rng = np.random.default_rng(3)
    index = {v: i for i, v in enumerate(space.node_ids)}
    delta2 = None if metric == "nominal" else space.delta2
    for g, (_, week) in enumerate(frame.groupby("week")):
        counts = week.groupby(["item_id", "node_id"]).size().reset_index(name="n")
        counts = counts[counts.groupby("item_id")["n"].transform("sum") >= 2]
        unit = pd.factorize(counts["item_id"])[0]
        value, n = counts["node_id"].map(index).to_numpy(), counts["n"].to_numpy()
        starts, lengths = np.searchsorted(unit, np.arange(unit.max() + 1)), np.bincount(unit)
        replicates = []
        for _ in range(300):
            drawn = rng.integers(lengths.size, size=lengths.size)
            rows = (
                np.repeat(starts[drawn], lengths[drawn])
                + np.arange(lengths[drawn].sum())
                - np.repeat(np.cumsum(lengths[drawn]) - lengths[drawn], lengths[drawn])
            )
            replicates.append(
                alpha_from_counts(
                    np.repeat(np.arange(drawn.size), lengths[drawn]), value[rows], n[rows], len(index), delta2
                )
            )
        assert se[g] == pytest.approx(np.std(replicates), rel=0.2)


def test_bootstrap_draws_as_many_units_as_each_group_has(con) -> None:
    _, units = week_units(con)
    assert units.multiplicity.sum() > units.m.size  # identical units share a pattern
    weights = agreement.replicate_weights(units, 7, np.random.default_rng(0))
    sizes = np.bincount(units.unit_group, weights=units.multiplicity)
    for r in range(7):
        assert np.array_equal(np.bincount(units.unit_group, weights=weights[:, r]), sizes)
        assert not np.array_equal(weights[:, r], units.multiplicity)


@pytest.mark.parametrize("grouping", ["week", "branch_week", "subtree_week", "branch", "subtree"])
def test_tables_computed_in_blocks_of_whole_groups_equal_one_block(
    con, grouping: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = agreement.value_space(con)
    answers = agreement.scan(con, Filters())
    whole = agreement.grouped_answers(con, answers, space, grouping, 20)
    monkeypatch.setattr(agreement, "BLOCK_ROWS", 50)  # a week or a branch of the fixture has hundreds of answers
    blocks = list(agreement._rows(con, answers, space, grouping))
    depths = 1 if grouping == "week" else space.ancestors.shape[0]
    assert len(blocks) > depths  # the answers were split
    weekly = grouping.endswith("week")
    keys = [set((b["g"] % agreement.BRANCH_WEEK_STRIDE if weekly else b["g"]).tolist()) for b in blocks]
    assert all(not (a & b) for a, b in itertools.pairwise(keys)), "a week or branch was split between two blocks"
    # Statistics, not intervals: the replicates' draws follow the blocks.
    columns = [c for c in whole.columns if c not in ("ci_low", "ci_high")]
    pd.testing.assert_frame_equal(agreement.grouped_answers(con, answers, space, grouping, 20)[columns], whole[columns])


@pytest.mark.parametrize("grouping", ["overall", "level", "week", "branch", "branch_week", "subtree", "subtree_week"])
@pytest.mark.parametrize("metric", ["nominal", "tree"])
def test_summed_tables_equal_the_tables_from_patterns(con, grouping: str, metric: str) -> None:
    """The analytic path sums over units in compiled passes, the bootstrap path over collapsed patterns: two
    computations of the same groups, alphas, kappas and counts. Either path gives the same table from the
    answers as runs of equal item, day and value."""
    space = agreement.value_space(con)
    answers = agreement.scan(con, Filters(), None if grouping in agreement.DAYLESS else "week")
    summed = agreement.grouped_answers(con, answers, space, grouping, 0, metric)
    patterned = agreement.grouped_answers(con, answers, space, grouping, 30, metric)
    runs = answers.runs()
    assert runs.item.size < answers.item.size and runs.weight.sum() == answers.item.size
    for got, want in ((0, summed), (30, patterned)):
        pd.testing.assert_frame_equal(agreement.grouped_answers(con, runs, space, grouping, got, metric), want)
    assert len(summed) >= 1 and summed["fleiss_kappa"].notna().any()
    columns = [c for c in summed.columns if c not in ("ci_low", "ci_high")]
    pd.testing.assert_frame_equal(summed[columns], patterned[columns], rtol=1e-12)
    estimate = summed["alpha_nominal" if metric == "nominal" else "alpha_tree"]
    inside = (summed["ci_low"] <= estimate) & (estimate <= summed["ci_high"])
    assert inside[summed["n_items"] >= 2].all()


@pytest.mark.parametrize("grouping", ["overall", "subtree_week"])
def test_alpha_only_tables_keep_the_nominal_alpha_and_its_interval(con, grouping: str) -> None:
    """Drift asks for nominal alpha alone: the same alphas, intervals and counts as the full table, the
    statistics it skips left empty rather than wrong."""
    space = agreement.value_space(con)
    answers = agreement.scan(con, Filters(), None if grouping in agreement.DAYLESS else "week")
    full = agreement.grouped_answers(con, answers, space, grouping, 0)
    alone = agreement.grouped_answers(con, answers, space, grouping, 0, alpha_only=True)
    skipped = ["alpha_tree", "fleiss_kappa", "percent_agreement"]
    kept = [c for c in full.columns if c not in skipped]
    assert full[skipped].notna().any().all()
    pd.testing.assert_frame_equal(alone[kept], full[kept])
    assert alone[skipped].isna().all().all()
    with pytest.raises(ValueError, match="nominal"):
        agreement.grouped_answers(con, answers, space, grouping, 0, "tree", alpha_only=True)


@pytest.mark.parametrize("block_rows", [1, 3, 7])
def test_blocks_close_at_the_first_key_change_after_block_rows(
    block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agreement, "BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(block_rows)
    for _ in range(300):
        key = np.sort(rng.integers(0, 6, rng.integers(0, 40)))
        expected = [0]
        for row in range(1, key.size):  # the definition, row by row
            if key[row] != key[row - 1] and row - expected[-1] >= block_rows:
                expected.append(row)
        assert agreement._cuts(key) == [*expected, key.size]


def test_levels_from_collapsed_patterns_equal_levels_from_every_answer(con) -> None:
    """_level_units collapses the answers once and then the patterns per level: the same patterns, order, unit
    counts and so the same bootstrap intervals as building each level from every answer."""
    space = agreement.value_space(con)
    answers = agreement.scan(con, Filters(), None)
    levels = list(agreement._level_units(answers, space, None))
    assert len(levels) == space.ancestors.shape[0]
    for lv, units in enumerate(levels, start=1):
        mapped = space.at_level(answers.value, lv)
        code = np.full(answers.item.size, lv, dtype=np.int8)
        direct = agreement.build_units(agreement._block(code, answers.item, mapped), space)
        assert np.array_equal(units.multiplicity, direct.multiplicity)
        pd.testing.assert_frame_equal(agreement._table(units, space, 40), agreement._table(direct, space, 40))


@pytest.mark.parametrize("weighted", [False, True])
def test_unit_keys_are_the_runs_and_their_wrapping_hash_sums(weighted: bool) -> None:
    """unit_keys against numpy: run starts where the group or the item changes, answers per run and the
    uint64 sum of salt[value] x count, which wraps (the salts are near 2^63)."""
    rng = np.random.default_rng(3)
    item = np.sort(rng.integers(0, 900, 5000))
    group = np.sort(rng.integers(0, 4, 5000)).astype(np.int8)
    order = np.lexsort((item, group))
    group, item = group[order], item[order]
    value = rng.integers(0, 12, 5000).astype(np.int32)
    salt = agreement._salt(12, 1)
    count = rng.integers(1, 5, 5000) if weighted else np.zeros(0, dtype=np.int64)
    starts, answers, keys = compiled_sums.unit_keys(group, item, value, salt, count)
    expected = np.flatnonzero(np.r_[True, (group[1:] != group[:-1]) | (item[1:] != item[:-1])])
    weights = count if weighted else np.ones(5000, dtype=np.int64)
    assert np.array_equal(starts, expected)
    assert np.array_equal(answers, np.add.reduceat(weights, expected))
    with np.errstate(over="ignore"):
        assert np.array_equal(keys, np.add.reduceat(salt[value] * weights.astype(np.uint64), expected))
    assert compiled_sums.unit_keys(group[:0], item[:0], value[:0], salt, count[:0])[0].size == 0


def test_packed_sort_orders_rows_like_a_lexsort() -> None:
    rng = np.random.default_rng(5)
    major, middle, minor = rng.integers(-5, 50, 2000), rng.integers(20_000, 20_400, 2000), rng.integers(0, 70, 2000)
    order = np.lexsort((minor, middle, major))
    got = agreement.packed_sort(major, middle, minor)
    for column, expected in zip(got, (major, middle, minor), strict=True):
        assert column is not None
        assert column.dtype == np.int32
        assert np.array_equal(column, expected[order])


def test_week_table_does_not_depend_on_the_order_within_a_unit(con) -> None:
    """The week grouping needs each (item, week) unit's answers together (the scan's order), in any order."""
    space = agreement.value_space(con)
    answers = agreement.scan(con, Filters())
    ordered = agreement.grouped_answers(con, answers, space, "week", 20)
    noise = np.random.default_rng(0).permutation(answers.item.size)
    shuffled = answers.where(np.lexsort((noise, answers.day, answers.item)))
    assert not np.array_equal(shuffled.value, answers.value)
    pd.testing.assert_frame_equal(agreement.grouped_answers(con, shuffled, space, "week", 20), ordered)


def test_answers_without_a_timestamp_count_everywhere_but_in_weekly_views(answers: pd.DataFrame) -> None:
    undated = answers.copy()
    undated.loc[undated.index % 4 == 0, "created_at"] = pd.NaT
    c = warehouse(undated)
    derived_base.build(c)
    assert agreement.refresh_step(c, RefreshContext(full=True, since_batch=0, touched_items=0)) == "full"
    dated = undated.dropna(subset=["created_at"])
    week_of = dated["created_at"].dt.to_period("W-SUN").dt.start_time.dt.date.astype(str)
    live = Filters(stages=("initial",))  # every answer, computed from the answers rather than the stored table
    for f in (Filters(), live):
        weekly = agreement.agreement_table(c, f, by="week").set_index("group")
        assert list(weekly.index) == sorted(week_of.unique())  # no week of 1970 for the undated answers
        for week, frame in dated.groupby(week_of):
            assert weekly.loc[week, "alpha_nominal"] == pytest.approx(reference_alpha(frame, NODES), abs=1e-9)
        overall = agreement.agreement_table(c, f).iloc[0]
        per_item = undated.groupby("item_id").size()
        assert overall["n_answers"] == per_item[per_item >= 2].sum()  # pairable answers, dated or not
        assert overall["alpha_nominal"] == pytest.approx(reference_alpha(undated, NODES), abs=1e-9)
        consensus = dict(c.execute("SELECT item_id, consensus_node FROM d_items").fetchall())
        branches = agreement.agreement_table(c, f, by="branch").set_index("group")
        for branch in branches.index:
            frame = branch_frame(undated, consensus, branch)
            assert branches.loc[branch, "alpha_nominal"] == pytest.approx(reference_alpha(frame, NODES), abs=1e-9)
    counts = drift.label_counts(agreement.scan(c, Filters()), agreement.value_space(c))
    assert counts["week"].min() == pd.Timestamp(min(week_of))
    c.close()


def test_refresh_stores_the_unfiltered_tables(con) -> None:
    stored = agreement.agreement_table(con, Filters(), by="week")
    assert list(stored.columns) == agreement.TABLE_COLUMNS
    live = agreement.grouped(con, Filters(), "week")[agreement.TABLE_COLUMNS]
    pd.testing.assert_frame_equal(stored, live, check_dtype=False)
    pairs = agreement.pairwise_kappa(con, Filters())
    pd.testing.assert_frame_equal(pairs, agreement._pairs(con, Filters(), 15), check_dtype=False)


def test_filters_matching_nothing_give_empty_frames(con) -> None:
    nothing = Filters(sources=("nowhere",))
    for by in agreement.GROUPINGS:
        table = agreement.agreement_table(con, nothing, by=by)
        assert table.empty and list(table.columns) == agreement.TABLE_COLUMNS
    assert agreement.pairwise_kappa(con, nothing).empty
    result = agreement.alpha(con, nothing)
    assert np.isnan(result.value) and result.n_items == 0


def test_bad_arguments_say_what_to_fix(con) -> None:
    with pytest.raises(LabelgovError, match="metric"):
        agreement.alpha(con, Filters(), metric="ordinal")
    with pytest.raises(LabelgovError, match="group"):
        agreement.agreement_table(con, Filters(), by="month")
    with pytest.raises(LabelgovError, match="bootstrap"):
        agreement.agreement_table(con, Filters(), by="level", bootstrap=-5)
    with pytest.raises(LabelgovError, match="level"):
        agreement.alpha(con, Filters(), level=0)
    too_deep = agreement.alpha(con, Filters(), level=9)
    assert np.isnan(too_deep.value) and too_deep.n_items == 0


def test_real_face_sentiment_alpha_matches_krippendorff(face_con) -> None:
    derived_base.build(face_con)
    answers = face_con.execute("SELECT item_id, annotator_id, node_id FROM d_answers").df()
    space = agreement.value_space(face_con)
    nominal = agreement.alpha(face_con, Filters(), bootstrap=0)
    tree = agreement.alpha(face_con, Filters(), metric="tree", bootstrap=0)
    assert nominal.value == pytest.approx(reference_alpha(answers, space.node_ids), abs=1e-9)
    assert tree.value == pytest.approx(reference_alpha(answers, space.node_ids, space.delta2), abs=1e-9)
    # Per level, the depth-1 leaf "neutral" stands for itself below its depth rather than dropping out.
    nodes = face_con.execute("SELECT node_id, lineage, is_leaf FROM d_nodes").df()
    lineage = dict(zip(nodes["node_id"], nodes["lineage"].map(list), strict=True))
    leaves = set(nodes.loc[nodes["is_leaf"], "node_id"])
    assert any(len(lineage[n]) == 1 for n in leaves)
    for level in range(1, max(map(len, lineage.values())) + 1):
        reaches = answers[answers["node_id"].map(lambda n, lv=level: len(lineage[n]) >= lv or n in leaves)]
        on_cut = reaches["node_id"].map(lambda n, lv=level: lineage[n][min(lv, len(lineage[n])) - 1])
        mapped = reaches.assign(node_id=on_cut)
        got = agreement.alpha(face_con, Filters(), level=level, bootstrap=0)
        assert got.value == pytest.approx(reference_alpha(mapped, space.node_ids), abs=1e-9)
        assert got.n_answers == int(mapped.groupby("item_id").size().loc[lambda s: s >= 2].sum())


@pytest.mark.parametrize("name", ["duck_identification", "product_matching"])
def test_real_binary_sets_alpha_matches_krippendorff(name: str) -> None:
    from tests.conftest import require_shared

    folder = require_shared(name)
    raw = pd.read_csv(folder / "answers.csv", dtype=str)
    answers = pd.DataFrame(
        {
            "item_id": raw["question"],
            "annotator_id": raw["worker"],
            "node_id": raw["answer"].map({"0": "no", "1": "yes"}),
        }
    )
    con = memory()
    load_answers(con, "taxonomy: binary\nnodes:\n  'no': {}\n  'yes': {}\n", answers)
    derived_base.build(con)
    space = agreement.value_space(con)
    got = agreement.alpha(con, Filters(), bootstrap=0)
    assert got.value == pytest.approx(reference_alpha(answers, space.node_ids), abs=1e-9)
    tree = agreement.alpha(con, Filters(), metric="tree", bootstrap=0)
    assert tree.value == pytest.approx(got.value, abs=1e-9)  # two leaves: the tree distance is nominal
