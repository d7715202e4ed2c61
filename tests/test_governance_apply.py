"""Applying: stored mappings, conservation, rollback on a failed check, idempotence, relabelling queue."""

from __future__ import annotations

import pandas as pd
import pytest
from test_governance_fixtures import build, fresh_warehouse, insert_answers

from governance import apply as applying
from governance import proposals as P
from governance.apply import CheckFailed
from queries import governance_versions
from queries.connection import data_version
from queries.taxonomy import latest_version, parse_tree, store_tree

MERGE = {"op": "merge", "nodes": ["lynx"], "into": "cat"}
SPLIT = {"op": "split", "node_id": "dog", "into": [{"node_id": "small_dog"}, {"node_id": "big_dog"}]}

warehouse = pytest.fixture(fresh_warehouse, name="warehouse")


def approved(con, *ops: dict) -> P.Proposal:
    p = P.create(
        con, P.ProposalFile.model_validate({"title": "t", "rationale": "r", "operations": list(ops)}), user="alice"
    )
    p = P.submit(con, p.proposal_id, user="alice")
    for steward in ("bob", "carol")[: p.approvals_needed]:
        p = P.approve(con, p.proposal_id, user=steward, ack_report=p.report_hash)
    assert p.status == "approved"
    return p


def counts(con) -> pd.Series:
    return con.execute("SELECT node_id, count(*) AS n FROM annotations GROUP BY 1").df().set_index("node_id")["n"]


def test_merge_apply_maps_every_annotation_and_conserves_counts(warehouse):
    raw_before = warehouse.execute("SELECT * FROM annotations ORDER BY annotation_id").df()
    before = counts(warehouse)
    version_before = data_version(warehouse)
    p = approved(warehouse, MERGE)
    result = applying.apply(warehouse, p.proposal_id, user="carol")
    assert (result.from_version, result.to_version, result.annotations_mapped) == (1, 2, len(raw_before))
    # The original (version, node) of every annotation is untouched.
    pd.testing.assert_frame_equal(
        warehouse.execute("SELECT * FROM annotations ORDER BY annotation_id").df(), raw_before
    )
    mapping = governance_versions.mapping_to_version(warehouse, 2)
    joined = raw_before.merge(mapping, on=["tree_version", "node_id"], how="left")
    assert joined["target_node_id"].notna().all()
    after = joined.groupby("target_node_id").size()
    assert after["cat"] == before["cat"] + before["lynx"]
    assert "lynx" not in after.index
    assert after.drop("cat").equals(
        before.drop(["cat", "lynx"]).sort_index().rename(None).rename_axis("target_node_id")
    )
    assert data_version(warehouse) > version_before
    assert P.load(warehouse, p.proposal_id).status == "applied"
    assert applying.verify_migration(warehouse, p.proposal_id)


def test_apply_is_idempotent(warehouse):
    p = approved(warehouse, MERGE)
    first = applying.apply(warehouse, p.proposal_id, user="carol")
    rows = warehouse.execute("SELECT count(*) FROM node_mappings").fetchall()
    again = applying.apply(warehouse, p.proposal_id, user="bob")
    assert again.already_applied and again.model_dump(exclude={"already_applied"}) == first.model_dump(
        exclude={"already_applied"}
    )
    assert warehouse.execute("SELECT count(*) FROM node_mappings").fetchall() == rows
    assert latest_version(warehouse) == 2


def test_a_failed_check_part_way_rolls_everything_back(warehouse, monkeypatch):
    p = approved(warehouse, MERGE)
    real = applying.store_closure

    def corrupting(con, migration_id, base, new, edge):
        stored = real(con, migration_id, base, new, edge)
        con.execute("UPDATE node_mappings SET to_node = 'dog' WHERE from_node = 'lynx'")
        return stored

    monkeypatch.setattr(applying, "store_closure", corrupting)
    tables = ("tree_versions", "tree_nodes", "node_mappings", "applied_migrations", "relabel_queue", "audit_log")
    before = {t: warehouse.execute("SELECT count(*) FROM " + t).fetchall() for t in tables}
    version = data_version(warehouse)
    with pytest.raises(CheckFailed, match=r"conservation check.*cat: expected"):
        applying.apply(warehouse, p.proposal_id, user="carol")
    assert {t: warehouse.execute("SELECT count(*) FROM " + t).fetchall() for t in tables} == before
    assert data_version(warehouse) == version
    assert P.load(warehouse, p.proposal_id).status == "approved"
    monkeypatch.setattr(applying, "store_closure", real)
    assert applying.apply(warehouse, p.proposal_id, user="carol").to_version == 2


def test_replacement_check_refuses_active_references_to_replaced_nodes():
    con = build()
    con.execute("DELETE FROM tree_nodes")
    con.execute("DELETE FROM tree_versions")
    store_tree(
        con,
        parse_tree(
            "taxonomy: t\nnodes:\n  a: {}\n  b: {status: deprecated, replaced_by: a}\n  c: {consider: [b]}\n"
            "  cat: {}\n  lynx: {}\n  dog: {}\n  sparrow: {}\n  finch: {}\n"
        ),
        created_by="test",
    )
    p = approved(con, {"op": "rename", "node_id": "a", "title": "A"})
    with pytest.raises(CheckFailed, match=r"replacement check: .*node c -> b"):
        applying.apply(con, p.proposal_id, user="bob")
    assert latest_version(con) == 1


