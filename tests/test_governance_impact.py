"""The impact report's figures against direct recomputation from the raw tables (krippendorff, scipy, pandas)."""

from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy
from test_governance_fixtures import fresh_warehouse, insert_answers

from governance import proposals as P
from governance.impact import compute_report

MERGE = {"op": "merge", "nodes": ["lynx"], "into": "cat"}
SPLIT = {"op": "split", "node_id": "dog", "into": [{"node_id": "small_dog"}, {"node_id": "big_dog"}]}

warehouse = pytest.fixture(fresh_warehouse, name="warehouse")


def report_for(con, *ops: dict):
    p = P.create(
        con, P.ProposalFile.model_validate({"title": "t", "rationale": "r", "operations": list(ops)}), user="alice"
    )
    return compute_report(
        con, proposal_id=p.proposal_id, proposal_hash=p.proposal_hash, base_version=1, operations=p.operations
    )


def reference_alpha(answers: pd.DataFrame, column: str = "node_id") -> float:
    """Alpha from a coders x items matrix, built independently of the warehouse code."""
    matrix = answers.pivot_table(index="annotator_id", columns="item_id", values=column, aggfunc="first")
    codes = {v: i for i, v in enumerate(sorted(answers[column].unique()))}
    data = matrix.apply(lambda col: col.map(codes)).to_numpy(dtype=float)
    return krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")


@pytest.fixture
def frames(warehouse):
    return {
        t: warehouse.execute("SELECT * FROM " + t).df()
        for t in ("annotations", "gold_labels", "predictions", "escalations")
    }


def test_merge_raises_alpha_exactly_as_relabelling_the_data_does(warehouse, frames):
    report = report_for(warehouse, MERGE)
    answers = frames["annotations"]
    merged = answers.assign(node_id=answers["node_id"].replace({"lynx": "cat"}))
    assert report.alpha_before == pytest.approx(reference_alpha(answers), abs=1e-9)
    assert report.alpha_after == pytest.approx(reference_alpha(merged), abs=1e-9)
    assert report.alpha_after > report.alpha_before + 0.1
    (branch,) = report.branches
    mammals = ["cat", "lynx", "dog"]
    assert branch.branch == "mammal" and branch.nodes == mammals
    in_branch = answers[answers["node_id"].isin(mammals)]
    assert branch.alpha_before == pytest.approx(reference_alpha(in_branch), abs=1e-9)
    assert branch.alpha_after == pytest.approx(
        reference_alpha(in_branch.assign(node_id=in_branch["node_id"].replace({"lynx": "cat"}))), abs=1e-9
    )
    shares = in_branch["node_id"].value_counts()
    assert branch.entropy_before == pytest.approx(entropy(shares, base=2))
    assert branch.entropy_after == pytest.approx(
        entropy(merged[merged["node_id"].isin(mammals)]["node_id"].value_counts(), base=2)
    )
    assert report.distribution_after["cat"] == shares["cat"] + shares["lynx"]


def test_affected_counts_match_the_raw_tables(warehouse, frames):
    report = report_for(warehouse, MERGE)
    answers, gold, preds, esc = (frames[t] for t in ("annotations", "gold_labels", "predictions", "escalations"))
    in_flight = set(esc[esc["resolved_at"].isna()]["item_id"])
    top = preds.assign(top=[max(dict(p), key=dict(p).get) for p in preds["probabilities"]])
    for impact in report.affected:
        rows = answers[answers["node_id"] == impact.node_id]
        assert impact.annotations == len(rows)
        assert impact.items == rows["item_id"].nunique()
        assert impact.annotators == rows["annotator_id"].nunique()
        assert impact.gold_labels == (gold["node_id"] == impact.node_id).sum()
        assert impact.escalations_in_flight == len(set(rows["item_id"]) & in_flight)
        assert impact.predictions == {"clf@v1": int((top["top"] == impact.node_id).sum())}
    assert [n.node_id for n in report.affected] == ["cat", "lynx"]
    assert report.totals["mapped_automatically"] == (answers["node_id"] == "lynx").sum()
    assert report.totals["needs_relabelling"] == 0


