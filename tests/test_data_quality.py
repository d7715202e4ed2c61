"""Data-quality checks find problems planted in small warehouses and in the generated demo."""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from queries import data_quality, derived_base, soft_labels
from queries.connection import memory
from queries.filters import STAGES, Filters
from queries.refresh import RefreshContext
from tests.conftest import load_answers
from tests.test_soft_labels import TREE, demo_warehouse

ALL = Filters()


def planted() -> duckdb.DuckDBPyConnection:
    rng = np.random.default_rng(3)
    rows = []
    durations = {
        "slow": 30.0, "steady": 28.0, "calm": 25.0, "careful": 32.0, "abs_fast": 1.0, "rel_fast": 4.0, "few_fast": 0.5,
    }
    for annotator, median in durations.items():
        n = 3 if annotator == "few_fast" else 40
        for k in range(n):
            item = f"i{k % 20:02d}"
            source_b = item >= "i18"  # items i18, i19 come from a source that answers b far more often
            node = "b1" if source_b or rng.random() < 0.1 else "a1x"
            rows.append((item, annotator, node, median * rng.uniform(0.9, 1.1)))
    answers = pd.DataFrame(rows, columns=["item_id", "annotator_id", "node_id", "duration_s"])
    answers.loc[:4, "duration_s"] = np.nan
    answers["cost"] = np.where(answers.index < 7, np.nan, 0.05)
    answers["created_at"] = pd.Timestamp("2026-02-02")
    answers.loc[answers.index % 50 == 0, "created_at"] = pd.NaT
    con = memory()
    load_answers(con, TREE, answers)
    con.execute(
        "UPDATE items SET split = CASE WHEN item_id < 'i10' THEN 'train' ELSE 'test' END, "
        "source = CASE WHEN item_id >= 'i18' THEN 'odd' WHEN item_id < 'i02' THEN NULL ELSE 'web' END, "
        "segment = CASE WHEN item_id = 'i05' THEN NULL ELSE 'en' END, content_hash = 'h-' || item_id"
    )
    # Leakage: i01 (train) and i12 (test) carry the same content; i03 and i04 too, but both in train.
    con.execute("UPDATE items SET content_hash = 'same-a' WHERE item_id IN ('i01', 'i12')")
    con.execute("UPDATE items SET content_hash = 'same-b' WHERE item_id IN ('i03', 'i04')")
    # The same id filed under two splits.
    con.execute("INSERT INTO items (item_id, split, content_hash, source) VALUES ('i07', 'validation', 'h-i07', 'web')")
    derived_base.build(con)
    return con


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = planted()
    yield c
    c.close()


def test_duplicates_across_splits(con) -> None:
    got = data_quality.cross_split_duplicates(con, ALL)
    found = {(r.kind, r.key): (list(r.items), list(r.splits)) for r in got.itertuples()}
    assert found == {
        ("id", "i07"): (["i07"], ["train", "validation"]),
        ("content", "same-a"): (["i01", "i12"], ["test", "train"]),
        ("content", "h-i07"): (["i07"], ["train", "validation"]),
    }
    # A filter that keeps only i12 still shows its leak partner.
    only = data_quality.cross_split_duplicates(con, Filters(sources=("web",), branch="a"))
    assert ("content", "same-a") in {(r.kind, r.key) for r in only.itertuples()}


def test_missing_metadata_counts(con) -> None:
    got = data_quality.missing_metadata(con, ALL).set_index(["table", "field"])
    answers = con.execute("SELECT * FROM annotations").df()
    assert got.loc[("annotations", "duration_s"), "missing"] == answers["duration_s"].isna().sum() == 5
    assert got.loc[("annotations", "cost"), "missing"] == 7
    assert got.loc[("annotations", "created_at"), "missing"] == answers["created_at"].isna().sum() > 0
    assert got.loc[("items", "source"), "missing"] == 2 and got.loc[("items", "segment"), "missing"] == 1
    assert got.loc[("annotations", "cost"), "share"] == pytest.approx(7 / len(answers))


def test_too_fast_annotators(con) -> None:
    got = data_quality.too_fast_annotators(con, ALL).set_index("annotator_id")
    assert set(got.index) == {"abs_fast", "rel_fast"}  # few_fast has too few answers to judge
    durations = con.execute("SELECT duration_s FROM annotations").df()["duration_s"]
    assert got["population_median_s"].iloc[0] == pytest.approx(durations.median())
    assert got.loc["abs_fast", "reason"].startswith("median below 2")
    assert "20%" in got.loc["rel_fast", "reason"]
    only_floor = data_quality.too_fast_annotators(con, ALL, relative=0.05)
    assert only_floor["annotator_id"].tolist() == ["abs_fast"]


