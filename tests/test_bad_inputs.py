"""A sweep of malformed inputs through the command line, as a user would run it.

Every file in tests/corpus (plus the binary and huge ones that tests/corpus/make_corpus.py writes) goes
into a warehouse that already holds a tree and one good batch. A file that cannot be read as a whole must
give exit code 2, one line on stderr and leave every table exactly as it was; a file with bad rows must be
written with those rows quarantined under the expected reason codes, leaving the earlier rows untouched.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from queries.connection import connect

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
TREE = HERE / "fixtures" / "ingest" / "tree.yaml"
GOOD_BATCH = "item_id,annotator_id,label,duration_s\ng1,a1,1,2.5\ng2,a2,2,3\ng3,a1,3,1\n"
# The tables a malformed input must not touch (a fixed list: the names reach SQL text).
WATCHED = (
    "tree_versions", "tree_nodes", "ingest_batches", "quarantine", "items", "annotators", "annotations",
    "gold_labels", "predictions", "audit_log", "roles", "proposals", "proposal_operations",
)
COUNTS = re.compile(r"([\d,]+) rows read, ([\d,]+) accepted, ([\d,]+) quarantined")


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_corpus = _load_maker()


@dataclass(frozen=True)
class Refused:
    """A whole-file failure: exit 2 and one stderr line containing ``phrase``."""

    phrase: str


@dataclass(frozen=True)
class Quarantined:
    """Rows read, accepted, and the quarantine count per reason code."""

    read: int
    accepted: int
    reasons: dict[str, int] = field(default_factory=dict)
    verbatim: tuple[tuple[str, str], ...] = ()  # (column of annotations, value) stored exactly as written


R = Refused
Q = Quarantined
CASES: dict[str, Refused | Quarantined] = {
    # delimited text
    "csv_duplicated_header.csv": R("names column 'label' twice"),
    "csv_semicolon_delimiter.csv": R("required column missing for annotations"),
    "csv_tab_delimiter.csv": R("required column missing for annotations"),
    "tsv_commas.tsv": R("required column missing for annotations"),
    "csv_blank_header_column.csv": R("header column 2 has no name"),
    "csv_whitespace_only.csv": R("the first line is empty"),
    "csv_header_only_crlf.csv": R("has no data rows"),
    "csv_missing_required_column.csv": R("'annotator_id' (annotator)"),
    "csv_bad_map.csv": R("map them with --map"),
    "csv_latin1.csv": R("is not UTF-8 text"),
    "csv_utf16_bom.csv": R("is not UTF-8 text"),
    "csv_utf8_bom.csv": Q(2, 2, verbatim=(("item_id", "b1"),)),
    "csv_nul_bytes.csv": Q(2, 1, {"bad_id": 1}),
    "csv_unbalanced_quote.csv": Q(2, 1, {"unknown_label": 1}),
    "csv_ragged_rows.csv": Q(4, 2, {"malformed_row": 2}),
    "csv_nan_infinity.csv": Q(4, 1, {"bad_number": 3}),
    "csv_wrong_types.csv": Q(5, 1, {"bad_number": 2, "bad_confidence": 2}),
    "csv_negative_numbers.csv": Q(3, 1, {"negative_duration": 1, "negative_cost": 1}),
    "csv_timestamps_mixed.csv": Q(7, 3, {"bad_timestamp": 4}),
    "csv_bad_stage.csv": Q(3, 1, {"bad_stage": 2}),
    "csv_unknown_and_deprecated_labels.csv": Q(4, 1, {"deprecated_node": 1, "unknown_label": 1, "missing_field": 1}),
    "csv_formula_injection.csv": Q(
        4, 3, {"unknown_label": 1},
        verbatim=(("item_id", '=HYPERLINK("http://evil","x")'), ("item_id", "+cmd|' /C calc'!A0"),
                  ("annotator_id", "@SUM(A1)"), ("annotator_id", "=1+1")),
    ),
    "csv_sql_injection.csv": Q(
        3, 2, {"unknown_label": 1},
        verbatim=(("item_id", "x'); DROP TABLE annotations; --"), ("annotator_id", "' OR 1=1 --"),
                  ("item_id", 'item" OR ""="'), ("annotator_id", "a1;DELETE FROM items")),
    ),
    "tsv_gold_problems.tsv": Q(4, 1, {"missing_field": 2, "unknown_label": 1}),
    "predictions_bad_probabilities.csv": Q(6, 1, {"bad_distribution": 5}),
    "csv_huge_field.csv": R("Maximum line size"),
    "csv_huge_header.csv": R("header"),
    # JSON Lines
    "jsonl_json_array.jsonl": R("is a JSON array, not JSON Lines"),
    "jsonl_plain_text.jsonl": R("is not JSON Lines"),
    "jsonl_truncated.jsonl": R("cannot be read as jsonl"),
    "jsonl_pretty_printed.jsonl": R("cannot be read as jsonl"),
    "jsonl_nan_literals.jsonl": Q(1, 0, {"bad_number": 1}),
    "jsonl_wrong_types.jsonl": Q(5, 1, {"bad_number": 1, "bad_timestamp": 1, "bad_id": 2}),
    "jsonl_scalar_lines.jsonl": Q(5, 2, {"missing_field": 3}),
    "jsonl_huge_field.jsonl": Q(2, 1, {"unknown_label": 1}),
    # Label Studio exports
    "labelstudio_object_not_list.json": R("is not a Label Studio JSON export"),
    "labelstudio_truncated.json": R("is not a Label Studio JSON export"),
    "labelstudio_wrong_types.json": Q(1, 0, {"missing_field": 1}),
    # Parquet
    "parquet_truncated.parquet": R("is not a readable Parquet file"),
    "parquet_corrupt_footer.parquet": R("is not a readable Parquet file"),
    "parquet_text_inside.parquet": R("is not a readable Parquet file"),
    "parquet_empty_table.parquet": R("has no rows"),
    "parquet_duplicate_columns.parquet": R("has two columns named 'label'"),
    "parquet_wrong_types.parquet": Q(3, 0, {"bad_timestamp": 3}),
    "parquet_nan_infinity.parquet": Q(4, 1, {"bad_number": 2, "bad_confidence": 1}),
    "parquet_nested_ids.parquet": Q(2, 0, {"bad_id": 2}),
    # label trees (`labelgov tree import` into a warehouse without a tree)
    "tree_not_yaml.yaml": R("not valid YAML at line 3"),
    "tree_empty.yaml": R("expected a mapping with keys taxonomy and nodes"),
    "tree_wrong_shape.yaml": R("expected a mapping with keys taxonomy and nodes"),
    "tree_duplicate_codes.yaml": R("code '1' already means 'a'"),
    "tree_injection_ids.yaml": R("must match [a-z0-9_-]+"),
    "tree_unknown_replacement.yaml": R("refers to unknown node 'nowhere'"),
    "tree_latin1.yaml": R("not UTF-8 text"),
    # change proposals (`labelgov propose FILE --as alice`, alice being an admin)
    "proposal_not_mapping.yaml": R("expected a mapping with keys title, rationale and operations"),
    "proposal_not_yaml.yaml": R("not valid YAML"),
    "proposal_empty_operations.yaml": R("operations: List should have at least 1 item"),
    "proposal_unknown_op.yaml": R("'explode' found using 'op' does not match"),
    "proposal_unknown_node.yaml": R("x'); DROP TABLE proposals; --"),
    "proposal_wrong_types.yaml": R("title: Input should be a valid string"),
    "proposal_latin1.yaml": R("UTF-8"),
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LABELGOV_DEBUG"}
    env["LABELGOV_USER"] = "alice"
    return subprocess.run(
        [sys.executable, "-m", "dashboard.cli", *args], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )


def _ok(*args: str) -> None:
    result = _cli(*args)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An empty warehouse and one with a tree, an admin and one good batch, built once and copied per case."""
    folder = tmp_path_factory.mktemp("templates")
    empty = folder / "empty.duckdb"
    with connect(str(empty)):
        pass  # creates the schema
    loaded = folder / "loaded.duckdb"
    _ok("tree", "import", str(TREE), "--db", str(loaded))
    _ok("roles", "grant", "alice", "admin", "--as", "alice", "--db", str(loaded))
    good = folder / "good.csv"
    good.write_text(GOOD_BATCH, encoding="utf-8")
    _ok("ingest", "annotations", str(good), "--db", str(loaded))
    return {"empty": empty, "loaded": loaded}


