"""The answers held in memory select exactly the rows SQL selects, and follow the warehouse's changes."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pytest

from queries import (
    agreement,
    answer_arrays,
    calibration,
    cost_quality,
    data_quality,
    drift,
    escalation,
    hierarchy_accuracy,
    overview,
    reliability,
)
from queries.connection import bump_data_version, connect, memory
from queries.filters import Filters

T = TypeVar("T")


@pytest.fixture
def in_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(answer_arrays, "_enabled", True)
    monkeypatch.setattr(answer_arrays, "_held", None)
    yield


def _rows(fetched: agreement.Fetched) -> np.ndarray:
    """The fetched answers as sorted rows: the two paths return them in different orders."""
    columns = [fetched.item, fetched.value]
    columns += [c for c in (fetched.day, fetched.annotator) if c is not None]
    rows = np.column_stack([np.asarray(c, dtype=np.int64) for c in columns])
    return rows[np.lexsort(rows.T[::-1])] if rows.size else rows


def _cases(con) -> list[Filters]:
    branch, source, segment = con.execute(
        "SELECT consensus_lineage[2], source, segment FROM d_items WHERE len(consensus_lineage) > 1 "
        "GROUP BY ALL ORDER BY count(*) DESC LIMIT 1"
    ).fetchall()[0]
    tier, first, last = con.execute(
        "SELECT tier, min(created_at), max(created_at) FROM d_answers WHERE tier IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    ).fetchall()[0]
    people = [r[0] for r in con.execute("SELECT DISTINCT annotator_id FROM d_answers ORDER BY 1 LIMIT 12").fetchall()]
    # Mid-week bounds on both sides: the day, not the week, decides.
    start, end = first.date() + timedelta(days=17), first.date() + timedelta(days=45)
    return [
        Filters(branch=branch),
        Filters(sources=(source,)),
        Filters(segments=(segment, "no-such-segment")),
        Filters(tiers=(tier,)),
        Filters(stages=("escalated",)),
        Filters(annotators=(*people[:3], "nobody")),
        Filters(annotators=tuple(people)),  # more than Filters' LISTED_VALUES: a semi-join in SQL
        Filters(start=start),
        Filters(end=end),
        Filters(start=last.date(), end=last.date()),
        Filters(tree_version=1),
        Filters(tree_version=2),
        Filters(branch=branch, tiers=(tier,), start=start, end=end, stages=("initial",)),
        Filters(sources=("no-such-source",)),
    ]


def test_filtered_rows_equal_the_rows_sql_selects(small_demo: Path, in_memory: None) -> None:
    with connect(small_demo, read_only=True) as con:
        for f in _cases(con):
            for window in (None, "week"):
                held = agreement.fetch(con, f, window, annotator=True)
                assert held.presorted, f
                answer_arrays._enabled = False
                live = agreement.fetch(con, f, window, annotator=True)
                answer_arrays._enabled = True
                assert not live.presorted
                np.testing.assert_array_equal(_rows(held), _rows(live), err_msg=str(f))
                # Already in the order a sort would give, which the statistics rely on.
                ordered, resorted = held.sorted(), agreement.Fetched(held.item, held.value, held.day, None).sorted()
                np.testing.assert_array_equal(ordered.item, resorted.item)
                if window is not None:
                    np.testing.assert_array_equal(ordered.day, resorted.day)
                    np.testing.assert_array_equal(ordered.value, resorted.value)


def test_page_results_from_the_arrays_equal_the_sql_scan(small_demo: Path, in_memory: None) -> None:
    with connect(small_demo, read_only=True) as con:
        for f in _cases(con)[:5]:
            # The matrix alone finds its reference window on its own (drift._reference_end).
            questions = (
                lambda f=f: drift.drift_report(con, f),
                lambda f=f: agreement.agreement_table(con, f, by="week"),
                lambda f=f: drift.drift_matrix(con, f),
            )
            held = [question() for question in questions]
            answer_arrays._enabled = False
            live = [question() for question in questions]
            answer_arrays._enabled = True
            for name in ("matrix", "shares", "agreement", "annotators", "alerts"):
                pd.testing.assert_frame_equal(getattr(held[0], name), getattr(live[0], name), obj=f"{name} {f}")
            for got, want in zip(held[1:], live[1:], strict=True):
                pd.testing.assert_frame_equal(got, want, obj=str(f))


def _held_and_live(question: Callable[[], T]) -> tuple[T, T]:
    """The answer from the arrays in memory, then from SQL."""
    held = question()
    answer_arrays._enabled = False
    try:
        return held, question()
    finally:
        answer_arrays._enabled = True


def test_checks_and_tables_from_the_arrays_equal_the_sql_scan(small_demo: Path, in_memory: None) -> None:
    with connect(small_demo, read_only=True) as con:
        for f in _cases(con):
            # Bars low and high enough that every case has annotators on both sides of it.
            for relative in (0.2, 0.9):
                held, live = _held_and_live(
                    lambda f=f, r=relative: data_quality.too_fast_annotators(con, f, relative=r, min_answers=1)
                )
                pd.testing.assert_frame_equal(held, live, obj=str(f))
            tables = (
                reliability.annotator_table,
                agreement.pairwise_kappa,
                escalation.gains_by,  # items in scope marked over the held answers
                cost_quality.pareto_frontier,  # ... and only gold items among them
                hierarchy_accuracy.hierarchical_accuracy,  # each gold item's plurality over the held answers
                calibration.calibration_table,  # rows of every gold item's matrix, kept per data version
                calibration.reliability_bins,
                data_quality.cross_split_duplicates,  # the duplicates' items in scope, marked over the answers
                data_quality.missing_metadata,
            )
            for table in tables:
                held, live = _held_and_live(lambda f=f, table=table: table(con, f))
                pd.testing.assert_frame_equal(held, live, obj=f"{table.__name__} {f}")
            tiles, sql_tiles = _held_and_live(lambda f=f: overview.overview(con, f))
            assert tiles.period == sql_tiles.period
            for tile, sql_tile in zip(tiles.tiles, sql_tiles.tiles, strict=True):
                for got, want in ((tile.value, sql_tile.value), (tile.previous, sql_tile.previous)):
                    assert (got is None) == (want is None) and (got is None or got == pytest.approx(want, rel=1e-12))
        flagged = data_quality.too_fast_annotators(con, _cases(con)[0], relative=0.9, min_answers=1)
        assert len(flagged) > 1 and flagged["tier"].notna().any() and flagged["annotator_kind"].notna().all()
        numbers = overview.overview(con, _cases(con)[1]).tiles
        assert all(t.value is not None for t in numbers), "every tile has a value under a source filter"


def test_arrays_follow_a_change_of_the_data(small_demo: Path, tmp_path: Path, in_memory: None) -> None:
    copy = tmp_path / "w.duckdb"
    shutil.copy(small_demo, copy)
    with connect(copy, read_only=True) as con:
        f = _cases(con)[1]
        before = agreement.fetch(con, f, "week")
    with connect(copy) as con:
        gone = int(before.item[0])
        con.execute("DELETE FROM d_answers WHERE item_idx = ?", [gone])
        bump_data_version(con)
    with connect(copy, read_only=True) as con:
        after = agreement.fetch(con, f, "week")
    assert after.presorted and gone not in set(after.item.tolist())
    assert after.item.size == before.item.size - int((before.item == gone).sum())


def _stated(fetched: agreement.Fetched) -> np.ndarray:
    """Each fetched answer's stated confidence as a double, in the order of _rows."""
    stated = np.asarray(fetched.confidence)
    if fetched.confidence_levels is not None:
        stated = fetched.confidence_levels[stated]
    keys = [fetched.item, fetched.value, fetched.day, fetched.annotator, stated]
    return stated[np.lexsort([np.asarray(c) for c in keys[::-1]])]


