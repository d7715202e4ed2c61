"""The README's governance walk-through, command by command, on a demo warehouse.

A proposer merges two siblings that annotators confuse; the impact report shows what it touches and
what it does to agreement; a second person, a steward, approves it with the report's hash; applying it
creates tree v2 with every historical answer mapped; the analytics can then be read as of either
version, and the numbers agree with what the report promised.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from queries.connection import connect

MERGE = """\
title: Merge scam and phishing
rationale: Annotators cannot tell scam from phishing, and both get the same enforcement.
operations:
  - op: merge
    nodes: [spam_phishing]
    into: spam_scam
"""


def labelgov(db: Path, *args: str, ok: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", *args, "--db", str(db)], capture_output=True, text=True
    )
    assert "Traceback" not in done.stderr
    if ok:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0
    return done.stdout + done.stderr


def test_merge_proposal_from_draft_to_analytics_as_of_both_versions(small_demo: Path, tmp_path: Path) -> None:
    db = tmp_path / "scenario.duckdb"
    shutil.copy(small_demo, db)
    proposal_file = tmp_path / "merge.yaml"
    proposal_file.write_text(MERGE)

    labelgov(db, "roles", "grant", "alice", "admin", "--as", "alice")
    labelgov(db, "roles", "grant", "sam", "steward", "--as", "alice")
    labelgov(db, "roles", "grant", "pat", "proposer", "--as", "alice")
    created = labelgov(db, "propose", str(proposal_file), "--as", "pat")
    proposal_id = re.search(r"proposal (\d+) created", created).group(1)
    labelgov(db, "proposal", "submit", proposal_id, "--as", "pat")
    shown = labelgov(db, "proposal", "show", proposal_id)
    report_hash = re.search(r"impact report ([0-9a-f]{64})", shown).group(1)
    before, after = map(float, re.search(r"alpha overall ([\d.]+) -> ([\d.]+)", shown).groups())
    assert after > before, "merging siblings that annotators confuse should raise agreement"

    # Four eyes: the proposer cannot approve, whatever they pass.
    refused = labelgov(db, "proposal", "approve", proposal_id, "--as", "pat", "--ack-report", report_hash, ok=False)
    assert "refused by rule" in refused
    labelgov(db, "proposal", "approve", proposal_id, "--as", "sam", "--ack-report", report_hash)
    labelgov(db, "proposal", "apply", proposal_id, "--as", "sam")
    assert "2" in labelgov(db, "tree", "versions")

    labelgov(db, "refresh")
    now = json.loads(labelgov(db, "report", "--json"))
    with connect(db, read_only=True) as con:
        merged_away = con.execute("SELECT count(*) FROM d_answers WHERE node_id = 'spam_phishing'").fetchall()[0][0]
        merged = con.execute("SELECT count(*) FROM d_answers WHERE node_id = 'spam_scam'").fetchall()[0][0]
        raw, both = con.execute(
            "SELECT count(*) FILTER (WHERE node_id = 'spam_phishing'), count(*) FROM annotations "
            "WHERE node_id IN ('spam_phishing', 'spam_scam')"
        ).fetchall()[0]
    assert merged_away == 0 and raw > 0 and merged == both, "every historical answer maps to the merged node"
    assert now["alpha"] == pytest.approx(after, abs=5e-4)

    labelgov(db, "refresh", "--as-of", "1")
    then = json.loads(labelgov(db, "report", "--json"))
    assert then["alpha"] == pytest.approx(before, abs=5e-4)
    with connect(db, read_only=True) as con:
        kept = con.execute("SELECT count(*) FROM d_answers WHERE node_id = 'spam_phishing'").fetchall()[0][0]
    assert kept == raw, "as of version 1 the original node is back"

    assert "verified" in labelgov(db, "audit", "verify")
    actions = labelgov(db, "audit", "show", "--limit", "50")
    for action in ("proposal.propose", "proposal.submit", "proposal.approve", "proposal.apply", "refresh"):
        assert action in actions
