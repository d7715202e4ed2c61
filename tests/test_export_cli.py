"""`labelgov export labels` as a user runs it: the file's format from its name, and one clear line (exit 2)
when the file cannot be written, with nothing half-written left behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from queries import export
from queries.connection import connect
from tests.conftest import run_cli as run


def items(db: Path) -> int:
    with connect(db, read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM items").fetchall()[0][0])


def rows_as(path: Path, fmt: str) -> int:
    """How many rows the file holds when read as ``fmt``; raises if it is not that format."""
    if fmt == "parquet":
        return pq.read_metadata(path).num_rows
    lines = path.read_text(encoding="utf-8").splitlines()
    if fmt == "jsonl":
        return len([json.loads(line) for line in lines])
    assert lines[0].startswith('"item_id",')
    return len(lines) - 1


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("x.PARQUET", "parquet"),
        ("x.Parquet", "parquet"),
        ("x.NDJSON", "jsonl"),
        ("x.JSONL", "jsonl"),
        ("x.CSV", "csv"),
        ("labels", "csv"),
    ],
)
def test_the_extension_names_the_format_in_any_case(
    small_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, fmt: str
) -> None:
    target = tmp_path / name
    code, out, err = run(capsys, "export", "labels", str(target), "--db", str(small_demo))
    assert code == 0, err
    assert f"({fmt}, method dawid-skene)" in out
    assert rows_as(target, fmt) == items(small_demo)


@pytest.mark.parametrize("name", ["x.json", "x.txt", "x.csv.gz"])
def test_an_unknown_extension_is_refused_naming_the_choices(
    small_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    target = tmp_path / name
    code, out, err = run(capsys, "export", "labels", str(target), "--db", str(small_demo))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("labelgov: error: cannot tell the format of")
    assert all(word in err for word in (".csv", ".parquet", ".jsonl", ".ndjson", "--format"))
    assert list(tmp_path.iterdir()) == []
    # Chosen explicitly, any name is fine.
    code, _, err = run(capsys, "export", "labels", str(target), "--db", str(small_demo), "--format", "jsonl")
    assert code == 0, err
    assert rows_as(target, "jsonl") == items(small_demo)


def test_a_file_where_a_folder_is_needed(small_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocking = tmp_path / "out.csv"
    blocking.write_text("keep me", encoding="utf-8")
    for target in (blocking / "x.csv", blocking / "deeper" / "x.csv"):
        code, out, err = run(capsys, "export", "labels", str(target), "--db", str(small_demo))
        assert code == 2 and out == ""
        assert err == f"labelgov: error: cannot write {target}: {blocking} is a file, not a folder\n"
    assert blocking.read_text(encoding="utf-8") == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a Linux sysfs, which nobody may write files into")
def test_a_folder_nobody_may_write_into(small_demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "export", "labels", "/sys/x.parquet", "--db", str(small_demo))
    assert code == 2 and out == ""
    assert err == "labelgov: error: cannot write /sys/x.parquet: Permission denied\n"


@pytest.mark.parametrize("existing", [True, False])
def test_a_write_that_fails_halfway_leaves_nothing_half_written(
    small_demo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    existing: bool,
) -> None:
    target = tmp_path / "labels.parquet"
    if existing:
        target.write_bytes(b"the previous export")

    def disk_full(table: Any, where: Any, **kwargs: Any) -> None:
        Path(where).write_bytes(b"PAR1 and then the disk filled up")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.pq, "write_table", disk_full)
    code, out, err = run(capsys, "export", "labels", str(target), "--db", str(small_demo))
    assert code == 2 and out == ""
    assert err == f"labelgov: error: cannot write {target}: No space left on device\n"
    if existing:
        assert target.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == (["labels.parquet"] if existing else [])
