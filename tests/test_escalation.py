"""Escalation gains, time to label and the threshold what-if on a warehouse with planted accuracies."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from queries.connection import bump_data_version, memory, transaction
from queries.demo import simulate, write_simulation
from queries.demo_config import demo_config
from queries.escalation import (
    MIN_GOLD_FOR_EXPERT_ACCURACY,
    escalation_summary,
    expert_accuracy,
    gains_by,
    items_escalated_at,
    threshold_whatif,
    time_to_label,
)
from queries.filters import Filters
from queries.ingest import ingest_file
from queries.refresh import refresh
from tests.conftest import load_answers

TREE = """
taxonomy: t
nodes:
  a: {children: {a1: {}, a2: {}, a3: {}}}
  b: {children: {b1: {}, b2: {}, b3: {}}}
"""
LEAVES = np.array(["a1", "a2", "a3", "b1", "b2", "b3"])
ORDINAL = {leaf: i for i, leaf in enumerate(LEAVES)}
START = pd.Timestamp("2026-02-02")


@dataclass
class Planted:
    con: duckdb.DuckDBPyConnection
    answers: pd.DataFrame
    escalations: pd.DataFrame
    truth: pd.Series
    expert_accuracy: float


def _wrong(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A uniformly random leaf other than the true one."""
    shift = rng.integers(1, len(LEAVES), len(truth))
    idx = (np.searchsorted(LEAVES, truth) + shift) % len(LEAVES)
    return LEAVES[idx]


def build_planted(
    n_items: int = 3000,
    crowd_accuracy: float = 0.65,
    k: int = 5,
    expert_accuracy: float = 0.95,
    escalate_below: float = 0.7,
    seed: int = 7,
) -> Planted:
    """Crowd answers with a planted accuracy, experts who resolve low-agreement items, gold for every item.

    Crowd answer i of an item costs 0.05 and comes at hour i; escalations are raised an hour after the
    last crowd answer, resolved after a lognormal delay (some never), and each expert answer costs 1.0.
    """
    rng = np.random.default_rng(seed)
    truth = LEAVES[rng.integers(0, len(LEAVES), n_items)]
    items = np.repeat(np.arange(n_items), k)
    right = rng.random(n_items * k) < crowd_accuracy
    node = np.where(right, truth[items], _wrong(rng, truth[items]))
    crowd = pd.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in items],
            "annotator_id": [f"w{j}" for j in rng.integers(0, 40, n_items * k)],
            "node_id": node,
            "stage": "initial",
            "created_at": START + pd.to_timedelta(np.tile(np.arange(k), n_items), unit="h"),
            "cost": 0.05,
            "confidence": np.where(right, 0.8, 0.6),
        }
    )
    share = crowd.groupby(["item_id", "node_id"]).size().groupby(level="item_id").max() / k
    esc_items = share.index[share.to_numpy() < escalate_below].to_numpy()
    esc_idx = np.array([int(x[1:]) for x in esc_items])
    delay = rng.lognormal(np.log(30), 0.6, len(esc_items))
    resolved = rng.random(len(esc_items)) < 0.9
    raised = START + pd.Timedelta(hours=k)
    expert_right = rng.random(len(esc_items)) < expert_accuracy
    expert_node = np.where(expert_right, truth[esc_idx], _wrong(rng, truth[esc_idx]))
    experts = pd.DataFrame(
        {
            "item_id": esc_items,
            "annotator_id": np.where(rng.random(len(esc_items)) < 0.5, "e1", "e2"),
            "node_id": expert_node,
            "stage": "escalated",
            "created_at": raised + pd.to_timedelta(delay, unit="h"),
            "cost": 1.0,
            "confidence": 0.9,
        }
    )[resolved]
    answers = pd.concat([crowd, experts], ignore_index=True)
    answers["annotation_id"] = [f"t{i}" for i in range(len(answers))]
    escalations = pd.DataFrame(
        {
            "item_id": esc_items,
            "trigger": np.where(share.loc[esc_items].to_numpy() < 0.5, "conflict", "low_share"),
            "routed_to": experts.reindex(range(len(esc_items)))["annotator_id"].fillna("e1").to_numpy(),
            "created_at": raised,
            "resolved_at": (raised + pd.to_timedelta(delay, unit="h")).where(resolved, pd.NaT),
        }
    )
    con = memory()
    gold = pd.DataFrame({"item_id": [f"i{i:05d}" for i in range(n_items)], "node_id": truth})
    load_answers(con, TREE, answers, gold=gold)
    con.register("_esc", escalations)
    con.execute("INSERT INTO escalations SELECT item_id, trigger, routed_to, created_at, resolved_at, 1 FROM _esc")
    con.unregister("_esc")
    con.execute("UPDATE annotators SET kind = 'expert', tier = 'expert' WHERE annotator_id LIKE 'e%'")
    con.execute("UPDATE annotators SET tier = 'crowd' WHERE annotator_id LIKE 'w%'")
    refresh(con)
    return Planted(con, answers, escalations, gold.set_index("item_id")["node_id"], expert_accuracy)


