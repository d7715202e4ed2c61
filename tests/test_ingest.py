"""Validated bulk ingest: quarantine reasons, formats, atomicity, idempotency, dry runs."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import queries.ingest_writes as ingest_writes
from queries import ingest as ingest_module
from queries.connection import connect, data_version, memory
from queries.errors import LabelgovError
from queries.ingest import ingest_file
from queries.schema import MIGRATIONS
from queries.taxonomy import parse_tree, read_tree_file, store_tree

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
HEADER = "item_id,annotator_id,label,created_at,duration_s,cost,stage,confidence,annotation_id,distribution"
GOOD = 'i0,a0,1,2024-05-01T10:00:00Z,3.5,0.2,initial,0.9,g0,"{""1"": 0.75, ""2"": 0.25}"'


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = memory()
    store_tree(connection, read_tree_file(FIXTURES / "tree.yaml"), created_by="test")
    return connection


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = ("annotations", "gold_labels", "predictions", "items", "annotators", "quarantine", "ingest_batches")
    return {t: con.execute("SELECT count(*) FROM " + t).fetchone()[0] for t in tables}


BAD_ROWS = {
    "unknown label": ("i1,a1,9,,,,,,x1,", "unknown_label"),
    "no item": (",a1,1,,,,,,x1,", "missing_field"),
    "blank item": ("  ,a1,1,,,,,,x1,", "missing_field"),
    "no annotator": ("i1,,1,,,,,,x1,", "missing_field"),
    "no label": ("i1,a1,,,,,,,x1,", "missing_field"),
    "deprecated node by code": ("i1,a1,4,,,,,,x1,", "deprecated_node"),
    "deprecated node by id": ("i1,a1,grumpy,,,,,,x1,", "deprecated_node"),
    "unparsable timestamp": ("i1,a1,1,yesterday,,,,,x1,", "bad_timestamp"),
    "timestamp before 1990": ("i1,a1,1,1989-12-31T23:59:59,,,,,x1,", "bad_timestamp"),
    "timestamp in the future": (f"i1,a1,1,{(datetime.now() + timedelta(days=3)).date()},,,,,x1,", "bad_timestamp"),
    "negative duration": ("i1,a1,1,,-0.5,,,,x1,", "negative_duration"),
    "duration not a number": ("i1,a1,1,,fast,,,,x1,", "bad_number"),
    "negative cost": ("i1,a1,1,,,-1,,,x1,", "negative_cost"),
    "confidence above 1": ("i1,a1,1,,,,,1.01,x1,", "bad_confidence"),
    "confidence below 0": ("i1,a1,1,,,,,-0.01,x1,", "bad_confidence"),
    "confidence nan": ("i1,a1,1,,,,,NaN,x1,", "bad_confidence"),
    "confidence inf": ("i1,a1,1,,,,,inf,x1,", "bad_confidence"),
    "confidence text": ("i1,a1,1,,,,,sure,x1,", "bad_confidence"),
    "unknown stage": ("i1,a1,1,,,,final,,x1,", "bad_stage"),
    "distribution sum": ('i1,a1,1,,,,,,x1,"{""1"": 0.5, ""2"": 0.49}"', "bad_distribution"),
    "distribution negative": ('i1,a1,1,,,,,,x1,"{""1"": 1.5, ""2"": -0.5}"', "bad_distribution"),
    "distribution unknown node": ('i1,a1,1,,,,,,x1,"{""1"": 0.5, ""9"": 0.5}"', "bad_distribution"),
    "distribution deprecated node": ('i1,a1,1,,,,,,x1,"{""1"": 0.5, ""grumpy"": 0.5}"', "bad_distribution"),
    "distribution same node twice": ('i1,a1,1,,,,,,x1,"{""1"": 0.5, ""happy"": 0.5}"', "bad_distribution"),
    "distribution not json": ("i1,a1,1,,,,,,x1,{1:0.5", "bad_distribution"),
    "distribution empty": ("i1,a1,1,,,,,,x1,{}", "bad_distribution"),
    "id repeated in file": ("i1,a1,1,,,,,,g0,", "duplicate_id"),
}


def test_each_quarantine_reason(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """One good row, then one row per fault: each lands in quarantine at its row with its reason, as written."""
    cases = sorted(BAD_ROWS)
    file = write_csv(tmp_path / "a.csv", GOOD, *(BAD_ROWS[case][0] for case in cases))
    report = ingest_file(con, "annotations", file, actor="t")
    assert report.rows_read == len(cases) + 1
    assert report.rows_accepted == 1
    expected: dict[str, int] = {}
    for case in cases:
        expected[BAD_ROWS[case][1]] = expected.get(BAD_ROWS[case][1], 0) + 1
    assert report.quarantined == expected
    stored = con.execute(
        "SELECT row_number, batch_id, reason, message, original FROM quarantine ORDER BY row_number"
    ).fetchall()
    written = pd.read_csv(file, dtype=str, keep_default_na=False)
    assert [row[0] for row in stored] == list(range(2, len(cases) + 2))
    for (row_number, batch, reason, message, original), case in zip(stored, cases, strict=True):
        assert (batch, reason) == (report.batch_id, BAD_ROWS[case][1]), case
        assert message, case
        as_written = {k: (v or None) for k, v in written.iloc[row_number - 1].items()}
        assert {k: (v or None) for k, v in json.loads(original).items()} == as_written, case
    assert con.execute("SELECT annotation_id FROM annotations").fetchall() == [("g0",)]


def test_malformed_rows_are_quarantined_in_place(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = tmp_path / "ragged.csv"
    file.write_text(
        'item_id,annotator_id,label\ni1,a1,1\ni2,a1,1,x,y\ni3,"a\n1",2\ni4,a1\ni5,a1,2\n', encoding="utf-8"
    )
    report = ingest_file(con, "annotations", file, actor="t")
    assert (report.rows_read, report.rows_accepted, report.quarantined) == (5, 3, {"malformed_row": 2})
    assert con.execute("SELECT row_number, original FROM quarantine ORDER BY 1").fetchall() == [
        (2, '{"line":"i2,a1,1,x,y"}'), (4, '{"line":"i4,a1"}'),
    ]
    # The good rows keep their own places: generated ids carry the row number.
    assert con.execute("SELECT annotation_id, item_id FROM annotations ORDER BY item_id").fetchall() == [
        (f"b{report.batch_id}-1", "i1"), (f"b{report.batch_id}-3", "i3"), (f"b{report.batch_id}-5", "i5"),
    ]


def test_good_row_is_stored_typed_and_resolved(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    report = ingest_file(con, "annotations", write_csv(tmp_path / "a.csv", GOOD), actor="alice")
    assert report.rows_accepted == 1 and report.quarantined == {}
    row = con.execute(
        "SELECT annotation_id, item_id, annotator_id, tree_version, node_id, confidence, distribution, stage, "
        "created_at, duration_s, cost, batch_id FROM annotations"
    ).fetchone()
    assert row == ("g0", "i0", "a0", 1, "happy", 0.9, {"happy": 0.75, "sad": 0.25}, "initial",
                   datetime(2024, 5, 1, 10, 0), 3.5, 0.2, report.batch_id)
    batch = con.execute(
        "SELECT kind, format, tree_version, rows_read, rows_accepted, rows_quarantined, ingested_by FROM ingest_batches"
    ).fetchone()
    assert batch == ("annotations", "csv", 1, 1, 1, 0, "alice")
    assert con.execute("SELECT item_id FROM items").fetchall() == [("i0",)]
    assert con.execute("SELECT annotator_id, kind FROM annotators").fetchall() == [("a0", "crowd")]


def test_timestamps_with_and_without_zone_become_naive_utc(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    rows = [
        "i1,a1,1,2024-05-01T12:30:00+02:00,,,,,t1,",
        "i1,a2,1,2024-05-01T12:30:00-05:30,,,,,t2,",
        "i1,a3,1,2024-05-01 12:30:00,,,,,t3,",
        "i1,a4,1,2024-05-01T12:30:00Z,,,,,t4,",
        "i1,a5,1,1714566600,,,,,t5,",
    ]
    ingest_file(con, "annotations", write_csv(tmp_path / "a.csv", *rows), actor="t")
    got = dict(con.execute("SELECT annotation_id, created_at FROM annotations").fetchall())
    assert got == {
        "t1": datetime(2024, 5, 1, 10, 30),
        "t2": datetime(2024, 5, 1, 18, 0),
        "t3": datetime(2024, 5, 1, 12, 30),
        "t4": datetime(2024, 5, 1, 12, 30),
        "t5": datetime(2024, 5, 1, 12, 30),
    }


def test_duplicate_against_warehouse(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    ingest_file(con, "annotations", write_csv(tmp_path / "a.csv", GOOD), actor="t")
    second = ingest_file(con, "annotations", write_csv(tmp_path / "b.csv", "i5,a5,2,,,,,,g0,", "i6,a5,2,,,,,,n1,"),
                         actor="t")
    assert second.quarantined == {"duplicate_id": 1}
    assert second.rows_accepted == 1
    message = con.execute("SELECT message FROM quarantine").fetchone()[0]
    assert "g0" in message and "already in the warehouse" in message
    assert con.execute("SELECT count(*) FROM annotations WHERE annotation_id = 'g0'").fetchone()[0] == 1


def test_rows_without_ids_get_unique_generated_ids(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "a.csv", "i1,a1,1", "i1,a1,1", "i2,a1,2", header="item_id,annotator_id,label")
    report = ingest_file(con, "annotations", file, actor="t")
    ids = [r[0] for r in con.execute("SELECT annotation_id FROM annotations").fetchall()]
    assert report.rows_accepted == 3 and len(set(ids)) == 3
    assert con.execute("SELECT DISTINCT stage FROM annotations").fetchall() == [("initial",)]


def test_mapping_renames_columns(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "a.csv", "q1,w1,2,7", "q2,w2,3,8", header="question,worker,answer,secs")
    report = ingest_file(con, "annotations", file, mapping="item=question,annotator=worker,label=answer,duration=secs",
                         actor="t")
    assert report.rows_accepted == 2
    assert con.execute("SELECT item_id, annotator_id, node_id, duration_s FROM annotations ORDER BY 1").fetchall() == [
        ("q1", "w1", "sad", 7.0), ("q2", "w2", "angry", 8.0),
    ]


@pytest.mark.parametrize(
    ("mapping", "phrase"),
    [
        ("item", "is not FIELD=COLUMN"),
        ("item=", "is not FIELD=COLUMN"),
        ("itme=question", "unknown field 'itme'"),
        ("item=question,item=worker", "mapped twice"),
        ("item=nope,annotator=worker,label=answer", "there is no column 'nope'"),
    ],
)
def test_mapping_errors_say_what_to_fix(con: duckdb.DuckDBPyConnection, tmp_path: Path, mapping: str,
                                        phrase: str) -> None:
    file = write_csv(tmp_path / "a.csv", "q1,w1,2", header="question,worker,answer")
    with pytest.raises(LabelgovError, match=phrase):
        ingest_file(con, "annotations", file, mapping=mapping, actor="t")
    assert counts(con)["ingest_batches"] == 0


def test_gold_rejects_annotator_mapping(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "g.csv", "q1,2", header="question,truth")
    with pytest.raises(LabelgovError, match="unknown field 'annotator' for gold"):
        ingest_file(con, "gold", file, mapping="item=question,label=truth,annotator=x", actor="t")


def test_gold_and_its_duplicates(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "g.csv", "i1,1,expert", "i2,0,expert", "i1,2,expert", header="item_id,label,source")
    report = ingest_file(con, "gold", file, actor="t")
    assert report.rows_accepted == 2 and report.quarantined == {"duplicate_id": 1}
    assert con.execute("SELECT item_id, node_id, source FROM gold_labels ORDER BY 1").fetchall() == [
        ("i1", "happy", "expert"), ("i2", "neutral", "expert"),
    ]
    again = ingest_file(con, "gold", write_csv(tmp_path / "h.csv", "i2,1", "i3,1", header="item_id,label"), actor="t")
    assert again.quarantined == {"duplicate_id": 1} and again.rows_accepted == 1


def test_predictions_argmax_point_mass_and_bad_probabilities(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    header = "item_id,model,model_version,label,probabilities"
    rows = [
        'i1,m,v1,,"{""1"": 0.2, ""2"": 0.7, ""0"": 0.1}"',
        "i2,m,v1,3,",
        'i3,m,v1,,"{""1"": 0.2, ""2"": 0.7}"',
        "i4,m,v1,,",
        'i1,m,v1,,"{""1"": 1}"',
        'i1,m,,,"{""1"": 1}"',
    ]
    report = ingest_file(con, "predictions", write_csv(tmp_path / "p.csv", *rows, header=header), actor="t")
    assert report.quarantined == {"bad_distribution": 1, "missing_field": 1, "duplicate_id": 1}
    got = con.execute("SELECT item_id, model_version, node_id, probabilities FROM predictions ORDER BY 1, 2").fetchall()
    assert got == [
        ("i1", "unversioned", "happy", {"happy": 1.0}),
        ("i1", "v1", "sad", {"happy": 0.2, "sad": 0.7, "neutral": 0.1}),
        ("i2", "v1", "angry", {"angry": 1.0}),
    ]


def test_planted_faults_are_counted_exactly(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """Random rows with faults planted at known places: every count and row number must match the plan."""
    rng = np.random.default_rng(7)
    n = 3000
    frame = pd.DataFrame({
        "item_id": [f"i{k}" for k in rng.integers(0, 400, n)],
        "annotator_id": [f"a{k}" for k in rng.integers(0, 30, n)],
        "label": rng.choice(["0", "1", "2", "3", "happy"], n),
        "duration_s": rng.uniform(0.5, 60, n).round(3).astype(str),
        "annotation_id": [f"id{k}" for k in range(n)],
    })
    plan = {"unknown_label": [], "negative_duration": [], "missing_field": [], "duplicate_id": []}
    rows = rng.permutation(n)[:400]
    for k, row in enumerate(rows):
        reason = list(plan)[k % 4]
        plan[reason].append(int(row) + 1)
        if reason == "unknown_label":
            frame.loc[row, "label"] = "x" + str(k)
        elif reason == "negative_duration":
            frame.loc[row, "duration_s"] = "-" + frame.loc[row, "duration_s"]
        elif reason == "missing_field":
            frame.loc[row, "annotator_id"] = ""
        else:
            frame.loc[row, "annotation_id"] = "id" + str(int(rng.integers(0, n)))
    # A repeated id is a duplicate only of an earlier accepted row with the same id.
    accepted_first: dict[str, int] = {}
    bad = {r for reason, rs in plan.items() if reason != "duplicate_id" for r in rs}
    expected_duplicates = []
    for position, annotation_id in enumerate(frame["annotation_id"], start=1):
        if position in bad:
            continue
        if annotation_id in accepted_first:
            expected_duplicates.append(position)
        else:
            accepted_first[annotation_id] = position
    plan["duplicate_id"] = expected_duplicates
    file = tmp_path / "planted.csv"
    frame.to_csv(file, index=False)
    report = ingest_file(con, "annotations", file, actor="t")
    assert report.rows_read == n
    assert report.rows_accepted + report.rows_quarantined == n
    assert report.quarantined == {reason: len(rows) for reason, rows in plan.items() if rows}
    for reason, planted in plan.items():
        stored = [r[0] for r in con.execute(
            "SELECT row_number FROM quarantine WHERE reason = ? ORDER BY 1", [reason]
        ).fetchall()]
        assert stored == sorted(planted)
    assert con.execute("SELECT count(DISTINCT item_id) FROM items").fetchone()[0] == frame.drop(
        index=[r - 1 for rs in plan.values() for r in rs])["item_id"].nunique()


def _round_trip_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["it-1", "it-2", "it-3", "it-4"],
        "annotator_id": ["w1", "w2", "w1", "w3"],
        "label": ["0", "2", "happy", "3"],
        "created_at": ["2024-01-02T03:04:05", "2024-02-03T04:05:06", "2024-03-04T05:06:07", "2024-04-05T06:07:08"],
        "duration_s": [1.5, 2.25, 30.0, 0.125],
        "cost": [0.01, 0.02, 0.0, 1.5],
        "stage": ["initial", "escalated", "review", "adjudication"],
        "confidence": [0.5, 1.0, 0.0, 0.875],
        "annotation_id": ["r1", "r2", "r3", "r4"],
        "distribution": ['{"0": 0.5, "happy": 0.5}', None, '{"sad": 0.25, "3": 0.75}', None],
    })


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif path.suffix == ".parquet":
        typed = frame.assign(created_at=pd.to_datetime(frame["created_at"]))
        typed.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_round_trip_each_format(con: duckdb.DuckDBPyConnection, tmp_path: Path, suffix: str) -> None:
    frame = _round_trip_frame()
    report = ingest_file(con, "annotations", _write(frame, tmp_path / ("a" + suffix)), actor="t")
    assert report.format == {".jsonl": "jsonl"}.get(suffix, suffix[1:])
    assert report.rows_accepted == 4 and report.quarantined == {}
    back = con.execute(
        "SELECT item_id, annotator_id, node_id, created_at, duration_s, cost, stage, confidence, annotation_id, "
        "distribution FROM annotations ORDER BY annotation_id"
    ).df()
    assert back["item_id"].tolist() == frame["item_id"].tolist()
    assert back["annotator_id"].tolist() == frame["annotator_id"].tolist()
    assert back["node_id"].tolist() == ["neutral", "sad", "happy", "angry"]
    assert back["created_at"].tolist() == pd.to_datetime(frame["created_at"]).tolist()
    for column in ("duration_s", "cost", "confidence"):
        assert back[column].tolist() == frame[column].tolist()
    assert back["stage"].tolist() == frame["stage"].tolist()
    assert back["annotation_id"].tolist() == frame["annotation_id"].tolist()
    stored = con.execute("SELECT distribution FROM annotations ORDER BY annotation_id").fetchall()
    distributions = [d for (d,) in stored]
    assert distributions == [{"neutral": 0.5, "happy": 0.5}, None, {"sad": 0.25, "angry": 0.75}, None]


def test_format_option_overrides_extension(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = tmp_path / "export.txt"
    file.write_text("item_id\tannotator_id\tlabel\ni1\ta1\t1\n", encoding="utf-8")
    with pytest.raises(LabelgovError, match="cannot tell the format"):
        ingest_file(con, "annotations", file, actor="t")
    assert ingest_file(con, "annotations", file, fmt="tsv", actor="t").rows_accepted == 1


def test_tree_version_option(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    second = parse_tree("taxonomy: other\nnodes:\n  agree:\n    codes: ['1']\n  disagree:\n    codes: ['0']\n")
    store_tree(con, second, created_by="t")
    file = write_csv(tmp_path / "a.csv", "i1,a1,1", "i2,a1,2", header="item_id,annotator_id,label")
    latest = ingest_file(con, "annotations", file, dry_run=True, actor="t")
    assert latest.tree_version == 2 and latest.quarantined == {"unknown_label": 1}
    first = ingest_file(con, "annotations", file, tree_version=1, actor="t")
    assert first.rows_accepted == 2
    assert con.execute("SELECT DISTINCT tree_version FROM annotations").fetchall() == [(1,)]
    with pytest.raises(LabelgovError, match="--tree-version 7 does not exist"):
        ingest_file(con, "annotations", write_csv(tmp_path / "b.csv", "i1,a1,1", header="item_id,annotator_id,label"),
                    tree_version=7, actor="t")


def test_reingest_is_a_noop(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "a.csv", GOOD, BAD_ROWS["unknown label"][0])
    first = ingest_file(con, "annotations", file, actor="t")
    before, version = counts(con), data_version(con)
    again = ingest_file(con, "annotations", file, actor="t")
    assert again.duplicate_of_batch == first.batch_id and again.batch_id is None
    assert "already ingested" in again.messages[0]
    assert counts(con) == before and data_version(con) == version
    # The same bytes as gold are another batch kind, not a repeat.
    assert ingest_file(con, "gold", file, actor="t").duplicate_of_batch is None


def test_dry_run_writes_nothing_and_reports_the_same(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "a.csv", GOOD, *(row for row, _ in BAD_ROWS.values()))
    before, version = counts(con), data_version(con)
    dry = ingest_file(con, "annotations", file, dry_run=True, actor="t")
    assert dry.dry_run and dry.batch_id is None
    assert counts(con) == before and data_version(con) == version
    real = ingest_file(con, "annotations", file, actor="t")
    assert (real.rows_read, real.rows_accepted, real.quarantined) == (dry.rows_read, dry.rows_accepted, dry.quarantined)
    assert real.rows_accepted + real.rows_quarantined == real.rows_read == len(BAD_ROWS) + 1
    assert data_version(con) == version + 1


def test_failure_midway_leaves_nothing(con: duckdb.DuckDBPyConnection, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ingest_file(con, "annotations", write_csv(tmp_path / "first.csv", GOOD), actor="t")
    before, version = counts(con), data_version(con)
    batches = con.execute("SELECT * FROM ingest_batches").fetchall()
    written = []

    def explode(cur: duckdb.DuckDBPyConnection, kind: str, batch_id: int) -> None:
        written.append(cur.execute("SELECT count(*) FROM annotations WHERE batch_id = ?", [batch_id]).fetchone()[0])
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ingest_writes, "write_new_entities", explode)
    file = write_csv(tmp_path / "second.csv", "i7,a7,1,,,,,,n7,", "i8,a8,9,,,,,,n8,")
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_file(con, "annotations", file, actor="t")
    assert written == [1]  # the rows were inserted before the failure ...
    assert counts(con) == before  # ... and rolled back with everything else
    assert con.execute("SELECT * FROM ingest_batches").fetchall() == batches
    assert data_version(con) == version
    monkeypatch.undo()
    retry = ingest_file(con, "annotations", file, actor="t")
    assert retry.duplicate_of_batch is None and retry.rows_accepted == 1


def test_progress_phases_for_large_files(con: duckdb.DuckDBPyConnection, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_csv(tmp_path / "a.csv", GOOD)
    heard: list[str] = []
    ingest_file(con, "annotations", file, actor="t", progress=heard.append, dry_run=True)
    assert heard == []
    monkeypatch.setattr(ingest_module, "LARGE_FILE_BYTES", 1)
    ingest_file(con, "annotations", file, actor="t", progress=heard.append)
    assert [h.split()[0] for h in heard] == ["hashing", "reading", "validating", "checking", "writing"]


def test_typed_parquet_columns(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """Integer ids, zone-aware timestamps, epoch numbers and a real map column are read by type, not as text."""
    table = pa.table({
        "item_id": pa.array([7, 8, 9], pa.int64()),
        "annotator_id": ["a", "b", "c"],
        "label": pa.array([1, 2, 9], pa.int32()),
        "created_at": pa.array(
            [datetime(2024, 5, 1, 12, 0), datetime(2024, 5, 2, 12, 0), datetime(2024, 5, 3, 12, 0)],
            pa.timestamp("us", tz="Europe/Paris"),
        ),
        "duration_s": pa.array([1, 2, 3], pa.int16()),
        "distribution": pa.array([[("1", 1.0)], None, None], pa.map_(pa.string(), pa.float64())),
    })
    file = tmp_path / "typed.pq"
    pq.write_table(table, file)
    report = ingest_file(con, "annotations", file, actor="t")
    assert report.quarantined == {"unknown_label": 1}
    rows = con.execute(
        "SELECT item_id, node_id, created_at, duration_s, distribution FROM annotations ORDER BY item_id"
    ).fetchall()
    # pyarrow takes the naive datetimes above as UTC instants; the Paris zone must not shift them.
    assert rows == [
        ("7", "happy", datetime(2024, 5, 1, 12, 0), 1.0, {"happy": 1.0}),
        ("8", "sad", datetime(2024, 5, 2, 12, 0), 2.0, None),
    ]
    original = json.loads(con.execute("SELECT original FROM quarantine").fetchone()[0])
    assert original["item_id"] == 9 and original["label"] == 9
    epochs = tmp_path / "epochs.parquet"
    pq.write_table(pa.table({"item_id": ["e1"], "annotator_id": ["a"], "label": ["0"],
                             "created_at": pa.array([1714566600.0])}), epochs)
    ingest_file(con, "annotations", epochs, actor="t")
    assert con.execute("SELECT created_at FROM annotations WHERE item_id = 'e1'").fetchone() == (
        datetime(2024, 5, 1, 12, 30),
    )


def test_migration_keeps_annotations_and_stores_ids_uncompressed(tmp_path: Path) -> None:
    """The rebuilt annotations table keeps every row and column; only the two id columns skip compression."""
    rebuild = next(n for n, (description, _) in enumerate(MIGRATIONS, start=1) if "ids uncompressed" in description)
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as old:
        for number, (description, ddl) in enumerate(MIGRATIONS[: rebuild - 1], start=1):
            old.execute(ddl)
            old.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [number, description])
        old.execute(
            "INSERT INTO annotations SELECT 'a' || i, 'i' || (i % 500), 'w' || (i % 3), 1, 'n' || (i % 7), i / 5000, "
            "map(['x'], [0.5]), 'review', TIMESTAMP '2024-01-01' + to_seconds(i), i, NULL, 'g1', 1 "
            "FROM range(5000) t(i)"
        )
        before = old.execute("SELECT * FROM annotations ORDER BY annotation_id").fetchall()
        columns = old.execute("DESCRIBE annotations").fetchall()
    with connect(db) as con:
        assert con.execute("SELECT * FROM annotations ORDER BY annotation_id").fetchall() == before
        assert con.execute("DESCRIBE annotations").fetchall() == columns
        con.execute("CHECKPOINT")
        methods = dict(con.execute(
            "SELECT column_name, list(DISTINCT compression ORDER BY compression) "
            "FROM pragma_storage_info('annotations') WHERE segment_type = 'VARCHAR' GROUP BY column_name"
        ).fetchall())
    assert methods["annotation_id"] == methods["item_id"] == ["Uncompressed"]
    assert "Uncompressed" not in methods["annotator_id"] + methods["node_id"]
