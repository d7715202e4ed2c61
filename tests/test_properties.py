"""Property-based checks: ingest conserves rows and round-trips values; filter values never shape SQL."""

from __future__ import annotations

import csv
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from queries.connection import memory
from queries.filters import Filters
from queries.ingest import ingest_file
from queries.taxonomy import read_tree_file, store_tree

TREE = Path(__file__).parent / "fixtures" / "ingest" / "tree.yaml"
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(min_size=1, max_size=30)
values = st.lists(text, max_size=4).map(tuple)


@SETTINGS
@given(sources=values, segments=values, tiers=values, annotators=values)
def test_filter_values_never_change_sql_shape(sources: tuple[str, ...], segments: tuple[str, ...],
                                              tiers: tuple[str, ...], annotators: tuple[str, ...]) -> None:
    marker = ("m",)
    reference = Filters(sources=marker, segments=marker, tiers=marker, annotators=marker).where()[0]
    sql, params = Filters(sources=sources or marker, segments=segments or marker, tiers=tiers or marker,
                          annotators=annotators or marker).where()
    assert sql == reference
    assert [sorted(set(p)) for p in params] == [sorted(set(v or marker)) for v in (sources, segments, tiers,
                                                                                      annotators)]


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
row = st.tuples(cell, cell, st.sampled_from(["0", "1", "2", "3", "4", "99", ""]))


@SETTINGS
@given(rows=st.lists(row, min_size=1, max_size=25))
@example(rows=[("0", " \xa0", "0")])  # padded by a space around a Unicode space: only the ASCII one goes
def test_ingest_conserves_rows_and_round_trips(rows: list[tuple[str, str, str]], tmp_path: Path) -> None:
    file = tmp_path / f"gen{abs(hash(tuple(rows)))}.csv"
    with file.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "annotator_id", "label"])
        writer.writerows(rows)
    with memory() as con:
        store_tree(con, read_tree_file(TREE), created_by="t")
        try:
            report = ingest_file(con, "annotations", file)
        except Exception as exc:  # a whole-file refusal must be a clear LabelgovError
            from queries.errors import LabelgovError
            assert isinstance(exc, LabelgovError)
            return
        assert report.rows_accepted + report.rows_quarantined == report.rows_read
        stored = con.execute("SELECT item_id, annotator_id FROM annotations ORDER BY ALL").fetchall()
        assert len(stored) == report.rows_accepted
        expected = sorted((i.strip(" "), a.strip(" ")) for i, a, lab in rows
                          if i.strip(" ") and a.strip(" ") and lab in ("0", "1", "2", "3"))
        if report.rows_read == len(rows):
            assert sorted(stored) == expected
