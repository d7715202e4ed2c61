"""Soft labels across the tree, checked against a direct re-implementation and scipy's entropy."""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import entropy

from queries import compiled_sums, derived_base, soft_label_parts, soft_labels
from queries.connection import memory, transaction
from queries.filters import STAGES, Filters
from queries.refresh import RefreshContext, refresh
from queries.taxonomy import parse_tree, store_tree
from tests.conftest import load_answers

TREE = """
taxonomy: t
nodes:
  a:
    children:
      a1: {children: {a1x: {}, a1y: {}}}
      a2: {children: {a2x: {}, a2y: {}, a2z: {}}}
  b: {children: {b1: {}, b2: {}}}
  c: {}
"""
# node -> root-first lineage, for the reference implementation.
LINEAGE = {
    "a": ["a"], "a1": ["a", "a1"], "a2": ["a", "a2"], "b": ["b"], "c": ["c"],
    "a1x": ["a", "a1", "a1x"], "a1y": ["a", "a1", "a1y"],
    "a2x": ["a", "a2", "a2x"], "a2y": ["a", "a2", "a2y"], "a2z": ["a", "a2", "a2z"],
    "b1": ["b", "b1"], "b2": ["b", "b2"],
}
LEAVES = {"c", "a1x", "a1y", "a2x", "a2y", "a2z", "b1", "b2"}
ORDER = ["a", "a1", "a1x", "a1y", "a2", "a2x", "a2y", "a2z", "b", "b1", "b2", "c"]
CHILDREN = {n: [m for m in ORDER if len(LINEAGE[m]) > 1 and LINEAGE[m][-2] == n] for n in ORDER}
ALL = Filters()