def test_stated_confidences_are_held_as_codes_on_a_coarse_scale_and_as_doubles_on_a_fine_one(
    small_demo: Path, tmp_path: Path, in_memory: None
) -> None:
    copy = tmp_path / "w.duckdb"
    shutil.copy(small_demo, copy)
    for fine in (False, True):
        if fine:  # more distinct confidences than a byte can number
            with connect(copy) as con:
                con.execute("UPDATE d_answers SET confidence = round(random(), 6) WHERE confidence IS NOT NULL")
                bump_data_version(con)
        with connect(copy, read_only=True) as con:
            for f in _cases(con)[:5]:
                held = agreement.fetch(con, f, "week", annotator=True, confidence=True)
                assert held.presorted
                answer_arrays._enabled = False
                live = agreement.fetch(con, f, "week", annotator=True, confidence=True)
                answer_arrays._enabled = True
                np.testing.assert_array_equal(_stated(held), _stated(live), err_msg=f"{f} fine={fine}")
                frames = _held_and_live(lambda f=f: drift.drift_report(con, f).confidence)
                pd.testing.assert_frame_equal(*frames, obj=f"{f} fine={fine}")
            levels = answer_arrays._arrays(con).confidence_levels
            assert (levels is None) == fine
            assert fine or np.isnan(levels).sum() == 1


