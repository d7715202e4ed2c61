"""Shared fixtures: small warehouses built directly, without going through ingest."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from queries.connection import memory
from queries.taxonomy import parse_tree, store_tree

# Two levels, one internal node with two leaves and one leaf at the top: the smallest tree on which
# roll-ups to a parent differ from the leaves, used by the page and overview tests.
TINY_TREE = """
taxonomy: tiny
version: "1"
nodes:
  animal:
    title: Animal
    children:
      cat: {title: Cat}
      dog: {title: Dog}
  plant:
    title: Plant
"""


def shared_data_dir() -> Path | None:
    """../shared/data beside the repository, or $LABELGOV_SHARED_DATA; None when absent."""
    env = os.environ.get("LABELGOV_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


def require_shared(name: str) -> Path:
    base = shared_data_dir()
    if base is None or not (base / name).is_dir():
        pytest.skip(f"shared data set {name!r} not present (set LABELGOV_SHARED_DATA to run)")
    return base / name


def load_answers(
    con: duckdb.DuckDBPyConnection,
    tree_yaml: str,
    answers: pd.DataFrame,
    gold: pd.DataFrame | None = None,
) -> int:
    """Insert a tree and long-format answers (item_id, annotator_id, node_id[, stage, created_at, ...]).

    Test data goes straight into the tables so analytics tests do not depend on ingest's behaviour.
    """
    version = store_tree(con, parse_tree(tree_yaml), created_by="test")
    frame = answers.copy()
    frame["item_id"] = frame["item_id"].astype(str)
    frame["annotator_id"] = frame["annotator_id"].astype(str)
    defaults = {
        "annotation_id": [f"t{i}" for i in range(len(frame))],
        "stage": "initial",
        "created_at": pd.Timestamp("2026-01-05"),
        "duration_s": 10.0,
        "cost": 0.05,
        "confidence": None,
        "guideline_version": "g1",
    }
    for column, value in defaults.items():
        if column not in frame:
            frame[column] = value
    frame["tree_version"] = version
    frame["batch_id"] = 1
    con.register("_answers", frame)
    con.execute(
        """
        INSERT INTO annotations (annotation_id, item_id, annotator_id, tree_version, node_id, confidence, stage,
                                 created_at, duration_s, cost, guideline_version, batch_id)
        SELECT annotation_id, item_id, annotator_id, tree_version, node_id, confidence, stage,
               created_at, duration_s, cost, guideline_version, batch_id FROM _answers
        """
    )
    con.execute("INSERT INTO items (item_id) SELECT DISTINCT item_id FROM _answers")
    con.execute("INSERT INTO annotators (annotator_id) SELECT DISTINCT annotator_id FROM _answers")
    con.unregister("_answers")
    if gold is not None:
        g = gold.assign(item_id=gold["item_id"].astype(str), tree_version=version, batch_id=1)
        con.register("_gold", g)
        con.execute(
            "INSERT INTO gold_labels (item_id, node_id, source, tree_version, batch_id) "
            "SELECT item_id, node_id, 'test', tree_version, batch_id FROM _gold"
        )
        con.unregister("_gold")
    con.execute(
        "INSERT INTO ingest_batches VALUES (1, 'annotations', 'fixture', 'x', 'csv', ?, ?, ?, 0, 'test', now())",
        [version, len(frame), len(frame)],
    )
    con.execute("UPDATE meta SET value = '1' WHERE key = 'data_version'")
    return version


# Two top-level nodes, one with two leaves: the smallest tree with a coarse answer and siblings.
SMALL_TREE = """
taxonomy: t
nodes:
  a: {children: {a1: {}, a2: {}}}
  b: {}
"""


def rows_apart(con: duckdb.DuckDBPyConnection, stored: str, reference: str) -> tuple[int, int, int]:
    """A stored table checked against the query that states it: the rows of query ``stored`` missing from
    ``reference`` and the other way round, as multisets, and ``reference``'s rows."""
    stored, reference = f"SELECT * FROM ({stored})", f"SELECT * FROM ({reference})"
    extra = con.execute(f"SELECT count(*) FROM ({stored} EXCEPT ALL {reference})").fetchone()[0]
    missing = con.execute(f"SELECT count(*) FROM ({reference} EXCEPT ALL {stored})").fetchone()[0]
    return extra, missing, con.execute(f"SELECT count(*) FROM ({reference})").fetchone()[0]


FACE_CODES = {"0": "neutral", "1": "happy", "2": "sad", "3": "angry"}


@pytest.fixture
def face_con() -> Iterator[duckdb.DuckDBPyConnection]:
    """The real face_sentiment answers and truth in an in-memory warehouse (skips when absent)."""
    folder = require_shared("face_sentiment")
    answers = pd.read_csv(folder / "answers.csv", dtype=str)
    truth = pd.read_csv(folder / "truth.csv", dtype=str)
    con = memory()
    load_answers(
        con,
        (folder / "tree.yaml").read_text(),
        pd.DataFrame(
            {
                "item_id": answers["question"],
                "annotator_id": answers["worker"],
                "node_id": answers["answer"].map(FACE_CODES),
            }
        ),
        gold=pd.DataFrame({"item_id": truth["question"], "node_id": truth["truth"].map(FACE_CODES)}),
    )
    yield con
    con.close()


def _cache_root(factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every xdist worker of this run (their base temps are siblings)."""
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "demo-cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cached_demo(factory: pytest.TempPathFactory, scale: int | str, *, events: bool = True, seed: int = 7) -> Path:
    """A refreshed demo warehouse, generated once per test run and shared by all workers.

    Tests must open it read-only, or copy it (``shutil.copy``) before writing.
    """
    import fcntl

    from queries.connection import connect
    from queries.demo import build_demo
    from queries.demo_config import demo_config
    from queries.refresh import refresh

    folder = _cache_root(factory)
    name = f"demo-{scale}-{seed}-{'events' if events else 'control'}.duckdb"
    target = folder / name
    with open(folder / (name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = folder / (name + ".partial")
            partial.unlink(missing_ok=True)
            build_demo(partial, demo_config(str(scale), seed, events), force=True, created_by="test")
            with connect(partial) as con:
                refresh(con)
            partial.rename(target)
    return target


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A refreshed 5,000-item demo warehouse with every planted event (open read-only or copy)."""
    return cached_demo(tmp_path_factory, 5000)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The `labelgov` command line in this process (a subprocess per call would dominate the tests' time):
    exit code, stdout and stderr."""
    from dashboard.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