def random_answers(seed: int, items: int = 60, coarse: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    nodes = ORDER if coarse else sorted(LEAVES)
    rows = []
    for i in range(items):
        for k in range(int(rng.integers(1, 8))):
            rows.append((f"i{i:03d}", f"u{k}", str(rng.choice(nodes))))
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id"])


def reference_cut(nodes: list[str], depth: int) -> Counter[str]:
    """Answers on the cut at ``depth``: deeper nodes roll up, leaves stand for themselves, coarse drop out."""
    out: Counter[str] = Counter()
    for node in nodes:
        lineage = LINEAGE[node]
        if len(lineage) >= depth:
            out[lineage[depth - 1]] += 1
        elif node in LEAVES:
            out[node] += 1
    return out


def warehouse(answers: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = memory()
    load_answers(con, TREE, answers)
    derived_base.build(con)
    soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    return con


@pytest.fixture(scope="module")
def answers() -> pd.DataFrame:
    return random_answers(11)


@pytest.fixture(scope="module")
def con(answers: pd.DataFrame) -> Iterator[duckdb.DuckDBPyConnection]:
    c = warehouse(answers)
    yield c
    c.close()


def test_levels_match_a_direct_computation_and_scipy_entropy(con, answers) -> None:
    got = soft_labels.item_levels(con, ALL).set_index(["item_id", "depth"])
    mass = soft_labels.item_node_mass(con, ALL).set_index(["item_id", "depth", "node_id"])["mass"]
    checked = 0
    for item, group in answers.groupby("item_id"):
        for depth in (1, 2, 3):
            cut = reference_cut(list(group["node_id"]), depth)
            if not cut:
                assert (item, depth) not in got.index
                continue
            total = sum(cut.values())
            shares = sorted((c / total for c in cut.values()), reverse=True)
            row = got.loc[(item, depth)]
            assert row["answers"] == total
            assert row["entropy"] == pytest.approx(entropy(list(cut.values()), base=2), abs=1e-12)
            assert row["top_share"] == pytest.approx(shares[0])
            assert row["gap"] == pytest.approx(shares[0] - (shares[1] if len(shares) > 1 else 0.0))
            best = max(cut.values())
            assert row["top_node"] == min((n for n, c in cut.items() if c == best), key=ORDER.index)
            for node, count in cut.items():
                assert mass.loc[(item, depth, node)] == pytest.approx(count / total)
            checked += 1
    assert checked > 120


def test_every_cut_sums_to_one_and_counts_roll_up(con, answers) -> None:
    mass = soft_labels.item_node_mass(con, ALL)
    sums = mass.groupby(["item_id", "depth"])["mass"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-12)
    counts = mass.set_index(["item_id", "depth", "node_id"])["answers"]
    coarse = answers.groupby(["item_id", "node_id"]).size()
    for (item, depth, node), n in counts.items():
        kids = [counts.get((item, depth + 1, k), 0) for k in CHILDREN[node]]
        if node in LEAVES:
            if depth < 3:
                assert counts[(item, depth + 1, node)] == n  # a leaf carries itself down unchanged
        else:
            # A node's answers are its children's plus the coarse answers that stopped at it.
            assert n == sum(kids) + coarse.get((item, node), 0)


def test_without_coarse_answers_a_node_is_the_sum_of_its_children() -> None:
    con = warehouse(random_answers(5, coarse=False))
    mass = soft_labels.item_node_mass(con, ALL).set_index(["item_id", "depth", "node_id"])["mass"]
    internal = [(i, d, n) for (i, d, n) in mass.index if CHILDREN[n]]
    assert internal
    for item, depth, node in internal:
        assert mass[(item, depth, node)] == pytest.approx(
            sum(mass.get((item, depth + 1, k), 0.0) for k in CHILDREN[node]), abs=1e-12
        )


def test_coarse_answers_never_create_finer_mass() -> None:
    fine = random_answers(3, coarse=False)
    extra = pd.DataFrame(
        {
            "item_id": ["i000", "i001", "i002", "i003", "i004", "zz_only_coarse"],
            "annotator_id": ["c1"] * 6,
            "node_id": ["a", "a1", "b", "a2", "a", "a1"],
        }
    )
    base = soft_labels.item_node_mass(warehouse(fine), ALL)
    more = soft_labels.item_node_mass(warehouse(pd.concat([fine, extra], ignore_index=True)), ALL)
    key = ["item_id", "node_id", "mass"]
    # Coarse answers sit at depth 1 or 2: the leaf cut (depth 3) is exactly as before.
    pd.testing.assert_frame_equal(
        base[base["depth"] == 3][key].reset_index(drop=True), more[more["depth"] == 3][key].reset_index(drop=True)
    )
    only = more[more["item_id"] == "zz_only_coarse"]
    assert set(zip(only["depth"], only["node_id"], strict=True)) == {(1, "a"), (2, "a1")}
    # Depth-1 coarse answers leave depth 2 alone for items that got none at depth 2.
    untouched = ["i000", "i002", "i004"]
    two = [x[(x["depth"] == 2) & x["item_id"].isin(untouched)][key].reset_index(drop=True) for x in (base, more)]
    pd.testing.assert_frame_equal(*two)


BRANCH_ANSWERS = pd.DataFrame(
    {
        "item_id": ["i1", "i1", "i1", "i2", "i2", "i2", "i3", "i4", "i4", "i4", "i4"],
        "annotator_id": ["u1", "u2", "u3", "u1", "u2", "u3", "u1", "u1", "u2", "u3", "u4"],
        "node_id": ["a1x", "a1y", "a", "b1", "a1x", "a1", "a2x", "a1x", "a1x", "a1x", "a1y"],
    }
)


def test_branch_stats_by_hand() -> None:
    con = warehouse(BRANCH_ANSWERS)
    stats = soft_labels.branch_stats(con, ALL).set_index("node_id")
    a, a1, a2 = stats.loc["a"], stats.loc["a1"], stats.loc["a2"]
    # a: all four items; i2 puts 1 of 3 answers in b. Within a every judged item stays in a1.
    assert a["items"] == 4 and a["mean_mass"] == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)
    assert a["mean_child_entropy"] == pytest.approx(0.0) and a["ambiguous_share"] == pytest.approx(0.0)
    assert a["agree_branch_not_leaf"] == pytest.approx(2 / 3) and a["disagree_branch"] == pytest.approx(1 / 3)
    # a1: i1 splits 1:1 between its leaves (ambiguous), i4 3:1 (not); i2 has one answer below a1.
    assert a1["items"] == 3 and a1["mean_mass"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert a1["mean_child_entropy"] == pytest.approx((1.0 + entropy([3, 1], base=2)) / 2)
    assert a1["ambiguous_share"] == pytest.approx(0.5)
    assert a1["agree_branch_not_leaf"] == pytest.approx(2 / 3) and a1["disagree_branch"] == pytest.approx(1 / 3)
    # a2: one item with one answer, nothing to judge.
    assert a2["items"] == 1 and np.isnan(a2["agree_branch_not_leaf"]) and np.isnan(a2["mean_child_entropy"])
    assert "b" in stats.index and "c" not in stats.index  # only internal nodes are branches
    top = soft_labels.labelling_priorities(con, ALL, limit=5, min_items=1)
    assert list(top["node_id"][:2]) == ["a1", "a"]
    assert top.loc[0, "score"] == pytest.approx(a1["mean_child_entropy"] / np.sqrt(3))
    assert "a2" not in set(top["node_id"])  # one child: no split to be unsure about
    both = soft_labels.branch_tables(con, ALL, limit=5, min_items=1)
    pd.testing.assert_frame_equal(both.stats, soft_labels.branch_stats(con, ALL))
    pd.testing.assert_frame_equal(both.priorities, top)


def test_ambiguity_thresholds_are_parameters() -> None:
    con = warehouse(BRANCH_ANSWERS)
    strict = soft_labels.level_stats(con, ALL, soft_labels.Ambiguity(top_share_below=0.8, gap_below=0.0))
    loose = soft_labels.level_stats(con, ALL)
    leaf_strict = strict.set_index("depth").loc[3, "ambiguous_share"]
    leaf_loose = loose.set_index("depth").loc[3, "ambiguous_share"]
    # Leaf cut, judged items i1 (1:1), i2 (1:1), i4 (3:1): top < 0.8 for all three; < 0.7 or gap < 0.34 for two.
    assert leaf_strict == pytest.approx(1.0) and leaf_loose == pytest.approx(2 / 3)


def test_answer_filters_recompute_and_match_the_precomputed_tables(con) -> None:
    everything = Filters(stages=tuple(sorted(STAGES)))  # keeps every answer, but forces recomputation
    assert not soft_labels.item_level_only(everything)
    assert all(soft_labels.table_exists(con, t) for t in soft_labels.SUMMARIES)  # the unfiltered pages read these
    for fn in (soft_labels.item_node_mass, soft_labels.item_levels, soft_labels.level_stats, soft_labels.branch_stats):
        pd.testing.assert_frame_equal(fn(con, ALL), fn(con, everything), check_dtype=False)
    one = soft_labels.item_node_mass(con, Filters(annotators=("u0",)))
    assert set(one["mass"]) == {1.0}  # one answer per item: all mass on its path


def test_item_filters_select_items() -> None:
    con = warehouse(BRANCH_ANSWERS)
    got = soft_labels.item_node_mass(con, Filters(branch="a1"))
    # Items whose plurality answer (ties to the node first in tree order) lies under a1: i2 (a1) and i4 (a1x).
    consensus = dict(con.execute("SELECT item_id, consensus_lineage FROM d_items").fetchall())
    expected = {i for i, lineage in consensus.items() if "a1" in lineage}
    assert set(got["item_id"]) == expected == {"i2", "i4"}


def test_item_filters_read_the_stored_parts_and_match_a_recomputation() -> None:
    con = memory()
    load_answers(con, TREE, random_answers(11, items=80))
    con.execute(
        "UPDATE items SET source = CASE WHEN hash(item_id) % 2 = 0 THEN 'web' ELSE 'app' END, "
        "segment = 's' || hash(item_id) % 3"
    )
    rebuild(con, full=True, since_batch=0)
    every_stage = tuple(sorted(STAGES))
    for item_level in (Filters(branch="a"), Filters(branch="a1"), Filters(branch="b", sources=("web",)),
                       Filters(segments=("s0", "s2"))):
        forced = item_level.model_copy(update={"stages": every_stage})  # same answers, computed from d_answers
        for fn in (soft_labels.level_stats, soft_labels.branch_stats):
            stored, recomputed = fn(con, item_level), fn(con, forced)
            assert len(stored)
            pd.testing.assert_frame_equal(stored, recomputed, check_dtype=False)


def rebuild(con: duckdb.DuckDBPyConnection, full: bool, since_batch: int) -> str:
    """The base tables and this step alone, as refresh runs them, so other steps cannot interfere."""
    derived_base.build(con)
    return soft_labels.refresh_step(con, RefreshContext(full=full, since_batch=since_batch, touched_items=0))


def test_incremental_refresh_equals_a_full_one() -> None:
    con = memory()
    load_answers(con, TREE, random_answers(7, items=30))
    con.execute("UPDATE annotators SET tier = CASE WHEN annotator_id IN ('u0', 'u2') THEN 'expert' ELSE 'crowd' END")
    assert rebuild(con, full=False, since_batch=0) == "full"  # no tables yet
    more = random_answers(8, items=40).assign(annotator_id=lambda x: "v" + x["annotator_id"])
    more = more[more["item_id"] >= "i020"].reset_index(drop=True)
    con.register("_more", more)
    con.execute(
        "INSERT INTO annotations (annotation_id, item_id, annotator_id, tree_version, node_id, stage, batch_id) "
        "SELECT 'm' || row_number() OVER (), item_id, annotator_id, 1, node_id, 'initial', 2 FROM _more"
    )
    con.execute("INSERT INTO items (item_id) SELECT DISTINCT item_id FROM _more EXCEPT SELECT item_id FROM items")
    con.execute("INSERT INTO annotators (annotator_id) SELECT DISTINCT annotator_id FROM _more")
    assert rebuild(con, full=False, since_batch=1) == "incremental"
    # The new annotators have no tier: their answers count for every page but no tier's sums.
    stored = (*soft_labels.TABLES, *soft_labels.SUMMARIES, *soft_labels.CHUNK_SUMMARIES, *soft_labels.TIER_PARTS)
    tables = {t: con.execute("SELECT * FROM " + t + " ORDER BY ALL").df() for t in stored}
    assert set(tables["d_soft_tier_level_parts"]["tier"]) == {"crowd", "expert"}
    assert rebuild(con, full=True, since_batch=0) == "full"
    for table, before in tables.items():
        after = con.execute("SELECT * FROM " + table + " ORDER BY ALL").df()
        pd.testing.assert_frame_equal(before, after, check_dtype=False)
    newest = con.execute("SELECT item_idx FROM d_item_index WHERE item_id = 'i039'").fetchone()[0]
    assert (tables["d_soft_levels"]["item_idx"] == newest).any()
    # Nothing new and the same posterior: the step keeps its tables; a changed posterior is rebuilt.
    assert rebuild(con, full=False, since_batch=2) == "incremental"
    con.execute(
        "CREATE TABLE d_posterior AS SELECT item_id, item_idx, node_id, 1.0 AS p FROM d_items "
        "JOIN d_nodes USING (tree_version) WHERE node_id = 'b1'"
    )
    assert rebuild(con, full=False, since_batch=2) == "incremental"
    posterior = con.execute("SELECT * FROM d_soft_levels WHERE source = 'posterior' ORDER BY ALL").df()
    assert len(posterior) == 3 * con.execute("SELECT count(*) FROM d_items").fetchone()[0]
    assert (posterior.loc[posterior["depth"] == 2, "top_node"] == "b1").all()
    assert rebuild(con, full=True, since_batch=0) == "full"
    full = con.execute("SELECT * FROM d_soft_levels WHERE source = 'posterior' ORDER BY ALL").df()
    pd.testing.assert_frame_equal(posterior, full, check_dtype=False)
    con.execute("DROP TABLE d_posterior")
    # A new tree version may move nodes under old items: the next refresh rebuilds everything.
    store_tree(con, parse_tree(TREE), created_by="test")
    assert rebuild(con, full=False, since_batch=2) == "full"


def test_refresh_runs_the_step() -> None:
    con = memory()
    load_answers(con, TREE, random_answers(7, items=10))
    report = refresh(con)
    assert dict((s.step, s.mode) for s in report.steps)["soft_labels"] == "full"
    stored = con.execute("SELECT count(*) FROM d_soft_levels WHERE source = 'annotations'").fetchone()[0]
    assert len(soft_labels.item_levels(con, ALL)) == stored == 30  # ten items, three cuts


def plant_posterior(
    con: duckdb.DuckDBPyConnection, leaves: list[str], seed: int, concentration: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """A random Dirichlet posterior over ``leaves`` for every item, as d_posterior, the table Dawid-Skene writes;
    returns the items in index order and their leaf probabilities."""
    items = con.execute("SELECT item_id, item_idx FROM d_item_index ORDER BY item_idx").df()
    p = np.random.default_rng(seed).dirichlet(np.full(len(leaves), concentration), size=len(items))
    post = pd.DataFrame(
        {
            "item_id": np.repeat(items["item_id"], len(leaves)),
            "item_idx": np.repeat(items["item_idx"], len(leaves)),
            "node_id": leaves * len(items),
            "p": p.ravel(),
        }
    )
    con.register("_post", post)
    con.execute("CREATE TABLE d_posterior AS SELECT * FROM _post")
    con.unregister("_post")
    return items, p


def test_posterior_rolls_up_exactly_and_is_skipped_when_absent(con) -> None:
    assert soft_labels.item_node_mass(con, ALL, source="posterior").empty
    assert set(soft_labels.level_stats(con, ALL)["source"]) == {"annotations"}
    leaves = sorted(LEAVES)
    items, p = plant_posterior(con, leaves, seed=2, concentration=0.5)
    try:
        soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
        mass = soft_labels.item_node_mass(con, ALL, source="posterior")
        by = mass.set_index(["item_id", "depth", "node_id"])["mass"]
        for (item, depth, node), value in by.items():
            if CHILDREN[node]:
                assert value == pytest.approx(sum(by.get((item, depth + 1, k), 0.0) for k in CHILDREN[node]))
        levels = soft_labels.item_levels(con, ALL, source="posterior").set_index(["item_id", "depth"])
        row = items.iloc[4]
        leaf_p = dict(zip(leaves, p[4], strict=True))
        top_level = [sum(v for k, v in leaf_p.items() if LINEAGE[k][0] == t) for t in ("a", "b", "c")]
        assert levels.loc[(row["item_id"], 1), "entropy"] == pytest.approx(entropy(top_level, base=2))
        assert levels.loc[(row["item_id"], 3), "entropy"] == pytest.approx(entropy(p[4], base=2))
        stats = soft_labels.level_stats(con, ALL)
        assert set(stats["source"]) == {"annotations", "posterior"}
        assert (stats[stats["source"] == "posterior"]["items"] == len(items)).all()
    finally:
        con.execute("DROP TABLE d_posterior")
        soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))


def test_empty_inputs_give_empty_frames() -> None:
    con = memory()
    for frame in (
        soft_labels.item_node_mass(con, ALL),
        soft_labels.level_stats(con, ALL),
        soft_labels.branch_stats(con, Filters(annotators=("nobody",))),
        soft_labels.labelling_priorities(con, ALL),
    ):
        assert frame.empty
    built = warehouse(BRANCH_ANSWERS)
    assert soft_labels.branch_stats(built, Filters(annotators=("nobody",))).empty
    assert list(soft_labels.level_stats(built, Filters(sources=("none",))).columns) == soft_labels.LEVEL_STATS_COLUMNS


def test_face_sentiment_level_stats_are_sane(face_con) -> None:
    refresh(face_con)
    both = soft_labels.level_stats(face_con, ALL)
    stats = both[both["source"] == "annotations"].set_index("depth")
    assert list(stats.index) == [1, 2, 3] and (stats["items"] == 584).all()
    # Each cut refines the one above it, so no item's entropy can fall with depth.
    levels = soft_labels.item_levels(face_con, ALL).pivot(index="item_id", columns="depth", values="entropy")
    assert (levels[2] >= levels[1] - 1e-12).all() and (levels[3] >= levels[2] - 1e-12).all()
    assert stats["mean_entropy"].is_monotonic_increasing
    assert (stats["mean_gap"] > 0).all() and stats["ambiguous_share"].between(0.05, 0.95).all()
    # The leaf cut is the plain answer distribution over the four emotions.
    raw = face_con.execute("SELECT item_id, node_id FROM annotations").df()
    table = pd.crosstab(raw["item_id"], raw["node_id"])
    expected = entropy(table.to_numpy().T, base=2)
    np.testing.assert_allclose(levels.loc[table.index, 3].to_numpy(), expected, atol=1e-12)
    posterior = both[both["source"] == "posterior"]
    if len(posterior):  # the latent-truth posterior is sharper than raw answers
        assert (posterior["items"] == 584).all()
        assert (posterior.set_index("depth")["mean_entropy"] < stats["mean_entropy"]).all()


# --- the generated demo -------------------------------------------------------------------------------


def demo_warehouse(items: int = 6000) -> duckdb.DuckDBPyConnection:
    """A small demo with its planted effects, refreshed with the base tables and soft labels only."""
    from queries.demo import simulate, write_simulation
    from queries.demo_config import demo_config

    con = memory()
    with transaction(con):
        write_simulation(con, simulate(demo_config(str(items), 7, True)), "test")
    derived_base.build(con)
    soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    return con


@pytest.fixture(scope="module")
def demo() -> Iterator[duckdb.DuckDBPyConnection]:
    c = demo_warehouse()
    yield c
    c.close()


def test_hard_sibling_pairs_show_as_agreeing_on_the_branch_but_not_the_leaf(demo) -> None:
    pairs = json.loads(demo.execute("SELECT value FROM demo_manifest WHERE key = 'hard_sibling_pairs'").fetchone()[0])
    parents = dict(demo.execute("SELECT node_id, parent_id FROM d_nodes").fetchall())
    hard = {parents[a] for a, b in pairs if parents[a] == parents[b]}
    stats = soft_labels.branch_stats(demo, ALL).set_index("node_id")
    depth_two = stats[stats["depth"] == 2]
    others = depth_two.drop(index=list(hard & set(depth_two.index)))
    assert hard <= set(depth_two.index)
    # Every branch holding a hard pair agrees-on-branch-but-not-leaf more often than the median other branch.
    assert (depth_two.loc[sorted(hard), "agree_branch_not_leaf"] > others["agree_branch_not_leaf"].median()).all()
    assert depth_two.loc[sorted(hard), "agree_branch_not_leaf"].mean() > 1.3 * others["agree_branch_not_leaf"].mean()


def test_refresh_in_item_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    con = memory()
    load_answers(con, TREE, random_answers(5, items=30))
    rebuild(con, full=True, since_batch=0)
    whole = {t: con.execute("SELECT * FROM " + t + " ORDER BY ALL").df() for t in soft_labels.TABLES}
    monkeypatch.setattr(soft_labels, "CHUNK_ITEMS", 7)
    assert len(soft_labels.item_chunks(con)) == 5
    rebuild(con, full=True, since_batch=0)
    for table, before in whole.items():
        pd.testing.assert_frame_equal(before, con.execute("SELECT * FROM " + table + " ORDER BY ALL").df())


def test_written_rows_stay_in_item_order_and_are_not_held_until_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refresh writes every chunk inside one transaction; a chunk's Arrow rows must be freed once written.

    They used to be registered as a view, which the transaction kept (with the rows) until commit: about
    1 GB at ten million answers. Several chunks also check that appends keep the rows in item order,
    which page lookups rely on.
    """
    con = memory()
    load_answers(con, TREE, random_answers(5, items=30))
    derived_base.build(con)
    monkeypatch.setattr(soft_labels, "CHUNK_ITEMS", 7)
    gc.collect()
    before = pa.total_allocated_bytes()
    with transaction(con):
        soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
        gc.collect()
        assert pa.total_allocated_bytes() == before
        for table in soft_labels.TABLES:
            stored = con.execute("SELECT item_idx FROM " + table + " ORDER BY rowid").fetchnumpy()["item_idx"]
            assert len(stored) and (np.diff(stored) >= 0).all()


# --- every sidebar filter against a straightforward computation -----------------------------------------


def reference_level_stats(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """level_stats from the per-item levels (recomputed in SQL for answer filters), averaged in pandas."""
    frames = []
    for source in soft_labels.SOURCES:
        levels = soft_labels.item_levels(con, f, source=source)
        if levels.empty:
            continue
        judged = levels["answers"].isna() | (levels["answers"] >= 2)
        levels["ambiguous"] = ((levels["top_share"] < 0.7) | (levels["gap"] < 0.34)).astype(float).where(judged)
        frame = levels.groupby("depth").agg(
            items=("item_idx", "size"), mean_entropy=("entropy", "mean"), mean_top_share=("top_share", "mean"),
            mean_gap=("gap", "mean"), ambiguous_share=("ambiguous", "mean"),
        )
        frames.append(frame.reset_index().assign(source=source))
    return pd.concat(frames, ignore_index=True)[soft_labels.LEVEL_STATS_COLUMNS]


def reference_branch_stats(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """branch_stats by the module docstring's definitions, in pandas from the per-item node mass."""
    nodes = con.execute(
        "SELECT node_id, parent_id, depth AS node_depth, is_leaf, title, ordinal FROM " + soft_labels.NODES
    ).df()
    mass = soft_labels.item_node_mass(con, f).merge(nodes, on="node_id")
    level = mass.groupby(["item_idx", "depth"])["answers"].sum().rename("level_answers").reset_index()
    leaves = mass[mass["depth"] == mass["depth"].max()].groupby("item_idx").size().rename("leaves").reset_index()
    own = mass[mass["depth"] == mass["node_depth"]]
    kids = own[own["parent_id"].notna()].copy()
    kids["p"] = kids["mass"] / kids.groupby(["item_idx", "parent_id"])["mass"].transform("sum")
    kids = kids.sort_values(["item_idx", "parent_id", "p"], ascending=[True, True, False])
    kids["rank"] = kids.groupby(["item_idx", "parent_id"]).cumcount()
    kids["plogp"] = -kids["p"] * np.log2(kids["p"])
    split = kids.groupby(["item_idx", "parent_id"]).agg(
        child_answers=("answers", "sum"), child_entropy=("plogp", "sum"),
        top=("p", "max"), second=("p", lambda p: p.iloc[1] if len(p) > 1 else 0.0),
    ).reset_index().rename(columns={"parent_id": "node_id"})
    branches = (
        own[~own["is_leaf"]].merge(level, on=["item_idx", "depth"]).merge(split, on=["item_idx", "node_id"], how="left")
        .merge(leaves, on="item_idx", how="left").fillna({"leaves": 0, "child_answers": 0})
    )
    judged_kids, judged_level = branches["child_answers"] >= 2, branches["level_answers"] >= 2
    branches["child_entropy"] = branches["child_entropy"].where(judged_kids)
    branches["ambiguous"] = ((branches["top"] < 0.7) | (branches["top"] - branches["second"] < 0.34)).astype(float)
    branches["ambiguous"] = branches["ambiguous"].where(judged_kids)
    branches["agree"] = ((branches["mass"] == 1) & (branches["leaves"] >= 2)).astype(float).where(judged_level)
    branches["disagree"] = (branches["mass"] < 1).astype(float).where(judged_level)
    out = branches.groupby(["node_id", "depth"]).agg(
        title=("title", "first"), items=("item_idx", "size"), mean_mass=("mass", "mean"),
        mean_child_entropy=("child_entropy", "mean"), ambiguous_share=("ambiguous", "mean"),
        agree_branch_not_leaf=("agree", "mean"), disagree_branch=("disagree", "mean"), ordinal=("ordinal", "min"),
    )
    return out.reset_index().sort_values("ordinal")[soft_labels.BRANCH_COLUMNS].reset_index(drop=True)


@pytest.fixture(scope="module")
def demo_with_posterior() -> Iterator[duckdb.DuckDBPyConnection]:
    """A small demo (tiers, stages, weeks, sources and its planted effects) with a random posterior."""
    con = demo_warehouse(1500)
    leaves = [r[0] for r in con.execute("SELECT node_id FROM d_nodes WHERE is_leaf ORDER BY ordinal").fetchall()]
    plant_posterior(con, leaves, seed=4, concentration=0.3)
    soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    yield con
    con.close()


def sidebar_filters(con: duckdb.DuckDBPyConnection) -> list[Filters]:
    """The benchmark's cases (a week, the busiest branch, source and tier) and the combinations around them."""
    last = con.execute("SELECT max(week) FROM d_answers").fetchone()[0].date()
    branch = con.execute("SELECT consensus_lineage[1] FROM d_items GROUP BY 1 ORDER BY count(*) DESC, 1").fetchone()[0]
    tiers = [r[0] for r in con.execute("SELECT DISTINCT tier FROM d_answers ORDER BY 1").fetchall()]
    first = con.execute("SELECT DISTINCT annotator_id FROM d_answers ORDER BY 1 LIMIT 5").fetchall()
    people = tuple(r[0] for r in first)
    return [
        Filters(start=last, end=last + pd.Timedelta(days=6)),
        Filters(branch=branch),
        Filters(sources=("web",)),
        *(Filters(tiers=(t,)) for t in tiers),
        Filters(tiers=(tiers[0],), sources=("web", "app"), branch=branch),
        Filters(tiers=tuple(tiers[:2])),
        Filters(tiers=(tiers[-1],), start=last - pd.Timedelta(days=60)),
        Filters(stages=("escalated",)),
        Filters(annotators=people),
    ]


def test_every_sidebar_filter_matches_a_straightforward_computation(demo_with_posterior) -> None:
    con = demo_with_posterior
    assert all(soft_labels.table_exists(con, t) for t in soft_labels.TIER_PARTS)
    for f in sidebar_filters(con):
        levels = soft_labels.level_stats(con, f)
        assert set(levels["source"]) == {"annotations", "posterior"}, f
        pd.testing.assert_frame_equal(levels, reference_level_stats(con, f), check_dtype=False, rtol=1e-9)
        pd.testing.assert_frame_equal(
            soft_labels.branch_stats(con, f), reference_branch_stats(con, f), check_dtype=False, rtol=1e-9
        )


def test_one_tier_reads_the_tier_sums_and_matches_the_live_computation(demo_with_posterior, monkeypatch) -> None:
    con = demo_with_posterior
    every_stage = tuple(sorted(STAGES))
    for f in sidebar_filters(con):
        if f.answer_fields() != ["tiers"] or len(f.tiers) > 1:
            continue
        live = f.model_copy(update={"stages": every_stage})  # the same answers, soft-labelled from d_answers
        for kind in ("levels", "branches"):
            assert soft_labels._summary(con, kind, f, soft_labels.Ambiguity()) is not None
        for fn in (soft_labels.level_stats, soft_labels.branch_stats, soft_labels.labelling_priorities):
            pd.testing.assert_frame_equal(fn(con, f), fn(con, live), check_dtype=False, rtol=1e-9)
    # Without the stored tier sums the same filter is computed live, with the same result.
    tier = Filters(tiers=("expert",))
    stored = soft_labels.branch_stats(con, tier)
    monkeypatch.setattr(soft_labels, "table_exists", lambda c, name: name not in soft_labels.TIER_PARTS)
    pd.testing.assert_frame_equal(stored, soft_labels.branch_stats(con, tier), check_dtype=False, rtol=1e-9)


def test_stored_sums_are_the_same_when_groups_are_ranked_by_sorting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many groups of items (sources, segments, consensus nodes) make the key space too large for a table of
    every key: the sums then rank the keys by sorting, and must not change."""
    con = demo_warehouse(800)
    leaves = [r[0] for r in con.execute("SELECT node_id FROM d_nodes WHERE is_leaf ORDER BY ordinal").fetchall()]
    plant_posterior(con, leaves, seed=2, concentration=0.3)
    monkeypatch.setattr(soft_labels, "CHUNK_ITEMS", 300)  # several chunks, each with its own parts
    soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    parts = (*soft_labels.SUMMARIES, *soft_labels.CHUNK_SUMMARIES, *soft_labels.TIER_PARTS)
    by_table = {t: con.execute("SELECT * FROM " + t + " ORDER BY ALL").df() for t in parts}
    assert all(len(frame) > 100 for frame in by_table.values())
    monkeypatch.setattr(soft_label_parts, "DENSE_KEYS", 0)
    soft_labels.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    for table, expected in by_table.items():
        pd.testing.assert_frame_equal(con.execute("SELECT * FROM " + table + " ORDER BY ALL").df(), expected)
    con.close()


def test_ranked_keys_of_several_parts_match_numpy_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 5000, 3000), rng.integers(2000, 9000, 500)]
    distinct, inverse = np.unique(np.concatenate(parts), return_inverse=True)
    for limit in (1 << 22, 0):  # a table of every key, or sorting
        monkeypatch.setattr(soft_label_parts, "DENSE_KEYS", limit)
        index, keys = soft_label_parts.rank_keys(parts, 9000)
        assert np.array_equal(keys, distinct)
        assert np.array_equal(np.concatenate(index), inverse)


@pytest.mark.parametrize("low", [0, 7, 1_000_000])
def test_group_order_is_the_stable_argsort(low: int) -> None:
    """The walks read each item's rows as one run, in their original order (the sums follow it)."""
    keys = low + np.random.default_rng(low).integers(0, 500, 20_000)
    assert np.array_equal(compiled_sums.group_order(keys), np.argsort(keys, kind="stable"))
    assert compiled_sums.group_order(np.zeros(0, dtype=np.int64)).size == 0