def test_conflicts_are_items_where_annotators_chose_both_merged_nodes(warehouse, frames):
    report = report_for(warehouse, MERGE)
    answers = frames["annotations"]
    both = answers.groupby("item_id")["node_id"].agg(lambda s: {"cat", "lynx"} <= set(s))
    (conflict,) = report.conflicts
    assert (conflict.new_node, conflict.items) == ("cat", int(both.sum()))
    assert conflict.sample_items == sorted(both[both].index)[:10]


def test_model_accuracy_before_and_after_against_gold(warehouse, frames):
    report = report_for(warehouse, MERGE)
    preds, gold = frames["predictions"], frames["gold_labels"]
    rename = {"lynx": "cat"}

    def top(p, mapping):
        summed: dict[str, float] = {}
        for k, v in dict(p).items():
            summed[mapping.get(k, k)] = summed.get(mapping.get(k, k), 0.0) + v
        return max(sorted(summed), key=summed.get)

    pairs = preds.merge(gold, on="item_id", suffixes=("_p", "_g"))
    before = np.mean([top(p, {}) == g for p, g in zip(pairs["probabilities"], pairs["node_id_g"], strict=True)])
    after = np.mean(
        [top(p, rename) == rename.get(g, g) for p, g in zip(pairs["probabilities"], pairs["node_id_g"], strict=True)]
    )
    (acc,) = report.model_accuracy
    assert (acc.pairs, acc.accuracy_before, acc.accuracy_after) == (
        len(pairs),
        pytest.approx(before),
        pytest.approx(after),
    )
    assert acc.accuracy_after > acc.accuracy_before


def test_split_counts_relabelling_and_estimates_cost_from_history(warehouse, frames):
    report = report_for(warehouse, SPLIT)
    answers = frames["annotations"]
    dog = answers[answers["node_id"] == "dog"]
    assert report.totals["needs_relabelling"] == len(dog)
    assert report.totals["items_to_relabel"] == dog["item_id"].nunique()
    per_item = answers.groupby("item_id").size()
    items = dog["item_id"].nunique()
    quartiles = [0.25, 0.5, 0.75]
    expected = items * np.quantile(per_item, quartiles) * np.quantile(answers["cost"], quartiles)
    hours = items * np.quantile(per_item, quartiles) * np.quantile(answers["duration_s"], quartiles) / 3600
    got = report.relabel_cost
    assert [got.low, got.median, got.high] == pytest.approx(list(expected))
    assert [report.relabel_hours.low, report.relabel_hours.median, report.relabel_hours.high] == pytest.approx(
        list(hours)
    )
    assert got.low <= got.median <= got.high
    assert not report.reversible
    assert all(not c["automatic"] for c in report.sample_changes)


def test_report_hash_is_reproducible_and_follows_the_data(warehouse):
    first = report_for(warehouse, MERGE)
    again = compute_report(
        warehouse,
        proposal_id=first.proposal_id,
        proposal_hash=first.proposal_hash,
        base_version=1,
        operations=P.load(warehouse, first.proposal_id).operations,
    )
    assert again.digest() == first.digest()
    insert_answers(
        warehouse, pd.DataFrame({"item_id": ["i0000"], "annotator_id": ["x"], "node_id": ["lynx"]}), 1, prefix="x"
    )
    changed = compute_report(
        warehouse,
        proposal_id=first.proposal_id,
        proposal_hash=first.proposal_hash,
        base_version=1,
        operations=P.load(warehouse, first.proposal_id).operations,
    )
    assert changed.digest() != first.digest()


def test_cosmetic_change_leaves_quality_unchanged(warehouse):
    report = report_for(warehouse, {"op": "rename", "node_id": "cat", "title": "Cat"})
    assert report.alpha_before == report.alpha_after
    assert report.distribution_before == report.distribution_after
    assert report.reversible and report.totals["unchanged"] == report.totals["annotations"]


def test_stored_report_reads_back_with_the_hash_approvals_sign(warehouse):
    p = P.create(
        warehouse,
        P.ProposalFile.model_validate({"title": "t", "rationale": "r", "operations": [SPLIT]}),
        user="alice",
    )
    p = P.submit(warehouse, p.proposal_id, user="alice")
    stored = p.report(warehouse)
    assert stored is not None and stored.digest() == p.report_hash
    assert stored.totals["needs_relabelling"] > 0
