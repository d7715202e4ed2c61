"""SIGKILL in the middle of `labelgov ingest`, `labelgov refresh` and `labelgov proposal apply`.

Each command runs once uninterrupted (its end state is the reference and its duration sets the kill
window), then again on fresh copies of the same warehouse, killed at seeded random moments of its work.
After every kill the warehouse must open read-only (replaying any WAL), hold the write entirely or not
at all (counted against the input file, the batch record, the migration record and the audit log), keep
derived tables that are readable and either fresh or marked stale, and keep a verifying audit chain.
Running the same command again must then reach the reference end state exactly once.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from dashboard.cli import root
from governance import audit
from governance import proposals as P
from governance.apply import verify_migration
from governance.roles import grant
from queries import contested, overview
from queries.connection import connect, data_version
from queries.filters import Filters
from queries.ingest import file_sha256, ingest_file
from queries.refresh import is_stale, refresh, refreshed_version
from queries.report import headline
from tests.conftest import cached_demo
from tests.crash_harness import Tally, command, delay_in_slice, kill_after, working_time

INGEST_ROWS = 320_000  # just over 25 MB of CSV: ingest reports its phases, and takes a second or two
REFRESH_INGEST_ROWS = 20_000
BAD_LABEL_EVERY = 5_000
KILLS = {"ingest": 6, "refresh": 6, "apply": 4}
# Kills that find the command already finished are drawn again, up to this many times the planned count.
MAX_TRIES_FACTOR = 4
MERGE = {
    "title": "Merge scam and phishing",
    "rationale": "Annotators cannot tell them apart.",
    "operations": [{"op": "merge", "nodes": ["spam_phishing"], "into": "spam_scam"}],
}
BATCH_TABLES = ("annotations", "items", "annotators", "quarantine")


# --- warehouses and files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A refreshed 3,000-item demo warehouse (shared, copy before writing)."""
    return cached_demo(tmp_path_factory, 3000)


def write_answers(demo: Path, path: Path, rows: int, prefix: str) -> None:
    """Answers on new items by new annotators with the demo tree's leaves; every 5000th label is unknown."""
    with duckdb.connect(str(demo), read_only=True) as con:
        leaves = [r[0] for r in con.execute(
            "SELECT node_id FROM tree_nodes WHERE is_leaf AND tree_version = 1 ORDER BY node_id"
        ).fetchall()]
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT $p || r AS annotation_id, $p || 'item-' || (r // 5) AS item_id, "
            "$p || 'w-' || (hash(r) % 200) AS annotator_id, "
            "CASE WHEN r % $bad = 17 THEN 'no_such_label' "
            "ELSE $leaves[CAST(1 + hash(r * 7) % len($leaves) AS BIGINT)] END AS label, "
            "TIMESTAMP '2026-06-01' + to_seconds(r) AS created_at, 10 + r % 50 AS duration_s, 0.05 AS cost "
            "FROM range($n) t(r)) TO '" + str(path).replace("'", "''") + "' (HEADER)",
            {"p": prefix, "leaves": leaves, "bad": BAD_LABEL_EVERY, "n": rows},
        )


def file_truth(demo: Path, path: Path) -> dict[str, int]:
    """What the file should add, worked out from the file and the tree alone (not by ingest)."""
    with duckdb.connect(str(demo), read_only=True) as con:
        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE n.node_id IS NOT NULL), "
            "count(DISTINCT f.item_id) FILTER (WHERE n.node_id IS NOT NULL), "
            "count(DISTINCT f.annotator_id) FILTER (WHERE n.node_id IS NOT NULL) "
            "FROM read_csv(?) f LEFT JOIN tree_nodes n ON n.node_id = f.label AND n.tree_version = 1",
            [str(path)],
        ).fetchall()[0]
    rows, accepted, items, annotators = (int(v) for v in row)
    return {"rows": rows, "annotations": accepted, "quarantine": rows - accepted, "items": items,
            "annotators": annotators}


def fresh_copy(source: Path, folder: Path, name: str) -> Path:
    db = folder / (name + ".duckdb")
    shutil.copy(source, db)
    return db