def snapshot(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        return {
            table: con.execute("SELECT * FROM " + table + " ORDER BY ALL").fetchall()
            for table in WATCHED
            if table in present
        }


def _case_file(name: str, folder: Path) -> Path:
    if name in make_corpus.MAKERS:
        return make_corpus.make(name, folder)
    return CORPUS / name


def _command(name: str, file: Path) -> tuple[str, list[str]]:
    """Which template warehouse and which command a corpus file goes through, from its name."""
    if name.startswith("tree_"):
        return "empty", ["tree", "import", str(file)]
    if name.startswith("proposal_"):
        return "loaded", ["propose", str(file), "--as", "alice"]
    kind = "predictions" if name.startswith("predictions_") else "gold" if "_gold_" in name else "annotations"
    return "loaded", ["ingest", kind, str(file)]


def _params() -> list[object]:
    return [pytest.param(name, id=name) for name in sorted(CASES)]


def test_corpus_has_every_file_and_enough_cases() -> None:
    on_disk = {p.name for p in CORPUS.iterdir() if p.suffix != ".py" and p.is_file()}
    assert on_disk | set(make_corpus.MAKERS) == set(CASES)
    assert len(CASES) >= 40
    assert all(p.stat().st_size < 50_000 for p in CORPUS.iterdir() if p.is_file())


@pytest.mark.parametrize("name", _params())
def test_malformed_input(name: str, templates: dict[str, Path], tmp_path: Path) -> None:
    case = CASES[name]
    file = _case_file(name, tmp_path)
    template, args = _command(name, file)
    db = tmp_path / "w.duckdb"
    shutil.copy(templates[template], db)
    before = snapshot(db)
    result = _cli(*args, "--db", str(db))
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    after = snapshot(db)
    if isinstance(case, Refused):
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("labelgov: error: "), result.stderr
        assert case.phrase in lines[0]
        assert after == before
        return
    assert result.returncode == 0, result.stderr
    counts = COUNTS.search(result.stdout)
    assert counts, result.stdout
    read, accepted, quarantined = (int(g.replace(",", "")) for g in counts.groups())
    assert (read, accepted, quarantined) == (case.read, case.accepted, sum(case.reasons.values()))
    for table, rows in before.items():  # earlier rows are all still there, unchanged
        assert not Counter(map(repr, rows)) - Counter(map(repr, after[table])), table
    with duckdb.connect(str(db), read_only=True) as con:
        batch = con.execute("SELECT max(batch_id) FROM ingest_batches").fetchone()[0]
        stored = dict(
            con.execute(
                "SELECT reason, count(*) FROM quarantine WHERE batch_id = ? GROUP BY reason", [batch]
            ).fetchall()
        )
        for column, value in case.verbatim:
            assert column in ("item_id", "annotator_id")
            hits = con.execute(
                "SELECT count(*) FROM annotations WHERE batch_id = ? AND " + column + " = ?",
                [batch, value],
            ).fetchone()[0]
            assert hits == 1, (column, value)
    assert stored == case.reasons


@pytest.mark.parametrize("where", ["missing", "directory", "device", "fifo"])
def test_paths_that_are_not_regular_files_are_refused(where: str, templates: dict[str, Path], tmp_path: Path) -> None:
    """There is no allowed-folder list: any regular file may be ingested; anything else is refused clearly."""
    db = tmp_path / "w.duckdb"
    shutil.copy(templates["loaded"], db)
    target = {"missing": tmp_path / "nope.csv", "directory": tmp_path, "device": Path("/dev/null"),
              "fifo": tmp_path / "pipe.csv"}[where]
    if where == "fifo":
        os.mkfifo(target)
    if where == "device" and not target.exists():
        pytest.skip("no /dev/null here")
    before = snapshot(db)
    result = _cli("ingest", "annotations", str(target), "--db", str(db))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ("no such file" in lines[0] or "is not a regular file" in lines[0]), result.stderr
    assert snapshot(db) == before
