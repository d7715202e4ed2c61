"""`labelgov ingest ...` as a user runs it: printed counts, and one clear line (exit 2) for unreadable files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from dashboard.cli import main
from tests.conftest import run_cli as run

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
LABELGOV = Path(sys.executable).parent / "labelgov"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    main(["tree", "import", str(FIXTURES / "tree.yaml"), "--db", str(path)])
    return path




def test_ingest_prints_counts_per_reason(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELGOV_USER", "carol")
    capsys.readouterr()
    file = tmp_path / "answers.csv"
    file.write_text("question,worker,answer\nq1,w1,1\nq2,w1,7\nq2,w2,2\nq3,,0\n", encoding="utf-8")
    args = ["ingest", "annotations", str(file), "--db", str(db), "--map", "item=question,annotator=worker,label=answer"]
    code, out, err = run(capsys, *args, "--dry-run")
    assert code == 0, err
    assert "4 rows read, 2 accepted, 2 quarantined" in out
    assert "dry run: nothing written" in out
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "4 rows read, 2 accepted, 2 quarantined" in out
    lines = {
        line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ") and "e.g." not in line
    }
    assert lines == {"missing_field": "1", "unknown_label": "1"}
    assert "row 2 unknown_label" in out and "batch 1 written" in out
    code, out, _ = run(capsys, *args)
    assert code == 0 and "already ingested as annotations batch 1; nothing to do" in out
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT ingested_by, rows_read FROM ingest_batches").fetchall() == [("carol", 4)]
        assert con.execute("SELECT count(*) FROM annotations").fetchone() == (2,)


def _corrupt_parquet(path: Path) -> Path:
    path.write_bytes(b"PAR1" + os.urandom(64) + b"PAR1")
    return path


def _utf16(path: Path) -> Path:
    path.write_bytes("item_id,annotator_id,label\ni1,a1,1\n".encode("utf-16"))
    return path


def _latin1_rows(path: Path) -> Path:
    path.write_bytes("item_id,annotator_id,label\ni1,a1,1\ncaf\xe9,a1,1\n".encode("latin-1"))
    return path


def _text(content: str, name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        file = folder / name
        file.write_text(content, encoding="utf-8")
        return file
    return make


WHOLE_FILE_FAILURES = {
    "missing file": (lambda p: p / "nope.csv", "no such file"),
    "directory": (lambda p: p, "is not a regular file"),
    "empty file": (_text("", "empty.csv"), "is empty"),
    "header only": (_text("item_id,annotator_id,label\n", "header.csv"), "no data rows"),
    "duplicated header": (_text("item_id,label,label\ni1,1,2\n", "dup.csv"), "names column 'label' twice"),
    "blank header": (_text("\ni1,a1,1\n", "blank.csv"), "first line is empty"),
    "required column missing": (_text("item_id,worker,label\ni1,a1,1\n", "cols.csv"),
                                "required column missing for annotations: 'annotator_id' (annotator)"),
    "wrong delimiter": (_text("item_id;annotator_id;label\ni1;a1;1\n", "semi.csv"), "required column missing"),
    "ragged rows": (_text("item_id,annotator_id,label\ni1,a1,1,extra,more\n", "ragged.csv"),
                    "no row has the header's 3 fields"),

    "corrupt parquet": (lambda p: _corrupt_parquet(p / "bad.parquet"), "is not a readable Parquet file"),
    "json array as jsonl": (_text('[{"item_id": "i1"}]', "arr.jsonl"), "is a JSON array, not JSON Lines"),
    "broken jsonl": (_text('{"item_id": "i1", "annotator_id": "a", "label": "1"}\n{"item_id": \n', "broken.jsonl"),
                     "cannot be read as jsonl"),
    "jsonl without required key": (_text('{"item": "i1", "annotator_id": "a", "label": "1"}\n', "keys.jsonl"),
                                   "required column missing"),
    "label studio not json": (_text("item_id,label\n", "export.json"), "is not a Label Studio JSON export"),
    "label studio without annotations": (_text('[{"id": 1, "data": {}}]', "none.json"), "holds no annotations"),
    "utf-16 csv": (lambda p: _utf16(p / "u16.csv"), "is not UTF-8"),
    "latin-1 rows": (lambda p: _latin1_rows(p / "latin.csv"), "is not UTF-8"),
    "unknown extension": (_text("a,b\n", "data.xlsx"), "cannot tell the format"),
}


@pytest.mark.parametrize("case", sorted(WHOLE_FILE_FAILURES))
def test_whole_file_failures_exit_2_with_one_line(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   case: str) -> None:
    make, phrase = WHOLE_FILE_FAILURES[case]
    folder = tmp_path / "files"
    folder.mkdir()
    file = make(folder)
    capsys.readouterr()
    code, out, err = run(capsys, "ingest", "annotations", str(file), "--db", str(db))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("labelgov: error: ")
    assert phrase in err
    assert "Traceback" not in err
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ingest_batches").fetchone() == (0,)


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (["--map", "item"], "is not FIELD=COLUMN"),
        (["--map", "reviewer=x"], "unknown field 'reviewer'"),
        (["--tree-version", "9"], "--tree-version 9 does not exist"),
    ],
)
def test_option_errors(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                       phrase: str) -> None:
    file = tmp_path / "a.csv"
    file.write_text("item_id,annotator_id,label\ni1,a1,1\n", encoding="utf-8")
    capsys.readouterr()
    code, _, err = run(capsys, "ingest", "annotations", str(file), "--db", str(db), *extra)
    assert code == 2 and phrase in err and err.count("\n") == 1


def test_warehouse_without_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a.csv"
    file.write_text("item_id,annotator_id,label\ni1,a1,1\n", encoding="utf-8")
    code, _, err = run(capsys, "ingest", "gold", str(file), "--db", str(tmp_path / "new.duckdb"))
    assert code == 2 and "no label tree yet" in err


def test_gzipped_csv_is_read(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a.csv.gz"
    file.write_bytes(gzip.compress(b"item_id,label\ni1,1\ni2,2\n"))
    capsys.readouterr()
    code, out, err = run(capsys, "ingest", "gold", str(file), "--db", str(db))
    assert code == 0, err
    assert "2 rows read, 2 accepted, 0 quarantined" in out


def test_installed_command_runs(db: Path, tmp_path: Path) -> None:
    if not LABELGOV.exists():
        pytest.skip("labelgov console script not installed in this environment")
    file = tmp_path / "p.jsonl"
    rows = [{"item_id": "i1", "model": "m", "model_version": "1", "probabilities": {"1": 0.9, "0": 0.1}},
            {"item_id": "i2", "model": "m", "model_version": "1", "probabilities": {"1": 0.9, "0": 0.2}}]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    done = subprocess.run([str(LABELGOV), "ingest", "predictions", str(file), "--db", str(db)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "2 rows read, 1 accepted, 1 quarantined" in done.stdout
    assert "bad_distribution" in done.stdout
    missing = subprocess.run([str(LABELGOV), "ingest", "predictions", str(tmp_path / "gone.parquet"), "--db", str(db)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("gone.parquet: no such file") and "Traceback" not in missing.stderr


def test_a_written_batch_suggests_a_refresh(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every written batch leaves the analytics stale; a dry run or a file already ingested does not."""
    file = tmp_path / "answers.csv"
    file.write_text("item_id,annotator_id,label\nq1,w1,1\nq2,w1,2\n", encoding="utf-8")
    args = ["ingest", "annotations", str(file), "--db", str(db)]
    suggestion = "run `labelgov refresh` to update the analytics"
    code, out, _ = run(capsys, *args, "--dry-run")
    assert code == 0 and "dry run: nothing written" in out and "labelgov refresh" not in out
    code, out, _ = run(capsys, *args)
    assert code == 0 and out.splitlines()[-1] == f"batch 1 written: 2 new items, 1 new annotators; {suggestion}"
    code, out, _ = run(capsys, *args)
    assert code == 0 and "nothing to do" in out and "labelgov refresh" not in out