def test_source_divergence_matches_scipy(con) -> None:
    got = data_quality.source_divergence(con, ALL).set_index("source")
    answers = con.execute(
        "SELECT a.source, n.lineage[1] AS top FROM d_answers a JOIN d_nodes n USING (tree_version, node_id) "
        "WHERE a.source IS NOT NULL"
    ).df()
    table = pd.crosstab(answers["source"], answers["top"])
    overall = table.sum(axis=0).to_numpy()
    for source in table.index:
        assert got.loc[source, "js_distance"] == pytest.approx(
            jensenshannon(table.loc[source].to_numpy(), overall, base=2)
        )
    assert got["flagged"].to_dict() == {"odd": True, "web": False}


def test_check_counts(con) -> None:
    got = data_quality.check_counts(con, ALL).set_index("check")
    assert got.loc["ids_in_several_splits", "count"] == 1
    assert got.loc["content_in_several_splits", "count"] == 3
    assert got.loc["too_fast_annotators", ["count", "severity"]].tolist() == [2, "warning"]
    assert got.loc["annotations_without_cost", "count"] == 7
    assert got.loc["items_without_split", ["count", "severity"]].tolist() == [0, "ok"]
    assert list(got.reset_index().columns) == data_quality.CHECK_COLUMNS


def test_empty_warehouse() -> None:
    con = memory()
    assert data_quality.cross_split_duplicates(con, ALL).empty
    for frame in (
        data_quality.missing_metadata(con, ALL),
        data_quality.too_fast_annotators(con, ALL),
        data_quality.source_divergence(con, ALL),
    ):
        assert frame.empty


@pytest.fixture(scope="module")
def demo() -> Iterator[duckdb.DuckDBPyConnection]:
    c = demo_warehouse()
    yield c
    c.close()


def test_demo_duplicates_and_spammers_are_found(demo) -> None:
    facts = {k: json.loads(v) for k, v in demo.execute("SELECT key, value FROM demo_manifest").fetchall()}
    duplicates = data_quality.cross_split_duplicates(demo, ALL)
    assert duplicates[duplicates["kind"] == "content"]["n_items"].sum() == facts["duplicate_content_items"] > 0
    fast = set(data_quality.too_fast_annotators(demo, ALL)["annotator_id"])
    assert fast == set(facts["spammers"])
    drift = data_quality.source_divergence(demo, ALL).set_index("source")
    assert drift.loc[facts["drift"]["source"], "flagged"] and drift["flagged"].sum() == 1


def test_refreshed_tables_give_the_same_answers_as_recomputing() -> None:
    con = planted()
    checks = (
        data_quality.cross_split_duplicates,
        data_quality.missing_metadata,
        data_quality.too_fast_annotators,
        data_quality.source_divergence,
        data_quality.check_counts,
    )
    computed = [fn(con, ALL) for fn in checks]
    data_quality.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
    everything = Filters(stages=tuple(sorted(STAGES)))  # every answer, but not served from the tables
    for fn, before in zip(checks, computed, strict=True):
        pd.testing.assert_frame_equal(fn(con, ALL), before, check_dtype=False)
        pd.testing.assert_frame_equal(fn(con, everything), before, check_dtype=False)


@pytest.fixture(scope="module")
def refreshed() -> Iterator[duckdb.DuckDBPyConnection]:
    """The small demo with the data-quality tables (cells, stored checks) written."""
    c = demo_warehouse()
    data_quality.refresh_step(c, RefreshContext(full=True, since_batch=0, touched_items=0))
    yield c
    c.close()


