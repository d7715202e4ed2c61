"""The demo warehouse: structural invariants, determinism, and a manifest that agrees with its rows.

Every planted effect is re-measured from the written tables (annotations joined to demo_truth), so a
generator that stops planting an effect, or a manifest that drifts from the rows, fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
import pytest
from scipy.stats import chisquare

from dashboard.cli import main
from queries.connection import connect
from queries.demo import memory_demo

EVENTS_ITEMS = 20_000
CONTROL_ITEMS = 4_000


def build(items: int, seed: int = 7, events: bool = True) -> duckdb.DuckDBPyConnection:
    return memory_demo(str(items), seed, events)


@pytest.fixture(scope="module")
def demo() -> Iterator[duckdb.DuckDBPyConnection]:
    con = build(EVENTS_ITEMS)
    yield con
    con.close()


@pytest.fixture(scope="module")
def control() -> Iterator[duckdb.DuckDBPyConnection]:
    con = build(CONTROL_ITEMS, events=False)
    yield con
    con.close()


def facts(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in con.execute("SELECT key, value FROM demo_manifest").fetchall()}


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> Any:
    row = con.execute(sql, params or []).fetchone()
    assert row is not None
    return row[0]


# Leaf answers joined to the truth, with the branch of the truth and of the answer.
ANSWERS = """
    SELECT a.*, t.node_id AS truth, n.is_leaf, split_part(tn.path, '/', 1) AS truth_branch,
           split_part(n.path, '/', 1) AS answer_branch, an.kind
    FROM annotations a
    JOIN demo_truth t USING (item_id)
    JOIN tree_nodes n ON n.tree_version = a.tree_version AND n.node_id = a.node_id
    JOIN tree_nodes tn ON tn.tree_version = a.tree_version AND tn.node_id = t.node_id
    JOIN annotators an USING (annotator_id)