# --- what every killed warehouse must satisfy -------------------------------------------------------


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: con.execute("SELECT count(*) FROM " + t).fetchall()[0][0] for t in (
        *BATCH_TABLES, "ingest_batches", "audit_log", "tree_versions", "applied_migrations", "node_mappings",
        "relabel_queue", "d_answers")}


def rounded(value: Any) -> Any:
    """Derived figures compared across runs: floats to 9 significant digits, keys and lists kept."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items() if k != "data_version"}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def pages(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The dashboard's headline figures, overview tiles and contested list all read the derived tables."""
    figures = headline(con, Filters())
    tiles = overview.overview(con, Filters()).tiles
    assert tiles and contested.contested_items(con, Filters(), limit=20).shape[0] > 0
    return rounded(json.loads(json.dumps(figures, default=str)))


def common_checks(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Audit chain sound, no row outside a recorded batch, pages readable; returns the page figures."""
    result = audit.verify(con)
    assert result.ok, f"audit chain broken: {result.message}"
    for table in BATCH_TABLES:
        orphans = con.execute(
            "SELECT count(*) FROM " + table + " t ANTI JOIN ingest_batches b USING (batch_id)"
        ).fetchall()[0][0]
        assert orphans == 0, f"{orphans} {table} rows belong to no recorded batch"
    return pages(con)


def snapshot(db: Path) -> dict[str, Any]:
    with connect(db, read_only=True) as con:
        return {"counts": table_counts(con), "data_version": data_version(con), "refreshed": refreshed_version(con),
                "stale": is_stale(con), "pages": pages(con)}


def run_again(*args: str) -> str:
    """The same command once more, to completion, through the command line's own code path."""
    done = CliRunner().invoke(root, list(args), env={"LABELGOV_USER": "crash-test"})
    assert done.exception is None, f"re-run of {args} failed: {done.output} {done.exception!r}"
    assert done.exit_code == 0, done.output
    return done.output


def crash_loop(
    tally: Tally,
    source: Path,
    folder: Path,
    args: Callable[[Path], list[str]],
    seed: int,
    check_killed: Callable[[Path], bool],
    check_rerun: Callable[[Path, str, bool], None],
) -> None:
    """Measure the command once on its own copy, then kill it on fresh copies across that working time."""
    reference = fresh_copy(source, folder, tally.name + "-reference")
    span = working_time(command(*args(reference)), reference)
    planned, rng, i = KILLS[tally.name], random.Random(seed), 0
    while tally.mid_run < planned and tally.tried < MAX_TRIES_FACTOR * planned:
        delay = delay_in_slice(rng, tally.mid_run, planned, span)
        db = fresh_copy(source, folder, f"{tally.name}-{i}")
        point = kill_after(command(*args(db)), db, delay)
        committed, failure = False, None
        try:
            committed = check_killed(db)
            check_rerun(db, run_again(*args(db)), committed)
        except AssertionError as exc:
            failure = str(exc).splitlines()[0]
        tally.add(point, committed, failure)
        db.unlink()
        i += 1
        if not point.mid_run:
            # This run finished sooner than the measured one (the machine got less busy): time it again, so
            # that later draws fall inside its present working time rather than creeping down towards it.
            again = fresh_copy(source, folder, f"{tally.name}-measure-{i}")
            span = min(delay, working_time(command(*args(again)), again))
            again.unlink()
    print(f"{tally.summary()} (working time {span:.2f} s)")
    assert not tally.failures, tally.summary() + "\n" + "\n".join(tally.failures)
    assert tally.mid_run >= planned, f"too few kills landed mid-run: {tally.summary()}"


# --- ingest -----------------------------------------------------------------------------------------


def test_ingest_killed_anywhere_writes_all_or_nothing_and_reruns_once(demo: Path, tmp_path: Path) -> None:
    answers = tmp_path / "answers.csv"
    write_answers(demo, answers, INGEST_ROWS, "crash-")
    truth = file_truth(demo, answers)
    sha = file_sha256(answers)
    assert truth["quarantine"] == INGEST_ROWS // BAD_LABEL_EVERY  # the planted bad rows, and nothing else
    before = snapshot(demo)
    assert not before["stale"]

    def batch_state(db: Path) -> bool:
        with connect(db, read_only=True) as con:
            batches = con.execute(
                "SELECT batch_id, rows_read, rows_accepted, rows_quarantined FROM ingest_batches WHERE sha256 = ?",
                [sha],
            ).fetchall()
            assert len(batches) <= 1, f"file ingested {len(batches)} times"
            done = len(batches) == 1
            counts = table_counts(con)
            for table in BATCH_TABLES:
                added = counts[table] - before["counts"][table]
                assert added == (truth[table] if done else 0), f"{table}: {added} rows added, batch present={done}"
            if done:
                batch, read, accepted, quarantined = batches[0]
                assert (read, accepted, quarantined) == (truth["rows"], truth["annotations"], truth["quarantine"])
                matched = con.execute(
                    "SELECT count(*) FROM annotations a SEMI JOIN read_csv(?) f USING (annotation_id) "
                    "WHERE a.batch_id = ?", [str(answers), batch]
                ).fetchall()[0][0]
                assert matched == truth["annotations"], f"only {matched} stored answers are rows of the file"
            events = con.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'ingest.annotations' AND payload->>'sha256' = ?",
                [sha],
            ).fetchall()[0][0]
            assert events == len(batches), f"{events} ingest audit events for {len(batches)} batches"
            assert data_version(con) == before["data_version"] + done
            assert is_stale(con) == done, f"stale={is_stale(con)} with the batch present={done}"
            assert counts["d_answers"] == before["counts"]["d_answers"], "derived tables changed by ingest"
            common_checks(con)
        return done

    def after_rerun(db: Path, output: str, committed: bool) -> None:
        assert ("already ingested" if committed else " written") in output, output
        assert batch_state(db), "re-run did not leave the batch"

    tally = Tally("ingest")
    phases: Counter[str] = Counter()

    def killed(db: Path) -> bool:
        log = db.with_name(db.stem + "-killed.err").read_text(errors="replace").strip().splitlines()
        finished = db.with_name(db.stem + "-killed.out").read_text(errors="replace").strip()
        phase = log[-1].removeprefix("labelgov: ").split(" ")[0] if log else "opening"
        phases["finished" if finished else phase] += 1
        return batch_state(db)

    crash_loop(tally, demo, tmp_path, lambda db: ["ingest", "annotations", str(answers), "--db", str(db)], 61,
               killed, after_rerun)
    print(f"crash ingest: phase the kill landed in: {dict(phases)}")


