"""The real crowd data sets ingest completely, with their truth as gold (skipped when ../shared is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from queries.connection import memory
from queries.ingest import ingest_file
from queries.taxonomy import read_tree_file, store_tree

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"


def shared_data() -> Path | None:
    for candidate in (os.environ.get("LABELGOV_SHARED_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


DATA = shared_data()
pytestmark = pytest.mark.skipif(DATA is None, reason="shared crowd data sets are not available")

# data set -> (tree file, answers, items, workers) as published for the collection
SETS = {
    "face_sentiment": ("tree.yaml", 5_242, 584, 27),
    "product_matching": (FIXTURES / "product_matching_tree.yaml", 24_945, 8_315, 176),
    "duck_identification": (FIXTURES / "duck_identification_tree.yaml", 4_212, 108, 39),
}


@pytest.mark.parametrize("name", sorted(SETS))
def test_data_set_ingests_completely(name: str) -> None:
    assert DATA is not None
    folder = DATA / name
    tree_file, answers, items, workers = SETS[name]
    tree = read_tree_file(folder / tree_file if isinstance(tree_file, str) else tree_file)
    con = memory()
    store_tree(con, tree, created_by="test")
    report = ingest_file(con, "annotations", folder / "answers.csv",
                         mapping="item=question,annotator=worker,label=answer", actor="t")
    assert (report.rows_read, report.rows_accepted, report.quarantined) == (answers, answers, {})
    assert report.new_items == items and report.new_annotators == workers
    gold = ingest_file(con, "gold", folder / "truth.csv", mapping="item=question,label=truth", actor="t")
    truth = pd.read_csv(folder / "truth.csv", dtype=str)
    assert gold.rows_read == gold.rows_accepted == len(truth)
    assert gold.quarantined == {}
    # Independent check: per-code answer counts as pandas reads the file, mapped through the tree's codes.
    raw = pd.read_csv(folder / "answers.csv", dtype=str)
    codes = tree.code_map()
    expected = raw["answer"].map(codes).value_counts().to_dict()
    stored = dict(con.execute("SELECT node_id, count(*) FROM annotations GROUP BY 1").fetchall())
    assert stored == expected
    expected_gold = dict(zip(truth["question"], truth["truth"].map(codes), strict=True))
    assert dict(con.execute("SELECT item_id, node_id FROM gold_labels").fetchall()) == expected_gold
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] == raw["question"].nunique() + len(
        set(truth["question"]) - set(raw["question"])
    )