def plurality(answers: pd.DataFrame) -> pd.Series:
    """Crowd consensus per item, ties to the node first in tree order: an independent reference."""
    initial = answers[answers["stage"] == "initial"]
    counts = initial.groupby(["item_id", "node_id"]).size().rename("n").reset_index()
    counts["ordinal"] = counts["node_id"].map(ORDINAL)
    counts = counts.sort_values(["item_id", "n", "ordinal"], ascending=[True, False, True])
    return counts.drop_duplicates("item_id").set_index("item_id")["node_id"]


@pytest.fixture(scope="module")
def planted() -> Planted:
    return build_planted()


def test_summary_matches_direct_computation_and_planted_expert_accuracy(planted: Planted) -> None:
    s = escalation_summary(planted.con, Filters())
    before = plurality(planted.answers)
    after = planted.answers[planted.answers["stage"] == "escalated"].set_index("item_id")["node_id"]
    truth = planted.truth.loc[after.index]
    assert s.items == len(planted.truth)
    assert s.escalated == len(planted.escalations)
    assert s.resolved == len(after)
    assert s.n_gold == len(after)
    assert s.accuracy_before == pytest.approx((before.loc[after.index] == truth).mean())
    assert s.accuracy_after == pytest.approx((after == truth).mean())
    assert s.flip_rate == pytest.approx((after != before.loc[after.index]).mean())
    # Escalated items are the contested ones: the crowd is often wrong there and the experts fix it.
    assert s.gain is not None and s.gain > 0.05
    assert s.accuracy_after == pytest.approx(planted.expert_accuracy, abs=0.03)
    corrected = ((before.loc[after.index] != truth) & (after == truth)).mean()
    assert s.expert_cost_per_corrected_error == pytest.approx(1.0 / corrected)


def test_gains_by_trigger_and_expert_partition_the_escalations(planted: Planted) -> None:
    by_trigger = gains_by(planted.con, Filters(), by="trigger").set_index("name")
    expected = planted.escalations["trigger"].value_counts()
    assert by_trigger["escalated"].to_dict() == expected.to_dict()
    by_expert = gains_by(planted.con, Filters(), by="expert")
    assert by_expert["resolved"].sum() == (planted.answers["stage"] == "escalated").sum()
    by_branch = gains_by(planted.con, Filters(), by="branch")
    assert set(by_branch["name"]) <= {"a", "b"} and by_branch["escalated"].sum() == len(planted.escalations)
    with pytest.raises(ValueError, match="by must be"):
        gains_by(planted.con, Filters(), by="colour")


def test_time_to_label_and_sla_share(planted: Planted) -> None:
    sla = 36.0
    table = time_to_label(planted.con, Filters(), sla_hours=sla).set_index("trigger")
    esc = planted.escalations
    hours = (esc["resolved_at"] - esc["created_at"]).dt.total_seconds() / 3600
    overall = table.loc["all"]
    assert overall["escalations"] == len(esc)
    assert overall["in_flight"] == hours.isna().sum()
    assert overall["median_hours"] == pytest.approx(hours.median())
    # Open escalations are breaches once older than the SLA at the newest timestamp in the warehouse.
    newest = max(planted.answers["created_at"].max(), esc["created_at"].max(), esc["resolved_at"].max())
    age = (newest - esc["created_at"]).dt.total_seconds() / 3600
    within = (hours <= sla).sum()
    breached = (hours > sla).sum() + (hours.isna() & (age > sla)).sum()
    assert overall["share_within_sla"] == pytest.approx(within / (within + breached))
    assert table.drop(index="all")["escalations"].sum() == len(esc)