def test_split_queues_items_for_relabelling_and_exports_csv(warehouse, tmp_path):
    dog = warehouse.execute(
        "SELECT item_id, count(*) AS n FROM annotations WHERE node_id = 'dog' GROUP BY 1 ORDER BY 1"
    ).df()
    p = approved(warehouse, SPLIT)
    result = applying.apply(warehouse, p.proposal_id, user="carol")
    assert (result.items_to_relabel, result.annotations_to_relabel) == (len(dog), dog["n"].sum())
    out = tmp_path / "queue.csv"
    assert applying.export_relabel_queue(warehouse, p.proposal_id, out) == len(dog)
    queue = pd.read_csv(out, dtype={"item_id": str})
    assert queue["item_id"].tolist() == dog["item_id"].tolist()
    assert queue["annotations"].tolist() == dog["n"].tolist()
    assert set(queue["candidates"]) == {"small_dog|big_dog"}
    mapping = governance_versions.mapping_to_version(warehouse, 2).set_index(["tree_version", "node_id"])
    assert not mapping.loc[(1, "dog"), "automatic"] and mapping.loc[(1, "cat"), "automatic"]


def test_split_shares_from_a_relabelled_sample(warehouse):
    p = approved(warehouse, SPLIT)
    applying.apply(warehouse, p.proposal_id, user="carol")
    queued = warehouse.execute("SELECT DISTINCT item_id FROM relabel_queue ORDER BY 1").df()["item_id"].tolist()
    sample = queued[:20]
    relabels = pd.DataFrame(
        {
            "item_id": sample,
            "annotator_id": "expert",
            "node_id": ["small_dog" if k % 4 else "big_dog" for k in range(len(sample))],
        }
    )
    insert_answers(warehouse, relabels, 2, prefix="r")
    shares = applying.split_shares(warehouse, p.proposal_id).set_index("child")
    assert shares.loc["small_dog", "relabelled"] == 15 and shares.loc["big_dog", "relabelled"] == 5
    assert shares.loc["small_dog", "relabelled_share"] == pytest.approx(0.75)
    assert shares.loc["small_dog", "projected_items"] == pytest.approx(0.75 * len(queued))
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(15, 20, method="wilson")
    assert (shares.loc["small_dog", "share_low"], shares.loc["small_dog", "share_high"]) == (
        pytest.approx(low),
        pytest.approx(high),
    )


def test_split_shares_from_a_retrained_model(warehouse):
    p = approved(warehouse, SPLIT)
    applying.apply(warehouse, p.proposal_id, user="carol")
    queued = warehouse.execute("SELECT DISTINCT item_id FROM relabel_queue ORDER BY 1").df()["item_id"].tolist()
    small = [0.6 if k % 2 else 0.2 for k in range(len(queued))]
    big = [0.2] * len(queued)
    warehouse.register("_p", pd.DataFrame({"item_id": queued, "small": small, "big": big}))
    warehouse.execute(
        "INSERT INTO predictions SELECT item_id, 'clf', 'v2', 2, NULL, "
        "map(['small_dog', 'big_dog', 'cat'], [small, big, 1 - small - big]), NULL, 1 FROM _p"
    )
    shares = applying.split_shares(warehouse, p.proposal_id).set_index("child")
    mean_small, mean_big = sum(small) / len(small), 0.2
    assert shares.loc["small_dog", "predictions"] == len(queued)
    assert shares.loc["small_dog", "model_share"] == pytest.approx(mean_small / (mean_small + mean_big))
    assert shares.loc["big_dog", "model_share"] == pytest.approx(mean_big / (mean_small + mean_big))


def test_mappings_compose_along_the_version_chain(warehouse):
    p = approved(warehouse, MERGE)
    applying.apply(warehouse, p.proposal_id, user="carol")
    later = warehouse.execute("SELECT item_id, annotator_id, 'dog' AS node_id FROM annotations LIMIT 7").df()
    insert_answers(warehouse, later.assign(annotator_id="v2"), 2, prefix="v2_")
    q = approved(warehouse, {"op": "merge", "nodes": ["cat"], "into": "dog"})
    applying.apply(warehouse, q.proposal_id, user="carol")
    m3 = governance_versions.mapping_to_version(warehouse, 3).set_index(["tree_version", "node_id"])
    assert m3.loc[(1, "lynx"), "target_node_id"] == "dog"
    assert m3.loc[(1, "cat"), "target_node_id"] == "dog"
    assert m3.loc[(2, "cat"), "target_node_id"] == "dog"
    total = warehouse.execute("SELECT count(*) FROM annotations WHERE node_id IN ('cat', 'lynx', 'dog')").fetchall()
    frame = warehouse.execute("SELECT tree_version, node_id FROM annotations").df()
    landed = frame.merge(m3.reset_index(), on=["tree_version", "node_id"])
    assert (landed["target_node_id"] == "dog").sum() == total[0][0]
    # Newer annotations read as of an older version land on the same node id when it exists there.
    m1 = governance_versions.mapping_to_version(warehouse, 1).set_index(["tree_version", "node_id"])
    assert m1.loc[(2, "dog"), "target_node_id"] == "dog" and m1.loc[(2, "dog"), "automatic"]