def filter_kinds(con: duckdb.DuckDBPyConnection) -> list[Filters]:
    """Every sidebar filter kind, alone and combined: the cells serve some, the answers the rest."""
    first = con.execute("SELECT min(week)::DATE FROM d_answers").fetchone()[0]
    branch = con.execute(
        "SELECT consensus_lineage[1] FROM d_items GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()[0]

    def busiest(column: str) -> str:
        return con.execute(
            "SELECT " + column + " FROM d_answers WHERE " + column + " IS NOT NULL "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]

    source, segment, tier, stage, annotator = (
        busiest(c) for c in ("source", "segment", "tier", "stage", "annotator_id")
    )
    week_end = first + pd.Timedelta(days=6)
    return [
        Filters(start=first, end=week_end),
        Filters(start=first + pd.Timedelta(days=2), end=first + pd.Timedelta(days=12)),
        Filters(branch=branch),
        Filters(sources=(source,)),
        Filters(segments=(segment,)),
        Filters(tiers=(tier,)),
        Filters(stages=(stage,)),
        Filters(annotators=(annotator,)),
        Filters(tree_version=1),
        Filters(branch=branch, tiers=(tier,), start=first, end=first + pd.Timedelta(days=13)),
        Filters(sources=(source,), stages=(stage,), segments=(segment,)),
        Filters(tiers=("nobody",)),
    ]


def reference_too_fast(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Every annotator's median over the filtered answers, then the bar: the straightforward computation."""
    pred, params = f.where("a")
    per = con.execute(data_quality._per_annotator(pred), params).df()
    fast = per[
        (per["timed_answers"] >= 10)
        & ((per["median_duration_s"] < 2.0) | (per["median_duration_s"] < 0.2 * per["population_median_s"]))
    ]
    return fast.sort_values("annotator_id").set_index("annotator_id")


def test_filtered_checks_equal_the_straightforward_computation(refreshed) -> None:
    con = refreshed
    for f in filter_kinds(con):
        pred, params = f.where("a")
        fast = data_quality.too_fast_annotators(con, f).set_index("annotator_id").sort_index()
        want = reference_too_fast(con, f)
        assert list(fast.index) == list(want.index), f
        for column in ("answers", "timed_answers", "median_duration_s", "population_median_s", "tier"):
            assert fast[column].tolist() == want[column].tolist(), (f, column)

        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE created_at IS NULL), count(*) FILTER (WHERE cost IS NULL), "
            "count(*) FILTER (WHERE duration_s IS NULL) FROM d_answers a WHERE " + pred, params
        ).fetchone()
        item_pred, item_params = soft_labels.scoped("d.item_idx", f)
        items = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE source IS NULL), count(*) FILTER (WHERE segment IS NULL), "
            "count(*) FILTER (WHERE split IS NULL) FROM d_items d WHERE " + item_pred, item_params
        ).fetchone()
        missing = data_quality.missing_metadata(con, f)
        assert missing["total"].tolist() == [row[0]] * 3 + [items[0]] * 3, f
        assert missing["missing"].tolist() == [*row[1:], *items[1:]], f

        top = con.execute(
            "SELECT a.source, n.lineage[1] AS top, count(*) AS n FROM d_answers a JOIN d_nodes n "
            "USING (tree_version, node_id) WHERE a.source IS NOT NULL AND " + pred + " GROUP BY ALL", params
        ).df()
        got = data_quality.source_divergence(con, f).set_index("source")
        if top.empty:
            assert got.empty
        else:
            table = top.pivot_table(index="source", columns="top", values="n", aggfunc="sum", fill_value=0)
            assert got["answers"].to_dict() == table.sum(axis=1).to_dict(), f
            overall = table.sum(axis=0).to_numpy(dtype=float)
            for source in table.index:
                want_js = jensenshannon(table.loc[source].to_numpy(dtype=float), overall, base=2)
                assert got.loc[source, "js_distance"] == (0.0 if np.isnan(want_js) else want_js), f

        scope, scope_params = soft_labels.scoped("d.item_idx", f)
        ids = {r[0] for r in con.execute(
            "SELECT x.item_id FROM d_item_index x WHERE x.item_idx IN (SELECT d.item_idx FROM d_items d WHERE "
            + scope + ")", scope_params
        ).fetchall()}
        every = data_quality.cross_split_duplicates(con, ALL)
        kept = every[[bool(ids.intersection(items)) for items in every["items"]]].reset_index(drop=True)
        pd.testing.assert_frame_equal(data_quality.cross_split_duplicates(con, f), kept, check_dtype=False)

        counts = data_quality.check_counts(con, f).set_index("check")["count"]
        assert counts["too_fast_annotators"] == len(want)
        assert counts["ids_in_several_splits"] == int((kept["kind"] == "id").sum())
        assert counts["annotations_without_cost"] == row[2] and counts["items_without_split"] == items[3]


@pytest.mark.parametrize("margin", [1e-3, 1.0, 1e3])
def test_too_fast_is_exact_whatever_the_first_bound(refreshed, monkeypatch, margin: float) -> None:
    """A bound below the bar takes a second pass; one far above it lists more durations; both are exact."""
    monkeypatch.setattr(data_quality, "BOUND_MARGIN", margin)
    for f in filter_kinds(refreshed)[:4]:
        got = data_quality.too_fast_annotators(refreshed, f).set_index("annotator_id").sort_index()
        want = reference_too_fast(refreshed, f)
        assert got["median_duration_s"].tolist() == want["median_duration_s"].tolist()


def test_median_of_counts_matches_duckdb() -> None:
    con = memory()
    rng = np.random.default_rng(5)
    for n in range(1, 40):
        values = np.round(rng.gamma(2.0, 5.0, n), int(rng.integers(0, 3)))
        uniq, counts = np.unique(values, return_counts=True)
        want = con.execute("SELECT median(v) FROM (SELECT unnest(?::DOUBLE[]) AS v)", [values.tolist()]).fetchone()[0]
        assert data_quality._median_of_counts(uniq, counts) == want
    assert data_quality._median_of_counts(np.array([]), np.array([], dtype=np.int64)) is None