def test_whatif_endpoints_and_monotone_escalation(planted: Planted) -> None:
    curve = threshold_whatif(planted.con, Filters(), thresholds=np.linspace(0.0, 1.0, 11))
    before = plurality(planted.answers)
    crowd_accuracy = (before == planted.truth.loc[before.index]).mean()
    first, last = curve.iloc[0], curve.iloc[-1]
    assert first["escalated_share"] == 0 and first["projected_accuracy"] == pytest.approx(crowd_accuracy)
    assert first["projected_cost_per_item"] == pytest.approx(0.05 * 5)
    s = escalation_summary(planted.con, Filters())
    assert last["escalated_share"] == 1 and last["projected_accuracy"] == pytest.approx(s.accuracy_after)
    assert last["projected_cost_per_item"] == pytest.approx(0.05 * 5 + 1.0)
    assert np.all(np.diff(curve["escalated_share"]) >= 0)
    at_half = items_escalated_at(planted.con, Filters(), 0.5)
    assert len(at_half) == round(curve.loc[5, "escalated_share"] * len(planted.truth))
    assert at_half["confidence"].max() <= 0.5


def test_filters_restrict_items_and_empty_inputs_give_empty_results(planted: Planted) -> None:
    branch = escalation_summary(planted.con, Filters(branch="a"))
    items_a = planted.con.execute("SELECT count(*) FROM d_items WHERE consensus_lineage[1] = 'a'").fetchone()
    assert items_a is not None and branch.items == items_a[0]
    by_expert = escalation_summary(planted.con, Filters(annotators=("e1",)))
    assert by_expert.escalated == (planted.answers["annotator_id"] == "e1").sum()
    nothing = Filters(sources=("nowhere",))
    assert escalation_summary(planted.con, nothing).escalated == 0
    assert gains_by(planted.con, nothing).empty and time_to_label(planted.con, nothing).empty
    assert threshold_whatif(planted.con, nothing).empty


def test_expert_accuracy_falls_back_to_dawid_skene_when_gold_is_thin() -> None:
    planted = build_planted(n_items=400, seed=3)
    con = planted.con
    assert expert_accuracy(con, Filters()).source == "gold"
    con.execute("UPDATE d_item_outcomes SET gold_node = NULL WHERE escalated AND item_idx % 20 <> 0")
    # Refresh's Dawid-Skene sees the experts answer right about as often as planted.
    from_ds = expert_accuracy(con, Filters())
    assert from_ds.source == "dawid_skene" and from_ds.value == pytest.approx(planted.expert_accuracy, abs=0.04)
    con.execute(
        "CREATE OR REPLACE TABLE d_ds_annotators AS SELECT * FROM "
        "(VALUES ('e1', 0.9), ('e1', 0.7), ('e2', 0.6), ('w1', 0.1)) t(annotator_id, ds_accuracy)"
    )
    thin = expert_accuracy(con, Filters())
    experts = planted.answers[planted.answers["stage"] == "escalated"]["annotator_id"].value_counts()
    expected = (0.8 * experts["e1"] + 0.6 * experts["e2"]) / experts.sum()
    assert thin.source == "dawid_skene" and thin.value == pytest.approx(expected)
    gold_left = con.execute(
        "SELECT count(*) FROM d_item_outcomes WHERE after_node IS NOT NULL AND gold_node IS NOT NULL"
    )
    assert 0 < gold_left.fetchone()[0] < MIN_GOLD_FOR_EXPERT_ACCURACY
    assert threshold_whatif(con, Filters(), thresholds=[1.0])["projected_accuracy"].item() == pytest.approx(expected)


def test_warehouse_without_escalations_or_gold() -> None:
    con = memory()
    load_answers(
        con,
        TREE,
        pd.DataFrame({"item_id": ["x", "x", "y"], "annotator_id": ["u", "v", "u"], "node_id": ["a1", "a2", "b1"]}),
    )
    refresh(con)
    s = escalation_summary(con, Filters())
    assert s.items == 2 and s.escalated == 0 and s.accuracy_after is None
    assert time_to_label(con, Filters()).empty
    curve = threshold_whatif(con, Filters(), thresholds=[0.0, 1.0])
    assert list(curve["escalated_share"]) == [0.0, 1.0] and curve["projected_accuracy"].isna().all()