# --- refresh ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stale_demo(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo with one more batch ingested since its last refresh, so refresh has work to do."""
    folder = tmp_path_factory.mktemp("stale")
    answers = folder / "more.csv"
    write_answers(demo, answers, REFRESH_INGEST_ROWS, "more-")
    db = fresh_copy(demo, folder, "stale")
    with connect(db) as con:
        ingest_file(con, "annotations", answers, actor="crash-test")
    return db


def test_refresh_killed_anywhere_keeps_old_or_new_tables_and_reruns(stale_demo: Path, tmp_path: Path) -> None:
    before = snapshot(stale_demo)
    assert before["stale"] and before["counts"]["d_answers"] < before["counts"]["annotations"]
    reference: dict[str, Any] = {}

    def refreshed(db: Path, earlier: int) -> bool:
        """``earlier``: refreshes that had already committed before this one (they leave an event each)."""
        with connect(db, read_only=True) as con:
            counts = table_counts(con)
            done = refreshed_version(con) == data_version(con)
            assert data_version(con) == before["data_version"], "refresh changed the data version"
            assert is_stale(con) != done
            assert refreshed_version(con) == (before["data_version"] if done else before["refreshed"])
            expected = counts["annotations"] if done else before["counts"]["d_answers"]
            assert counts["d_answers"] == expected, f"d_answers has {counts['d_answers']} rows, expected {expected}"
            events = counts["audit_log"] - before["counts"]["audit_log"]
            assert events == earlier + done, f"{events} refresh audit events, expected {earlier + done}"
            figures = common_checks(con)
        if not done:
            assert figures == before["pages"], "an unfinished refresh changed what the pages show"
        elif reference:
            assert figures == reference["pages"], "a finished refresh shows other figures than the reference"
        return done

    def after_rerun(db: Path, output: str, committed: bool) -> None:
        assert "refreshed data version" in output, output
        assert refreshed(db, earlier=committed), "re-run left the derived tables stale"

    def killed(db: Path) -> bool:
        if not reference:
            reference.update(snapshot(tmp_path / "refresh-reference.duckdb"))
            assert not reference["stale"], "the uninterrupted refresh left the tables stale"
        return refreshed(db, earlier=0)

    crash_loop(Tally("refresh"), stale_demo, tmp_path, lambda db: ["refresh", "--db", str(db)], 62, killed,
               after_rerun)