def test_warehouses_in_memory_and_unfiltered_questions_are_not_held(in_memory: None) -> None:
    con = memory()
    con.execute("CREATE TABLE d_answers AS SELECT 1 AS item_idx, CAST(1 AS SMALLINT) AS value_idx")
    assert answer_arrays.filtered(con, Filters(sources=("x",)), None, annotator=False) is None
    assert answer_arrays.filtered(con, Filters(), None, annotator=False) is None
    assert answer_arrays._held is None


def test_kept_tables_wait_for_a_filtered_question(small_demo: Path, in_memory: None) -> None:
    """A table kept beside the arrays is computed afresh until a filtered question has fetched the arrays of
    this version (an unfiltered question never holds them), then computed once."""
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    with connect(small_demo, read_only=True) as con:
        assert answer_arrays.kept(con, "probe", compute) == 1
        assert answer_arrays.kept(con, "probe", compute) == 2  # nothing held yet: not kept
        agreement.fetch(con, Filters(tiers=("expert",)))  # a filtered question holds the arrays
        assert answer_arrays.kept(con, "probe", compute) == 3
        assert answer_arrays.kept(con, "probe", compute) == 3


def test_a_pinned_drift_page_reads_the_data_version_once_and_keeps_it(
    small_demo: Path, tmp_path: Path, in_memory: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a pin, every lookup of the held answers (in the page's worker threads too) takes the version read on
    entry: one statement instead of one per lookup, and one version of the data for the whole question even when
    a write lands meanwhile."""
    copy = tmp_path / "w.duckdb"
    shutil.copy(small_demo, copy)
    with connect(copy) as con:
        f = _cases(con)[1]
        expected = drift.drift_report(con, f)  # the arrays are held and the tables kept from here on
        reads: list[int] = []
        original = answer_arrays.file_and_cache_key

        def counted(c: object) -> tuple[str | None, str]:
            reads.append(1)
            return original(c)

        monkeypatch.setattr(answer_arrays, "file_and_cache_key", counted)
        got = drift.drift_report(con, f)
        assert len(reads) == 1
        pd.testing.assert_frame_equal(got.alerts, expected.alerts)
        with answer_arrays.pinned(con):
            bump_data_version(con)  # another version of the data from here on
            pinned = agreement.fetch(con, f, "week")
        assert answer_arrays._held is not None and pinned.presorted
        assert len(reads) == 2  # the pin's own read; the bumped version is not seen inside the block
        agreement.fetch(con, f, "week")
        assert len(reads) == 3  # outside the block the version is read again, and the arrays refetched