"""


def test_row_counts_agree_with_batches_and_manifest(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    batches = dict(demo.execute("SELECT file_name, rows_accepted FROM ingest_batches WHERE kind = 'demo'").fetchall())
    for table in ("items", "annotators", "annotations", "gold_labels", "predictions", "escalations"):
        assert batches[f"demo:{table}"] == scalar(demo, "SELECT count(*) FROM " + table)
    assert scalar(demo, "SELECT count(*) FROM items") == EVENTS_ITEMS == scalar(demo, "SELECT count(*) FROM demo_truth")
    assert scalar(demo, "SELECT count(DISTINCT item_id) FROM items") == EVENTS_ITEMS
    assert scalar(demo, "SELECT count(DISTINCT annotation_id) FROM annotations") == scalar(
        demo, "SELECT count(*) FROM annotations"
    )
    answers = sum(a["answers"] for a in manifest["annotators"].values())
    assert answers == scalar(demo, "SELECT count(*) FROM annotations")
    assert manifest["escalations"]["total"] == scalar(demo, "SELECT count(*) FROM escalations")
    assert manifest["gold_share"] == pytest.approx(
        scalar(demo, "SELECT count(*) FROM gold_labels") / EVENTS_ITEMS, abs=1e-4
    )
    assert scalar(demo, "SELECT count(*) FROM tree_nodes WHERE is_leaf") in range(30, 61)
    assert scalar(demo, "SELECT max(depth) FROM tree_nodes") == 3


def test_every_label_is_a_node_of_the_tree(demo: duckdb.DuckDBPyConnection) -> None:
    for table in ("annotations", "gold_labels", "predictions", "demo_truth"):
        orphans = scalar(
            demo,
            "SELECT count(*) FROM " + table + " x WHERE NOT EXISTS "
            "(SELECT 1 FROM tree_nodes n WHERE n.node_id = x.node_id)",
        )
        assert orphans == 0, table
    non_leaf_keys = scalar(
        demo,
        "SELECT count(*) FROM (SELECT unnest(map_keys(probabilities)) AS k FROM predictions) "
        "WHERE k NOT IN (SELECT node_id FROM tree_nodes WHERE is_leaf)",
    )
    assert non_leaf_keys == 0
    assert scalar(demo, "SELECT count(*) FROM demo_truth t JOIN tree_nodes n USING (node_id) WHERE NOT n.is_leaf") == 0


def test_every_item_has_at_least_k_crowd_answers_from_different_people(demo: duckdb.DuckDBPyConnection) -> None:
    k = facts(demo)["escalation_rule"]["k"]
    per_item = demo.execute(
        "SELECT i.item_id, count(a.annotation_id), count(DISTINCT a.annotator_id) FROM items i "
        "LEFT JOIN annotations a ON a.item_id = i.item_id AND a.stage = 'initial' GROUP BY 1"
    ).fetchall()
    counts = np.array([row[1] for row in per_item])
    assert counts.min() >= k
    rule = facts(demo)["escalation_rule"]
    assert set(np.unique(counts)) == {rule["k"], rule["k_extended"]}
    assert all(row[1] == row[2] for row in per_item)


def test_escalations_follow_the_rule_and_resolved_ones_have_expert_answers(demo: duckdb.DuckDBPyConnection) -> None:
    rule = facts(demo)["escalation_rule"]
    shares = dict(demo.execute(
        """
        WITH votes AS (SELECT item_id, node_id, count(*) AS v FROM annotations WHERE stage = 'initial' GROUP BY ALL),
        per_item AS (SELECT item_id, max(v) / sum(v) AS share FROM votes GROUP BY 1)
        SELECT e.item_id IS NOT NULL, min(p.share) FILTER (WHERE e.item_id IS NULL)
        FROM per_item p LEFT JOIN escalations e USING (item_id) GROUP BY 1
        """
    ).fetchall())
    assert shares[False] >= rule["confidence_threshold"]
    low = demo.execute(
        """
        WITH votes AS (SELECT item_id, node_id, count(*) AS v FROM annotations WHERE stage = 'initial' GROUP BY ALL),
        per_item AS (SELECT item_id, max(v) / sum(v) AS share FROM votes GROUP BY 1)
        SELECT count(*), count(e.item_id) FILTER (WHERE e.trigger = 'confidence_threshold')
        FROM per_item p LEFT JOIN escalations e USING (item_id) WHERE p.share < ?
        """,
        [rule["confidence_threshold"]],
    ).fetchone()
    assert low is not None and low[0] > 0 and low[0] == low[1]
    assert {r[0] for r in demo.execute("SELECT DISTINCT trigger FROM escalations").fetchall()} == {
        "confidence_threshold", "consensus_gap", "conflict", "manual"
    }
    resolved = demo.execute(
        """
        SELECT e.resolved_at IS NOT NULL, count(*), count(a.annotation_id),
               count(*) FILTER (WHERE a.created_at = e.resolved_at AND a.created_at > e.created_at)
        FROM escalations e
        LEFT JOIN annotations a ON a.item_id = e.item_id AND a.stage = 'escalated' AND a.annotator_id = e.routed_to
        GROUP BY 1
        """
    ).fetchall()
    by_state = {row[0]: row[1:] for row in resolved}
    assert by_state[True][0] == by_state[True][1] == by_state[True][2]
    assert by_state[False][0] > 0 and by_state[False][1] == 0
    not_experts = scalar(
        demo,
        "SELECT count(*) FROM escalations e JOIN annotators a ON a.annotator_id = e.routed_to WHERE a.kind <> 'expert'",
    )
    assert not_experts == 0
    assert scalar(demo, "SELECT count(*) FROM annotations WHERE stage = 'escalated'") == scalar(
        demo, "SELECT count(*) FROM escalations WHERE resolved_at IS NOT NULL"
    )


def test_probabilities_sum_to_one_and_node_is_the_argmax(demo: duckdb.DuckDBPyConnection) -> None:
    worst, wrong_argmax, versions = demo.execute(
        """
        SELECT max(abs(list_sum(map_values(probabilities)) - 1)),
               count(*) FILTER (WHERE probabilities[node_id] < list_max(map_values(probabilities))),
               list(DISTINCT model_version ORDER BY model_version)
        FROM predictions
        """
    ).fetchone()
    assert worst < 1e-9
    assert wrong_argmax == 0
    assert versions == ["v1", "v2"]


def test_timestamps_lie_within_the_26_weeks(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    window = [manifest["start_date"], manifest["weeks"] * 7]
    bounds = "BETWEEN CAST(? AS TIMESTAMP) AND CAST(? AS TIMESTAMP) + to_days(CAST(? AS INTEGER))"
    for table, column in (("items", "created_at"), ("annotations", "created_at"), ("predictions", "created_at"),
                          ("escalations", "created_at"), ("escalations", "resolved_at")):
        outside = scalar(
            demo,
            "SELECT count(*) FROM " + table + " WHERE " + column + " IS NOT NULL AND NOT " + column
            + " " + bounds,
            [window[0], window[0], window[1]],
        )
        assert outside == 0, (table, column)
    assert scalar(demo, "SELECT count(*) FROM annotations WHERE created_at IS NULL") == 0
    late = scalar(
        demo, "SELECT count(*) FROM annotations a JOIN items i USING (item_id) WHERE a.created_at < i.created_at"
    )
    assert late == 0


def test_costs_are_positive_piece_rates_and_spammers_are_fast(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    assert scalar(demo, "SELECT count(*) FROM annotations WHERE NOT (cost > 0 AND duration_s > 0)") == 0
    mismatched = scalar(
        demo, "SELECT count(*) FROM annotations a JOIN annotators p USING (annotator_id) WHERE a.cost <> p.cost_rate"
    )
    assert mismatched == 0
    rates = dict(demo.execute("SELECT tier, max(cost_rate) FROM annotators GROUP BY 1").fetchall())
    assert rates["expert"] > rates["crowd-trusted"] > rates["crowd-standard"]
    medians = dict(demo.execute(
        "SELECT annotator_id IN (SELECT unnest(?::VARCHAR[])), median(duration_s) FROM annotations GROUP BY 1",
        [manifest["spammers"]],
    ).fetchall())
    assert medians[True] * 3 < medians[False]


def table_rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "items": con.execute("SELECT * FROM items ORDER BY item_id").fetchall(),
        "annotations": con.execute("SELECT * FROM annotations ORDER BY annotation_id").fetchall(),
        "predictions": con.execute(
            "SELECT item_id, node_id, map_keys(probabilities), map_values(probabilities) FROM predictions ORDER BY 1"
        ).fetchall(),
        "escalations": con.execute("SELECT * FROM escalations ORDER BY item_id").fetchall(),
        "truth": con.execute("SELECT * FROM demo_truth ORDER BY item_id").fetchall(),
    }


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first, again, other = (build(1_500, seed) for seed in (3, 3, 4))
    same, different = table_rows(first), table_rows(again)
    assert same == different
    changed = table_rows(other)
    assert all(changed[table] != same[table] for table in same)


def test_realised_accuracies_match_the_rows(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    measured = dict(demo.execute(
        "SELECT annotator_id, avg((node_id = truth)::INTEGER) FROM (" + ANSWERS + ") WHERE is_leaf GROUP BY 1"
    ).fetchall())
    for annotator, fact in manifest["annotators"].items():
        assert fact["realised_accuracy"] == pytest.approx(measured[annotator], abs=1e-4)
    crowd = [f for f in manifest["annotators"].values() if f["kind"] == "crowd" and not f["is_spammer"]]
    planted = np.array([f["planted_accuracy"] for f in crowd])
    realised = np.array([f["realised_accuracy"] for f in crowd])
    assert planted.min() >= 0.55 and planted.max() <= 0.95
    assert np.corrcoef(planted, realised)[0, 1] > 0.8
    expert = scalar(
        demo, "SELECT avg((node_id = truth)::INTEGER) FROM (" + ANSWERS + ") WHERE stage = 'escalated'"
    )
    assert manifest["expert_accuracy"] == pytest.approx(expert, abs=1e-4)
    assert expert > 0.9 > realised.mean()


def test_spammers_answer_uniformly_and_workers_do_not(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    leaves = [r[0] for r in demo.execute("SELECT node_id FROM tree_nodes WHERE is_leaf ORDER BY node_id").fetchall()]

    def answer_counts(ids: list[str]) -> dict[str, int]:
        return dict(demo.execute(
            "SELECT node_id, count(*) FROM annotations WHERE annotator_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1",
            [ids],
        ).fetchall())

    spam = answer_counts(manifest["spammers"])
    assert set(spam) <= set(leaves), "spammers never give coarse answers"
    spam_counts = np.array([spam.get(leaf, 0) for leaf in leaves])
    assert spam_counts.sum() > 500
    assert chisquare(spam_counts).pvalue > 1e-3
    busiest = max((f["answers"], a) for a, f in manifest["annotators"].items() if f["kind"] == "crowd"
                  and not f["is_spammer"])[1]
    worker = answer_counts([busiest])
    assert chisquare(np.array([worker.get(leaf, 0) for leaf in leaves])).pvalue < 1e-6
    for spammer in manifest["spammers"]:
        assert manifest["annotators"][spammer]["realised_accuracy"] < 0.1


def test_errors_concentrate_on_siblings_and_hard_partners(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    pairs = {a: b for a, b in manifest["hard_sibling_pairs"]} | {b: a for a, b in manifest["hard_sibling_pairs"]}
    wrong = demo.execute(
        "SELECT x.truth, x.node_id, tn.parent_id = n.parent_id FROM (" + ANSWERS + ") x "
        "JOIN tree_nodes tn ON tn.node_id = x.truth JOIN tree_nodes n ON n.node_id = x.node_id "
        "WHERE x.is_leaf AND x.node_id <> x.truth AND x.kind = 'crowd' "
        "AND x.annotator_id NOT IN (SELECT unnest(?::VARCHAR[]))",
        [manifest["spammers"]],
    ).fetchall()
    sibling_share = np.mean([row[2] for row in wrong])
    assert sibling_share > 0.5
    on_pairs = [row for row in wrong if row[0] in pairs]
    assert np.mean([pairs[row[0]] == row[1] for row in on_pairs]) > 0.6
    coarse = scalar(
        demo,
        "SELECT avg((NOT is_leaf)::INTEGER) FROM (" + ANSWERS + ") WHERE kind = 'crowd' "
        "AND annotator_id NOT IN (SELECT unnest(?::VARCHAR[]))",
        [manifest["spammers"]],
    )
    assert 0.03 < coarse < 0.07


def branch_share_by_period(con: duckdb.DuckDBPyConnection, branch: str, date: str) -> dict[bool, float]:
    return dict(con.execute(
        "SELECT i.created_at >= CAST(? AS TIMESTAMP), avg((split_part(n.path, '/', 1) = ?)::INTEGER) "
        "FROM items i JOIN demo_truth t USING (item_id) JOIN tree_nodes n USING (node_id) GROUP BY 1",
        [date, branch],
    ).fetchall())


def test_drift_shifts_the_branch_share_from_the_drift_week(demo: duckdb.DuckDBPyConnection) -> None:
    drift = facts(demo)["drift"]
    share = branch_share_by_period(demo, drift["branch"], drift["date"])
    assert share[True] > share[False] + 0.04
    first_seen = scalar(demo, "SELECT min(created_at) FROM items WHERE source = ?", [drift["source"]])
    assert str(first_seen.date()) >= drift["date"]
    assert scalar(demo, "SELECT count(*) FROM items WHERE source = ?", [drift["source"]]) > 0.1 * EVENTS_ITEMS


def agreement_by_guideline(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], float]:
    """Pairwise crowd agreement per (guideline branch / drift branch / other, guideline version)."""
    manifest = facts(con)
    rows = con.execute(
        "WITH x AS (" + ANSWERS + ") "
        "SELECT CASE a.truth_branch WHEN ? THEN 'guideline' WHEN ? THEN 'drift' ELSE 'other' END, "
        "a.guideline_version, avg((a.node_id = b.node_id)::INTEGER) "
        "FROM x a JOIN x b ON a.item_id = b.item_id AND a.annotation_id < b.annotation_id "
        "WHERE a.kind = 'crowd' AND b.kind = 'crowd' AND a.guideline_version = b.guideline_version GROUP BY 1, 2",
        [manifest["guideline_change"]["branch"], manifest["drift"]["branch"]],
    ).fetchall()
    return {(row[0], row[1]): row[2] for row in rows}


def test_guideline_change_lowers_agreement_in_its_branch(demo: duckdb.DuckDBPyConnection) -> None:
    change = facts(demo)["guideline_change"]
    before = scalar(demo, "SELECT max(created_at) FROM annotations WHERE guideline_version = ?", [change["from"]])
    after = scalar(demo, "SELECT min(created_at) FROM annotations WHERE guideline_version = ?", [change["to"]])
    assert str(before.date()) < change["date"] <= str(after.date())
    agreement = agreement_by_guideline(demo)
    branch_drop = agreement[("guideline", "g1")] - agreement[("guideline", "g2")]
    elsewhere_drop = agreement[("other", "g1")] - agreement[("other", "g2")]
    assert branch_drop > 0.05
    assert branch_drop > elsewhere_drop + 0.04


def test_degrading_annotator_gets_worse_from_the_week(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    degrading = manifest["degrading"]
    week = degrading["from_week"]
    measured = dict(demo.execute(
        "SELECT created_at >= CAST(? AS TIMESTAMP) + to_days(CAST(? AS INTEGER)), avg((node_id = truth)::INTEGER) "
        "FROM (" + ANSWERS + ") WHERE is_leaf AND annotator_id = ? GROUP BY 1",
        [manifest["start_date"], week * 7, degrading["id"]],
    ).fetchall())
    assert degrading["accuracy_before"] == pytest.approx(measured[False], abs=1e-4)
    assert degrading["accuracy_after"] == pytest.approx(measured[True], abs=1e-4)
    assert measured[True] < measured[False] - 0.15
    assert [a for a, f in manifest["annotators"].items() if f["degrades"]] == [degrading["id"]]


def test_model_is_overconfident_only_in_the_planted_branches(demo: duckdb.DuckDBPyConnection) -> None:
    miscalibrated = list(facts(demo)["miscalibrated"])
    gaps = dict(demo.execute(
        "SELECT split_part(n.path, '/', 1) IN (SELECT unnest(?::VARCHAR[])), "
        "avg(p.probabilities[p.node_id]) - avg((p.node_id = t.node_id)::INTEGER) "
        "FROM predictions p JOIN demo_truth t USING (item_id) JOIN tree_nodes n ON n.node_id = p.node_id GROUP BY 1",
        [miscalibrated],
    ).fetchall())
    assert gaps[True] > 0.08
    assert abs(gaps[False]) < 0.03


def test_duplicates_gold_and_sources_match_the_manifest(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    duplicated = scalar(
        demo,
        "SELECT count(*) FROM items WHERE content_hash IN "
        "(SELECT content_hash FROM items GROUP BY 1 HAVING count(DISTINCT split) > 1)",
    )
    assert duplicated == manifest["duplicate_content_items"] > 0
    wrong_gold = scalar(
        demo, "SELECT count(*) FROM gold_labels g JOIN demo_truth t USING (item_id) WHERE g.node_id <> t.node_id"
    )
    assert wrong_gold == 0
    assert 0.03 < manifest["gold_share"] < 0.07
    assert {r[0] for r in demo.execute("SELECT DISTINCT source FROM items").fetchall()} == set(manifest["sources"])


def test_control_warehouse_has_no_events(control: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(control)
    assert manifest["events"] is False
    assert manifest["drift"] is None and manifest["guideline_change"] is None and manifest["degrading"] is None
    assert not any(f["degrades"] for f in manifest["annotators"].values())
    assert {r[0] for r in control.execute("SELECT DISTINCT guideline_version FROM annotations").fetchall()} == {"g1"}
    assert scalar(control, "SELECT count(*) FROM items WHERE source = 'live_chat'") == 0
    share = branch_share_by_period(control, "spam", "2026-04-13")
    assert abs(share[True] - share[False]) < 0.03
    assert len(manifest["spammers"]) >= 2


def test_cli_refuses_to_overwrite_a_warehouse(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "demo.duckdb")
    args = ["demo", "--scale", "800", "--seed", "5", "--db", db, "--no-serve"]
    main(args)
    assert "800 items" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    assert "--force" in capsys.readouterr().err
    main(["demo", "--scale", "900", "--db", db, "--no-events", "--force", "--no-serve"])
    with connect(db, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM items") == 900
        assert scalar(con, "SELECT count(*) FROM tree_versions") == 1
        assert json.loads(scalar(con, "SELECT value FROM demo_manifest WHERE key = 'events'")) is False


@pytest.mark.parametrize("scale", ["huge", "12", "-5"])
def test_cli_rejects_a_bad_scale(scale: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as rejected:
        main(["demo", "--scale", scale, "--db", str(tmp_path / "x.duckdb"), "--no-serve"])
    assert rejected.value.code == 2
    assert "--scale" in capsys.readouterr().err
    assert not (tmp_path / "x.duckdb").exists()


def test_cli_serves_the_new_warehouse_unless_told_not_to(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, int]] = []
    monkeypatch.setattr("dashboard.cli.demo.serve", lambda db, port: served.append((db, port)))
    db = str(tmp_path / "served.duckdb")
    main(["demo", "--scale", "600", "--db", db])
    assert served == [(db, 8501)]
    main(["demo", "--scale", "600", "--db", db, "--force", "--no-serve"])
    assert len(served) == 1


def test_weekly_volume_varies_and_matches_the_manifest(demo: duckdb.DuckDBPyConnection) -> None:
    manifest = facts(demo)
    weekly = dict(demo.execute(
        "SELECT CAST(floor(date_diff('second', CAST(? AS TIMESTAMP), created_at) / 604800) AS INTEGER), count(*) "
        "FROM items GROUP BY 1",
        [manifest["start_date"]],
    ).fetchall())
    volume = np.array([weekly.get(week, 0) for week in range(manifest["weeks"])])
    assert volume.tolist() == manifest["weekly_items"]
    assert volume.sum() == EVENTS_ITEMS
    assert volume.min() > 0 and volume.std() / volume.mean() > 0.1