# --- proposal apply ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def approved_demo(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The demo with a merge proposed by pat and approved by a second person, steward sam; then refreshed."""
    db = fresh_copy(demo, tmp_path_factory.mktemp("approved"), "approved")
    with connect(db) as con:
        grant(con, admin_user="alice", user="alice", role="admin")
        grant(con, admin_user="alice", user="sam", role="steward")
        grant(con, admin_user="alice", user="pat", role="proposer")
        proposal = P.create(con, P.ProposalFile.model_validate(MERGE), user="pat")
        proposal = P.submit(con, proposal.proposal_id, user="pat")
        proposal = P.approve(con, proposal.proposal_id, user="sam", ack_report=proposal.report_hash)
        assert proposal.status == "approved"
        refresh(con)
    return db, proposal.proposal_id


def test_apply_killed_anywhere_applies_all_or_nothing_and_exactly_once(
    approved_demo: tuple[Path, int], tmp_path: Path
) -> None:
    source, proposal_id = approved_demo
    before = snapshot(source)
    assert not before["stale"]
    reference: dict[str, str] = {}

    def applied(db: Path) -> bool:
        with connect(db, read_only=True) as con:
            status = P.load(con, proposal_id).status
            counts = table_counts(con)
            done = status == "applied"
            assert status in ("approved", "applied"), f"proposal left {status}"
            for table in ("tree_versions", "applied_migrations"):
                added = counts[table] - before["counts"][table]
                assert added == done, f"{added} new {table} rows for a proposal that is {status}"
            assert (counts["node_mappings"] > before["counts"]["node_mappings"]) == done
            actions = dict(con.execute(
                "SELECT action, count(*) FROM audit_log WHERE action IN ('proposal.apply', 'tree.version') GROUP BY 1"
            ).fetchall())
            assert actions == ({"proposal.apply": 1, "tree.version": 1} if done else {}), f"audit events {actions}"
            assert data_version(con) == before["data_version"] + done
            assert is_stale(con) == done, f"stale={is_stale(con)} with the proposal applied={done}"
            if done:
                assert verify_migration(con, proposal_id), "stored mapping does not match its checksum"
                checksum = con.execute(
                    "SELECT checksum FROM applied_migrations WHERE proposal_id = ?", [proposal_id]
                ).fetchall()[0][0]
                expected = reference.setdefault("checksum", checksum)
                assert checksum == expected, "the migration differs from the uninterrupted one"
            common_checks(con)
        return done

    def after_rerun(db: Path, output: str, committed: bool) -> None:
        assert ("already applied" if committed else f"applied proposal {proposal_id}") in output, output
        assert applied(db), "re-run did not apply the proposal"

    def killed(db: Path) -> bool:
        if not reference:
            assert applied(tmp_path / "apply-reference.duckdb"), "the uninterrupted apply did not apply"
        return applied(db)

    crash_loop(Tally("apply"), source, tmp_path,
               lambda db: ["proposal", "apply", str(proposal_id), "--as", "sam", "--db", str(db)], 63,
               killed, after_rerun)
