"""`labelgov report` and `labelgov export labels` on a demo warehouse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from queries import agreement, export
from queries.connection import bump_data_version, connect
from queries.errors import LabelgovError
from queries.filters import Filters

CONTRACT_KEYS = {
    "counts", "alpha", "alpha_by_level", "accuracy_vs_gold", "escalation_rate", "escalation_gain",
    "cost_per_item", "top_drift_alerts",
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dashboard.cli", *args], capture_output=True, text=True)


def test_report_json_keeps_its_contract_and_matches_the_analytics(small_demo: Path) -> None:
    done = _cli("report", "--json", "--db", str(small_demo))
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures.keys() >= CONTRACT_KEYS
    with connect(small_demo, read_only=True) as con:
        assert figures["alpha"] == pytest.approx(agreement.alpha(con, Filters(), bootstrap=0).value, abs=1e-6)
        assert set(figures["alpha_by_level"]) == {"1", "2", "3"}
        level2 = agreement.alpha(con, Filters(), level=2, bootstrap=0).value
        assert figures["alpha_by_level"]["2"] == pytest.approx(level2, abs=1e-6)
        # Majority-vote accuracy recomputed directly: consensus node against gold on gold items.
        direct = con.execute(
            "SELECT avg(CAST(i.consensus_node = g.node_id AS DOUBLE)) FROM d_items i JOIN gold_labels g USING (item_id)"
        ).fetchall()[0][0]
        total_cost, items = con.execute("SELECT sum(cost), count(DISTINCT item_id) FROM annotations").fetchall()[0]
    assert figures["accuracy_vs_gold"]["majority_vote"] == pytest.approx(direct, abs=1e-6)
    assert {"majority_vote", "dawid_skene"} <= figures["accuracy_vs_gold"].keys()
    assert figures["cost_per_item"] == pytest.approx(total_cost / items, rel=1e-6)
    # Coarser levels agree more than finer ones on a tree whose hard cases are siblings.
    assert figures["alpha_by_level"]["1"] > figures["alpha_by_level"]["3"]
    assert 0 < figures["escalation_rate"] < 1


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_labels_one_row_per_item_with_provenance(small_demo: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"labels.{fmt}"
    done = _cli("export", "labels", str(target), "--db", str(small_demo), "--method", "dawid-skene")
    assert done.returncode == 0, done.stderr
    if fmt == "parquet":
        frame = pd.read_parquet(target)
        distributions = [dict(d) for d in frame["distribution"]]
    elif fmt == "csv":
        frame = pd.read_csv(target)
        distributions = [json.loads(d) for d in frame["distribution"]]
    else:
        frame = pd.read_json(target, lines=True)
        distributions = list(frame["distribution"])
    with connect(small_demo, read_only=True) as con:
        items = con.execute("SELECT count(*) FROM items").fetchall()[0][0]
        lineage = dict(con.execute("SELECT node_id, lineage FROM d_nodes").fetchall())
        version = con.execute("SELECT value FROM meta WHERE key = 'refreshed_data_version'").fetchall()[0][0]
    assert len(frame) == items and frame["item_id"].is_unique
    assert all(abs(sum(d.values()) - 1) < 1e-3 for d in distributions)
    assert (frame["data_version"] == int(version)).all() and (frame["method"] == "dawid-skene").all()
    for row in frame.head(200).to_dict("records"):
        assert list(lineage[row["level_3"]]) == [row["level_1"], row["level_2"], row["level_3"]]
    assert frame["confidence"].between(0, 1).all()


def test_export_refuses_stale_analytics(small_demo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "stale.duckdb"
    shutil.copy(small_demo, copy)
    with connect(copy) as con:
        bump_data_version(con)
        with pytest.raises(LabelgovError, match="refresh"):
            export.labels(con, "majority")
    done = _cli("export", "labels", str(tmp_path / "x.csv"), "--db", str(copy))
    assert done.returncode == 2 and "labelgov refresh" in done.stderr and "Traceback" not in done.stderr
