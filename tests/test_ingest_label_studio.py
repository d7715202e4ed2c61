"""Label Studio JSON exports: choices and taxonomy answers, annotators, durations and odd annotations."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from queries.connection import memory
from queries.errors import LabelgovError
from queries.ingest import ingest_file
from queries.taxonomy import read_tree_file, store_tree

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
EXPORT = FIXTURES / "label_studio_export.json"


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = memory()
    store_tree(connection, read_tree_file(FIXTURES / "tree.yaml"), created_by="test")
    return connection


def test_export_fixture(con: duckdb.DuckDBPyConnection) -> None:
    report = ingest_file(con, "annotations", EXPORT, actor="t")
    tasks = json.loads(EXPORT.read_text(encoding="utf-8"))
    annotations = [a for t in tasks for a in t["annotations"]]
    assert report.format == "labelstudio"
    assert report.rows_read == len(annotations) == 7
    assert report.quarantined == {"cancelled": 1, "multiple_labels": 1, "unknown_label": 1, "missing_field": 1}
    rows = con.execute(
        "SELECT annotation_id, item_id, annotator_id, node_id, created_at, duration_s FROM annotations "
        "ORDER BY annotation_id"
    ).fetchall()
    assert rows == [
        # choices answer "Happy" is the title of node happy; completed_by is a user id
        ("ls-1001", "101", "10", "happy", datetime(2024, 3, 9, 22, 16, 8, 728353), 4.288),
        # taxonomy path Emotional/Negative/Sad -> its last element; completed_by is a user object
        ("ls-1002", "101", "ana@example.com", "sad", datetime(2024, 3, 10, 6, 0), 12.5),
        # choices value "0" is a code; data.item_id names the item
        ("ls-1003", "face-102", "10", "neutral", datetime(2024, 3, 11, 9, 30), 2.0),
    ]
    quarantined = con.execute("SELECT row_number, reason, original FROM quarantine ORDER BY row_number").fetchall()
    assert [(r, reason) for r, reason, _ in quarantined] == [
        (4, "cancelled"), (5, "multiple_labels"), (6, "unknown_label"), (7, "missing_field"),
    ]
    assert [json.loads(original)["annotation"]["id"] for _, _, original in quarantined] == [1004, 1005, 1006, 1007]
    assert sorted(r[0] for r in con.execute("SELECT annotator_id FROM annotators").fetchall()) == [
        "10", "ana@example.com",
    ]


def test_item_from_a_data_key_and_label_from_a_named_control(con: duckdb.DuckDBPyConnection) -> None:
    report = ingest_file(con, "annotations", EXPORT, mapping="item=image,label=taxonomy", dry_run=True, actor="t")
    # Only annotation 1002 and 1006 answer the "taxonomy" control; 1006 names an unknown node.
    assert report.rows_accepted == 1
    ingest_file(con, "annotations", EXPORT, mapping="item=image", actor="t")
    items = {r[0] for r in con.execute("SELECT item_id FROM annotations").fetchall()}
    assert items == {"https://example.com/faces/101.jpg", "https://example.com/faces/102.jpg"}


def test_gold_from_an_export(con: duckdb.DuckDBPyConnection) -> None:
    report = ingest_file(con, "gold", EXPORT, actor="t")
    # Two accepted answers for task 101: the second is a duplicate gold label for the same item.
    assert report.quarantined["duplicate_id"] == 1
    assert con.execute("SELECT item_id, node_id FROM gold_labels ORDER BY 1").fetchall() == [
        ("101", "happy"), ("face-102", "neutral"),
    ]


def test_predictions_and_other_mappings_are_refused(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(LabelgovError, match="read for annotations and gold"):
        ingest_file(con, "predictions", EXPORT, actor="t")
    with pytest.raises(LabelgovError, match="only takes --map item=DATA_KEY"):
        ingest_file(con, "annotations", EXPORT, mapping="annotator=who", actor="t")


def test_json_lines_file_named_json(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = tmp_path / "lines.json"
    file.write_text('{"item_id": "i1", "annotator_id": "a", "label": "1"}\n', encoding="utf-8")
    with pytest.raises(LabelgovError, match="is not a Label Studio JSON export"):
        ingest_file(con, "annotations", file, actor="t")
    assert ingest_file(con, "annotations", file, fmt="jsonl", actor="t").rows_accepted == 1