DEMO_ITEMS = 10_000


@functools.lru_cache(maxsize=1)
def demo_warehouse() -> duckdb.DuckDBPyConnection:
    """The demo at 10k items, refreshed, with gold widened to every item's planted true leaf.

    The demo keeps gold for 5% of items, about fifty per branch: too few to rank branches by
    calibration error. Scoring against the planted truth of every item makes the known answers sharp.
    """
    con = memory()
    with transaction(con):
        write_simulation(con, simulate(demo_config(str(DEMO_ITEMS), 7, True)), "test")
    con.execute(
        "INSERT INTO gold_labels SELECT t.item_id, t.node_id, 'truth', n.tree_version, 0 "
        "FROM demo_truth t ANTI JOIN gold_labels g USING (item_id) JOIN (SELECT max(tree_version) AS tree_version "
        "FROM tree_versions) n ON TRUE"
    )
    refresh(con, full=True)
    return con


def manifest(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM demo_manifest").fetchall()}


def test_demo_escalation_gain_matches_planted_expert_accuracy() -> None:
    con = demo_warehouse()
    facts = manifest(con)
    s = escalation_summary(con, Filters())
    planted = facts["escalations"]
    assert isinstance(planted, dict)
    assert s.escalated == planted["total"] and s.escalated - s.resolved == planted["unresolved"]
    assert s.accuracy_after == pytest.approx(facts["expert_accuracy"], abs=0.005)
    assert s.gain is not None and s.gain > 0.05
    # Experts answer a lognormal delay with an 8-hour median after the escalation is raised.
    assert s.median_hours_to_label == pytest.approx(8.0, rel=0.1)
    curve = threshold_whatif(con, Filters(), thresholds=[0.0, 1.0])
    crowd = con.execute(
        "SELECT avg((crowd_node = gold_node)::INT) FROM d_item_outcomes WHERE gold_node IS NOT NULL"
    ).fetchone()
    assert crowd is not None and curve["projected_accuracy"].iloc[0] == pytest.approx(crowd[0])
    assert curve["projected_accuracy"].iloc[1] == pytest.approx(facts["expert_accuracy"], abs=0.01)


def test_gold_and_answers_follow_a_merge_into_the_as_of_version() -> None:
    """Gold and the crowd on a node merged away both map to its successor, so accuracy stays 1 after the merge."""
    from queries.taxonomy import parse_tree, store_tree

    con = memory()
    answers = pd.DataFrame({"item_id": ["i", "i", "j"], "annotator_id": ["u", "v", "u"], "node_id": ["a1", "a1", "b"]})
    gold = pd.DataFrame({"item_id": ["i", "j"], "node_id": ["a1", "b"]})
    load_answers(con, "taxonomy: t\nnodes:\n  a: {children: {a1: {}, a2: {}}}\n  b: {}\n", answers, gold=gold)
    refresh(con)
    before = con.execute("SELECT item_id, gold_node FROM d_item_outcomes ORDER BY item_id").fetchall()
    assert before == [("i", "a1"), ("j", "b")]
    v2 = store_tree(con, parse_tree("taxonomy: t\nnodes:\n  a: {children: {a2: {}}}\n  b: {}\n"), created_by="test")
    # What applying the merge records: every v1 node's successor in v2.
    for old, new in (("a", "a"), ("a1", "a2"), ("a2", "a2"), ("b", "b")):
        con.execute("INSERT INTO node_mappings VALUES (?, 1, ?, ?, false, 1)", [v2, old, new])
    refresh(con, full=True)
    after = con.execute("SELECT item_id, gold_node, crowd_node FROM d_item_outcomes ORDER BY item_id").fetchall()
    assert after == [("i", "a2", "a2"), ("j", "b", "b")]
    raw = con.execute("SELECT node_id FROM gold_labels WHERE item_id = 'i'").fetchall()
    assert raw == [("a1",)]
    row = con.execute("SELECT avg((crowd_node = gold_node)::INT) FROM d_item_outcomes").fetchone()
    assert row is not None and row[0] == 1.0


def _ingest(con: duckdb.DuckDBPyConnection, folder: Path, kind: str, rows: pd.DataFrame) -> None:
    """Write ``rows`` as a CSV and ingest it as one batch, as `labelgov ingest` would."""
    file = folder / f"{kind}-{len(list(folder.glob('*.csv')))}.csv"
    rows.to_csv(file, index=False)
    report = ingest_file(con, kind, file, actor="test")
    assert report.rows_accepted == len(rows) and not report.quarantined, report


def _log_escalations(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
    """Append escalation-log rows as one batch (no ingest command writes them; the demo writes them like this)."""
    with transaction(con):
        batch = int(con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches").fetchall()[0][0])
        con.register("_esc", rows)
        con.execute("INSERT INTO escalations SELECT item_id, trigger, routed_to, created_at, resolved_at, ? FROM _esc",
                    [batch])
        con.unregister("_esc")
        con.execute(
            "INSERT INTO ingest_batches VALUES (?, 'escalations', 'test', ?, 'csv', NULL, ?, ?, 0, 'test', now())",
            [batch, f"esc{batch}", len(rows), len(rows)],
        )
        bump_data_version(con)


def _outcomes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute("SELECT * FROM d_item_outcomes ORDER BY item_idx").df()


def _refresh_matches_full(con: duckdb.DuckDBPyConnection, twin: Path) -> None:
    """An incremental refresh leaves d_item_outcomes equal to a full refresh of a copy, in the full one's order."""
    con.execute("ATTACH ? AS twin", [str(twin)])
    con.execute("COPY FROM DATABASE memory TO twin")
    con.execute("DETACH twin")
    report = refresh(con)
    assert {s.step: s.mode for s in report.steps}["escalation"] == "incremental"
    with duckdb.connect(str(twin)) as other:
        assert {s.step: s.mode for s in refresh(other, full=True).steps}["escalation"] == "full"
        expected = _outcomes(other)
        expected_as_of = other.execute("SELECT as_of FROM d_outcomes_as_of").fetchall()
    # Same rows and values; cost sums only to the last bit, which differs between two full refreshes too
    # (DuckDB adds an item's costs in thread order).
    pd.testing.assert_frame_equal(_outcomes(con), expected, check_exact=False, rtol=1e-12, atol=0)
    assert con.execute("SELECT as_of FROM d_outcomes_as_of").fetchall() == expected_as_of
    stored = con.execute("SELECT escalated, item_idx FROM d_item_outcomes").fetchall()
    assert stored == sorted(stored, key=lambda r: (not r[0], r[1])), "the rewrite lost the escalated-first order"


def test_incremental_refresh_equals_a_full_refresh_after_each_kind_of_batch(tmp_path: Path) -> None:
    p = build_planted(n_items=400, seed=11)
    con = p.con
    later = START + pd.Timedelta(days=20)
    calm = sorted(set(p.truth.index) - set(p.escalations["item_id"]))
    before = _outcomes(con).set_index("item_id")

    # (a) Three more answers on a leaf flip the crowd label of existing items; new items arrive with answers.
    flipped = calm[:6]
    more = pd.DataFrame(
        {
            "item_id": [i for i in flipped for _ in range(6)] + ["n1", "n1", "n2"],
            "annotator_id": [f"w{j}" for j in range(6)] * len(flipped) + ["w1", "w2", "w3"],
            "label": ["b3"] * (6 * len(flipped)) + ["a1", "a2", "b1"],
            "stage": "initial",
            "created_at": later,
            "cost": 0.05,
        }
    )
    _ingest(con, tmp_path, "annotations", more)
    _refresh_matches_full(con, tmp_path / "twin_a.duckdb")
    after = _outcomes(con).set_index("item_id")
    assert (after.loc[flipped, "crowd_node"] == "b3").all() and (before.loc[flipped, "crowd_node"] != "b3").all()
    assert after.loc["n1", "crowd_answers"] == 2 and "n2" in after.index

    # (b) New escalations (one still open), a second log row for an escalated item, and expert answers.
    raised = later + pd.Timedelta(hours=1)
    open_item, answered, again = calm[6], calm[7], p.escalations["item_id"].iloc[0]
    _log_escalations(
        con,
        pd.DataFrame(
            {
                "item_id": [open_item, answered, "n1", again],
                "trigger": ["conflict", "low_share", "conflict", "audit"],
                "routed_to": ["e1", "e2", "e1", "e2"],
                "created_at": [raised] * 4,
                "resolved_at": [pd.NaT, raised + pd.Timedelta(hours=5), raised + pd.Timedelta(hours=2), pd.NaT],
            }
        ),
    )
    experts = pd.DataFrame(
        {
            "item_id": [answered, "n1", again],
            "annotator_id": ["e2", "e1", "e3"],
            "label": ["a2", "b2", "a3"],
            "stage": ["escalated", "escalated", "adjudication"],
            "created_at": [raised + pd.Timedelta(hours=h) for h in (5, 2, 9)],
            "cost": 1.0,
        }
    )
    _ingest(con, tmp_path, "annotations", experts)
    _refresh_matches_full(con, tmp_path / "twin_b.duckdb")
    after = _outcomes(con).set_index("item_id")
    assert after.loc[[open_item, answered, "n1"], "escalated"].all()
    assert pd.isna(after.loc[open_item, "after_node"]) and after.loc[answered, "after_node"] == "a2"
    assert after.loc[again, "after_node"] == "a3" and pd.isna(after.loc[again, "esc_resolved_at"])

    # (c) Gold for the new items and for an item that has no answers (and so no outcome row).
    _ingest(con, tmp_path, "gold", pd.DataFrame({"item_id": ["n1", "n2", "n3"], "label": ["b2", "a1", "a1"]}))
    _refresh_matches_full(con, tmp_path / "twin_c.duckdb")
    after = _outcomes(con).set_index("item_id")
    assert after.loc["n1", "gold_node"] == "b2" and "n3" not in after.index


def test_a_new_tree_version_or_full_refreshes_outcomes_in_full() -> None:
    """A new tree version can remap every item's nodes, so the step recomputes all rows then."""
    from queries.taxonomy import parse_tree, store_tree

    con = build_planted(n_items=50).con
    assert {s.step: s.mode for s in refresh(con, full=True).steps}["escalation"] == "full"
    store_tree(con, parse_tree(TREE.replace("b3: {}", "b3: {}, b4: {}")), created_by="test")
    bump_data_version(con)
    assert {s.step: s.mode for s in refresh(con).steps}["escalation"] == "full"


def test_item_level_scopes_keep_the_items_of_that_source_segment_and_branch(small_demo: Path) -> None:
    """Item-level filters read the outcome rows' own lineage, source and segment: the items they keep are the
    d_items rows with that source, segment and consensus branch, alone and combined; the replayed redundancy
    rows carry the same columns, so the curve scores exactly those gold items."""
    from queries import cost_quality
    from queries.escalation import item_scope

    with duckdb.connect(str(small_demo), read_only=True) as con:
        source, segment = con.execute("SELECT any_value(source), any_value(segment) FROM d_items").fetchone()
        smallest = "SELECT consensus_lineage[1] FROM d_items GROUP BY 1 ORDER BY count(*) LIMIT 1"
        branch = con.execute(smallest).fetchone()[0]
        cases = [
            (Filters(sources=(source,)), "source = ?", [source]),
            (Filters(segments=(segment, "nowhere")), "segment = ?", [segment]),
            (Filters(branch=branch, sources=(source,)), "source = ? AND list_contains(consensus_lineage, ?)",
             [source, branch]),
        ]
        for f, pred, params in cases:
            want = {r[0] for r in con.execute(
                "SELECT item_idx FROM d_items WHERE " + pred
                + " AND item_idx IN (SELECT item_idx FROM d_item_outcomes)",
                params,
            ).fetchall()}
            scope = item_scope(con, f)
            got = {r[0] for r in con.execute(
                "SELECT o.item_idx FROM d_item_outcomes o WHERE " + scope.sql, scope.params
            ).fetchall()}
            assert got == want and 0 < len(got) < con.execute("SELECT count(*) FROM d_items").fetchone()[0]
            curve = cost_quality.redundancy_curve(con, f)
            gold = len(want & {r[0] for r in con.execute(
                "SELECT DISTINCT item_idx FROM d_cost_quality_items"
            ).fetchall()})
            one = curve[(curve["branch"] == "all") & (curve["k"] == 1)]
            assert gold > 0 and set(one["n_items"]) == {gold}
