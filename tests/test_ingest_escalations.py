"""Ingest of the escalation log: exact landing in every format, quarantine reasons, idempotency, dry runs,
the refreshed escalation analytics, and the command line's messages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from dashboard.cli import main
from queries.connection import data_version, memory
from queries.errors import LabelgovError
from queries.escalation import escalation_summary, time_to_label
from queries.filters import Filters
from queries.ingest import ingest_file
from queries.refresh import refresh
from queries.taxonomy import read_tree_file, store_tree
from tests.conftest import run_cli as run

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
HEADER = "item_id,trigger,routed_to,created_at,resolved_at"
GOOD = "i1,low_confidence,e1,2024-05-01T10:00:00,2024-05-02T12:30:00"
COLUMNS = ["item_id", "trigger", "routed_to", "created_at", "resolved_at"]
TABLES = ("escalations", "items", "annotators", "annotations", "quarantine", "ingest_batches")


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = memory()
    store_tree(connection, read_tree_file(FIXTURES / "tree.yaml"), created_by="test")
    return connection


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: con.execute("SELECT count(*) FROM " + t).fetchone()[0] for t in TABLES}


def stored(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        "SELECT item_id, trigger, routed_to, created_at, resolved_at FROM escalations ORDER BY item_id, created_at"
    ).df()


def times(values: pd.Series) -> list[pd.Timestamp | None]:
    """Timestamps with every kind of missing (None, NaN, NaT) as None, to compare open escalations."""
    return [None if pd.isna(t) else pd.Timestamp(t) for t in values]


def _log() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["it-1", "it-2", "it-2", "it-3"],
        "trigger": ["low_confidence", "disagreement", "policy", "low_confidence"],
        "routed_to": ["e1", None, "e2", "e1"],
        "created_at": ["2024-01-02T03:04:05", "2024-02-03T04:05:06", "2024-02-04T00:00:00", "2024-03-04T05:06:07"],
        "resolved_at": ["2024-01-03T03:04:05", None, "2024-02-05T08:00:00", None],
    })


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif path.suffix == ".parquet":
        frame.assign(
            created_at=pd.to_datetime(frame["created_at"]), resolved_at=pd.to_datetime(frame["resolved_at"])
        ).to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_good_file_lands_exactly_in_each_format(con: duckdb.DuckDBPyConnection, tmp_path: Path, suffix: str) -> None:
    frame = _log()
    report = ingest_file(con, "escalations", _write(frame, tmp_path / ("e" + suffix)), actor="t")
    assert report.format == suffix[1:]
    assert (report.rows_read, report.rows_accepted, report.quarantined) == (4, 4, {})
    assert report.new_items == frame["item_id"].nunique() and report.batch_id == 1
    back = stored(con)
    assert back["item_id"].tolist() == frame["item_id"].tolist()
    assert back["trigger"].tolist() == frame["trigger"].tolist()
    assert back["routed_to"].tolist() == frame["routed_to"].tolist()
    assert back["created_at"].tolist() == pd.to_datetime(frame["created_at"]).tolist()
    assert times(back["resolved_at"]) == times(frame["resolved_at"])
    assert con.execute("SELECT DISTINCT batch_id FROM escalations").fetchall() == [(1,)]
    assert con.execute("SELECT kind, rows_read, rows_accepted FROM ingest_batches").fetchall() == [
        ("escalations", 4, 4)
    ]
    assert sorted(r[0] for r in con.execute("SELECT item_id FROM items").fetchall()) == sorted(set(frame["item_id"]))


def test_times_with_a_zone_become_naive_utc(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "e.csv", "i1,policy,,2024-05-01T12:00:00+02:00,2024-05-01T12:30:00Z")
    ingest_file(con, "escalations", file)
    assert stored(con)[["created_at", "resolved_at"]].iloc[0].tolist() == [
        pd.Timestamp("2024-05-01T10:00:00"), pd.Timestamp("2024-05-01T12:30:00")
    ]


FUTURE = (datetime.now() + timedelta(days=3)).date()
BAD_ROWS = {
    "no item": (",policy,e1,2024-05-01T10:00:00,", "missing_field", "no item (column item_id)"),
    "blank item": ("  ,policy,e1,2024-05-01T10:00:00,", "missing_field", "no item (column item_id)"),
    "no trigger": ("i2,,e1,2024-05-01T10:00:00,", "missing_field", "no trigger (column trigger)"),
    "blank trigger": ("i2,   ,e1,2024-05-01T10:00:00,", "missing_field", "no trigger (column trigger)"),
    "no created_at": ("i2,policy,e1,,", "missing_field", "no created_at (column created_at)"),
    "blank created_at": ("i2,policy,e1,  ,", "missing_field", "no created_at (column created_at)"),
    "unreadable created_at": (
        "i2,policy,e1,yesterday,", "bad_timestamp", "created_at yesterday is not an ISO 8601 timestamp"
    ),
    "created_at before 1990": ("i2,policy,e1,1989-12-31T23:59:59,", "bad_timestamp", "is impossible: before 1990"),
    "created_at in the future": (f"i2,policy,e1,{FUTURE},", "bad_timestamp", "more than a day in the future"),
    "unreadable resolved_at": (
        "i2,policy,e1,2024-05-01T10:00:00,soon", "bad_timestamp", "resolved_at soon is not an ISO 8601 timestamp"
    ),
    "resolved before created": (
        "i2,policy,e1,2024-05-01T10:00:00,2024-05-01T09:59:59",
        "resolved_before_created",
        "resolved_at 2024-05-01T09:59:59 is before created_at 2024-05-01T10:00:00",
    ),
    "trigger too long": ("i2," + "x" * 65 + ",e1,2024-05-01T10:00:00,", "bad_trigger", "65 characters long"),
    "repeat in file": (
        "i1,low_confidence,e2,2024-05-01T10:00:00,", "duplicate_id",
        "escalation of item i1 by trigger low_confidence at 2024-05-01 10:00:00 repeats row 1",
    ),
    "too many fields": ("i2,policy,e1,2024-05-01T10:00:00,,extra", "malformed_row", "the header has 5 fields"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_bad_row_is_quarantined_with_its_reason(con: duckdb.DuckDBPyConnection, tmp_path: Path,
                                                     case: str) -> None:
    """One good row and one bad one: the bad one alone lands in quarantine, at its row, as written."""
    row, reason, phrase = BAD_ROWS[case]
    report = ingest_file(con, "escalations", write_csv(tmp_path / "e.csv", GOOD, row))
    assert (report.rows_read, report.rows_accepted, report.quarantined) == (2, 1, {reason: 1})
    quarantined = con.execute("SELECT batch_id, row_number, reason, message, original FROM quarantine").fetchall()
    assert len(quarantined) == 1
    batch, number, got_reason, message, original = quarantined[0]
    assert (batch, number, got_reason) == (report.batch_id, 2, reason)
    assert phrase in message, message
    if reason != "malformed_row":
        written = dict(zip(COLUMNS, row.split(","), strict=True))
        assert json.loads(original) == {k: (v if v else None) for k, v in written.items()}
    assert stored(con)[["item_id", "trigger", "routed_to"]].values.tolist() == [["i1", "low_confidence", "e1"]]
    assert [r[0] for r in con.execute("SELECT item_id FROM items").fetchall()] == ["i1"]
    assert counts(con)["annotations"] == 0 and counts(con)["annotators"] == 0


def test_mapped_columns_and_missing_optional_columns(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "e.csv", "t9,policy,2024-05-01 10:00:00", header="ticket,rule,opened")
    report = ingest_file(con, "escalations", file, mapping="item=ticket,trigger=rule,created_at=opened")
    assert report.rows_accepted == 1
    assert stored(con).values.tolist()[0][:3] == ["t9", "policy", None]
    assert pd.isna(stored(con)["resolved_at"].iloc[0])


def test_known_items_are_reused_and_unknown_ones_created(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """As with answers, gold and predictions, an item the warehouse does not know yet is created."""
    ingest_file(con, "annotations", write_csv(tmp_path / "a.csv", "i1,w1,1", header="item_id,annotator_id,label"))
    report = ingest_file(con, "escalations", write_csv(tmp_path / "e.csv", GOOD, "i2,policy,,2024-05-01,"))
    assert report.new_items == 1
    assert sorted(r for (r,) in con.execute("SELECT item_id FROM items").fetchall()) == ["i1", "i2"]


def test_duplicate_against_the_warehouse(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    ingest_file(con, "escalations", write_csv(tmp_path / "first.csv", GOOD))
    report = ingest_file(
        con, "escalations", write_csv(tmp_path / "second.csv", "i1,low_confidence,e2,2024-05-01T10:00:00Z,",
                                      "i1,policy,e2,2024-05-01T10:00:00,")
    )
    assert report.quarantined == {"duplicate_id": 1} and report.rows_accepted == 1
    message = con.execute("SELECT message FROM quarantine").fetchone()[0]
    assert message == (
        "escalation of item i1 by trigger low_confidence at 2024-05-01 10:00:00 is already in the warehouse"
    )
    assert stored(con)["trigger"].tolist() == ["low_confidence", "policy"]


def test_reingest_is_a_noop(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "e.csv", GOOD, "i2,,e1,2024-05-01T10:00:00,")
    first = ingest_file(con, "escalations", file)
    before, version = counts(con), data_version(con)
    again = ingest_file(con, "escalations", file)
    assert again.duplicate_of_batch == first.batch_id and again.batch_id is None
    assert "already ingested as escalations batch 1" in again.messages[0]
    assert counts(con) == before and data_version(con) == version


def test_dry_run_writes_nothing_and_reports_the_same(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "e.csv", GOOD, "i2,policy,e1,yesterday,", "i3,policy,,2024-05-01,")
    before, version = counts(con), data_version(con)
    dry = ingest_file(con, "escalations", file, dry_run=True)
    assert counts(con) == before and data_version(con) == version
    assert dry.batch_id is None and "dry run: nothing was written" in dry.messages
    real = ingest_file(con, "escalations", file)
    assert (dry.rows_read, dry.rows_accepted, dry.quarantined, dry.new_items) == (
        real.rows_read, real.rows_accepted, real.quarantined, real.new_items
    ) == (3, 2, {"bad_timestamp": 1}, 2)


def test_a_label_studio_export_is_refused(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    file = tmp_path / "export.json"
    file.write_text("[]", encoding="utf-8")
    with pytest.raises(LabelgovError, match="not an escalation log"):
        ingest_file(con, "escalations", file)
    assert counts(con)["ingest_batches"] == 0


def test_refresh_counts_the_ingested_escalations(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """Answers, gold and the log all through ingest: the escalation analytics see exactly the log."""
    answers = [f"q{i},w{j},{1 + (i + j) % 3},2024-05-01T0{j}:00:00,initial" for i in range(6) for j in range(3)]
    answers += ["q0,e1,1,2024-05-02T10:00:00,escalated", "q1,e2,2,2024-05-03T09:00:00,escalated"]
    ingest_file(con, "annotations", write_csv(tmp_path / "a.csv", *answers,
                                              header="item_id,annotator_id,label,created_at,stage"))
    ingest_file(con, "gold", write_csv(tmp_path / "g.csv", *(f"q{i},1" for i in range(6)), header="item_id,label"))
    log = pd.DataFrame({
        "item_id": ["q0", "q1", "q1", "q2"],
        "trigger": ["low_confidence", "disagreement", "policy", "policy"],
        "routed_to": ["e1", "e2", "e2", None],
        "created_at": pd.to_datetime(["2024-05-01 04:00", "2024-05-01 05:00", "2024-05-01 06:00", "2024-05-01 07:00"]),
        "resolved_at": pd.to_datetime(["2024-05-02 10:00", "2024-05-03 09:00", "2024-05-03 09:00", None]),
    })
    ingest_file(con, "escalations", _write(log, tmp_path / "e.parquet"))
    refresh(con)
    summary = escalation_summary(con, Filters())
    assert summary.items == 6 and summary.escalated == log["item_id"].nunique()
    outcomes = con.execute(
        "SELECT item_id, trigger, expert_id, esc_created_at, esc_resolved_at FROM d_item_outcomes "
        "WHERE escalated ORDER BY item_id"
    ).df()
    first = log.sort_values("created_at").drop_duplicates("item_id").set_index("item_id")
    assert outcomes["item_id"].tolist() == first.index.tolist()
    assert outcomes["trigger"].tolist() == first["trigger"].tolist()
    assert outcomes["esc_created_at"].tolist() == first["created_at"].tolist()
    # An item is resolved when every one of its escalations is; q2's is still open.
    resolved = log.groupby("item_id")["resolved_at"].agg(lambda s: None if s.isna().any() else s.max())
    assert times(outcomes["esc_resolved_at"]) == times(resolved)
    hours = (resolved.dropna() - first["created_at"].loc[resolved.dropna().index]).dt.total_seconds() / 3600
    overall = time_to_label(con, Filters()).set_index("trigger").loc["all"]
    assert overall["escalations"] == 3 and overall["in_flight"] == 1
    assert summary.median_hours_to_label == pytest.approx(hours.median())




@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    main(["tree", "import", str(FIXTURES / "tree.yaml"), "--db", str(path)])
    return path


def test_cli_ingests_and_suggests_a_refresh(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write_csv(tmp_path / "e.csv", GOOD, "i2,,e1,2024-05-01T10:00:00,")
    capsys.readouterr()
    args = ["ingest", "escalations", str(file), "--db", str(db)]
    code, out, _ = run(capsys, *args, "--dry-run")
    assert code == 0 and "2 rows read, 1 accepted, 1 quarantined" in out and "dry run: nothing written" in out
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "row 2 missing_field: no trigger (column trigger)" in out
    assert out.splitlines()[-1] == "batch 1 written: 1 new items; run `labelgov refresh` to update the analytics"
    code, out, _ = run(capsys, *args)
    assert code == 0 and "already ingested as escalations batch 1; nothing to do" in out
    with duckdb.connect(str(db), read_only=True) as check:
        assert check.execute("SELECT count(*) FROM escalations").fetchone() == (1,)


@pytest.mark.parametrize(
    ("header", "extra", "phrase"),
    [
        (None, [], "no such file"),
        ("item_id,routed_to,created_at", [], "required column missing for escalations: 'trigger' (trigger)"),
        ("item_id,rule", [], "'trigger' (trigger), 'created_at' (created_at)"),
        (HEADER, ["--map", "trigger=rule"], "--map trigger=rule: there is no column 'rule'"),
        (HEADER, ["--map", "annotator=worker"], "unknown field 'annotator' for escalations"),
    ],
)
def test_cli_file_and_column_errors_are_one_line(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 header: str | None, extra: list[str], phrase: str) -> None:
    file = tmp_path / "e.csv"
    if header is not None:
        write_csv(file, ",".join(["i1", "policy", "2024-05-01", "", ""][: header.count(",") + 1]), header=header)
    capsys.readouterr()
    code, out, err = run(capsys, "ingest", "escalations", str(file), "--db", str(db), *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("labelgov: error: ") and "Traceback" not in err
    assert phrase in err, err
    with duckdb.connect(str(db), read_only=True) as check:
        assert check.execute("SELECT count(*) FROM ingest_batches").fetchone() == (0,)
