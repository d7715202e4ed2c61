"""The audit log: hashes against an independent recomputation, and every kind of tampering found at its seq."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.cli import main
from governance import audit
from queries.connection import connect, memory, transaction
from queries.errors import LabelgovError

GENESIS = "0" * 64
ACTORS = ["alice", "o'brien", 'quo"te', "back\\slash", "émile 😀", "a/b c"]


def reference_hash(seq: int, time: str, actor: str, role: str, action: str, payload_hash: str, prev: str) -> str:
    """The documented canonical form, computed without labelgov."""
    fields = {
        "seq": seq, "time": time, "actor": actor, "role": role, "action": action,
        "payload_hash": payload_hash, "prev_hash": prev,
    }
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def fill(con: duckdb.DuckDBPyConnection, n: int, start: int = 0) -> list[audit.AuditEvent]:
    with transaction(con):
        return [
            audit.append_event(
                con,
                actor=ACTORS[i % len(ACTORS)],
                role="steward",
                action="proposal.approve",
                payload={"proposal": i, "note": f"line\n{i} \u0001 ü", "nested": {"b": [1, 2.5, None], "a": True}},
            )
            for i in range(start, start + n)
        ]


def forge(con: duckdb.DuckDBPyConnection, seq: int, prev_hash: str, payload: str = '{"forged":true}') -> str:
    """Insert an event whose own hashes are correct, as someone who knows the scheme would."""
    time = "2026-01-01T00:00:00.000000Z"
    payload_hash = hashlib.sha256(payload.encode()).hexdigest()
    event_hash = reference_hash(seq, time, "mallory", "admin", "role.grant", payload_hash, prev_hash)
    con.execute(
        "INSERT INTO audit_log VALUES "
        "(?, TIMESTAMP '2026-01-01 00:00:00', 'mallory', 'admin', 'role.grant', ?, ?, ?, ?)",
        [seq, payload, payload_hash, prev_hash, event_hash],
    )
    return event_hash


def fault_of(con: duckdb.DuckDBPyConnection, checkpoints: list[audit.Checkpoint] | None = None) -> tuple[str, int]:
    result = audit.verify(con, checkpoints)
    assert not result.ok and result.fault is not None
    return result.fault.kind, result.fault.seq


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = memory()
    fill(con, 30)
    return con


def test_chain_of_many_events_verifies_and_matches_independent_hashes() -> None:
    con = memory()
    events = fill(con, 150)
    result = audit.verify(con)
    assert result.ok and result.events == 150 and result.head_seq == 150 and result.head_hash == events[-1].hash
    assert [e.seq for e in events] == list(range(1, 151))
    stored = [r[0] for r in con.execute("SELECT payload FROM audit_log ORDER BY seq").fetchall()]
    prev = GENESIS
    for event, stored_payload in zip(events, stored, strict=True):
        assert hashlib.sha256(stored_payload.encode()).hexdigest() == event.payload_hash
        assert json.loads(stored_payload) == event.payload
        assert event.prev_hash == prev
        time = f"{event.time.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z"
        assert event.hash == reference_hash(
            event.seq, time, event.actor, event.role, event.action, event.payload_hash, event.prev_hash
        )
        prev = event.hash
    assert "audit log verified: 150 events, head seq 150 hash " + events[-1].hash == result.message


NAMES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in [*range(32), 127]]),
    min_size=1,
    max_size=20,
).filter(lambda s: s == s.strip() and s.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actor=NAMES, role=NAMES, payload=st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3))
def test_sql_hash_matches_the_documented_canonical_form(
    shared: duckdb.DuckDBPyConnection, actor: str, role: str, payload: dict[str, str]
) -> None:
    with transaction(shared):
        event = audit.append_event(shared, actor=actor, role=role, action="ingest", payload=payload)
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert event.payload_hash == hashlib.sha256(body.encode()).hexdigest()
    time = f"{event.time:%Y-%m-%dT%H:%M:%S.%f}Z"
    assert event.hash == reference_hash(event.seq, time, actor, role, "ingest", event.payload_hash, event.prev_hash)


@pytest.fixture(scope="module")
def shared() -> duckdb.DuckDBPyConnection:
    return memory()


def test_payload_is_stored_as_canonical_json() -> None:
    con = memory()
    with transaction(con):
        audit.append_event(con, actor="a", role="admin", action="ingest", payload={"z": 1, "a": [datetime(2026, 1, 2)]})
    text = con.execute("SELECT payload FROM audit_log").fetchone()[0]
    assert text == '{"a":["2026-01-02T00:00:00"],"z":1}'


def test_edited_payload_is_a_hash_mismatch_at_its_seq(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""UPDATE audit_log SET payload = '{"proposal":99}' WHERE seq = 7""")
    assert fault_of(con) == ("altered", 7)


def test_edited_payload_with_recomputed_payload_hash_is_caught_by_the_event_hash(
    con: duckdb.DuckDBPyConnection,
) -> None:
    con.execute("""UPDATE audit_log SET payload = '{"proposal":99}', payload_hash = sha256('{"proposal":99}')
                   WHERE seq = 12""")
    assert fault_of(con) == ("altered", 12)


@pytest.mark.parametrize(
    "assignment",
    ["actor = 'mallory'", "role = 'admin'", "action = 'role.revoke'", "event_time = event_time + INTERVAL 1 SECOND"],
)
def test_edited_field_is_a_hash_mismatch(con: duckdb.DuckDBPyConnection, assignment: str) -> None:
    con.execute("UPDATE audit_log SET " + assignment + " WHERE seq = 9")
    assert fault_of(con) == ("altered", 9)


def test_deleted_event_is_named(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM audit_log WHERE seq IN (8, 9)")
    result = audit.verify(con)
    assert (result.fault.kind, result.fault.seq) == ("deleted", 8)
    assert "events 8..9 are missing" in result.message


def test_deleted_first_event_is_named(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM audit_log WHERE seq = 1")
    assert fault_of(con) == ("deleted", 1)


def test_deletion_hidden_by_renumbering_is_named(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM audit_log WHERE seq = 8")
    con.execute("UPDATE audit_log SET seq = seq - 1 WHERE seq > 8")
    assert fault_of(con) == ("deleted", 8)


def test_inserted_event_with_duplicate_seq(con: duckdb.DuckDBPyConnection) -> None:
    # The primary key stops a duplicate; someone rebuilding the table without it is not stopped.
    con.execute("CREATE TABLE copy AS SELECT * FROM audit_log")
    con.execute("DROP TABLE audit_log")
    con.execute("ALTER TABLE copy RENAME TO audit_log")
    prev = con.execute("SELECT hash FROM audit_log WHERE seq = 14").fetchone()[0]
    forge(con, 15, prev)
    assert fault_of(con) == ("inserted", 15)


def test_inserted_event_with_renumbered_tail(con: duckdb.DuckDBPyConnection) -> None:
    prev = con.execute("SELECT hash FROM audit_log WHERE seq = 10").fetchone()[0]
    con.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq > 10")
    forge(con, 11, prev)
    result = audit.verify(con)
    assert (result.fault.kind, result.fault.seq) == ("inserted", 11)
    assert "now at seq 12 was recorded as seq 11" in result.message


def test_inserted_event_with_broken_link(con: duckdb.DuckDBPyConnection) -> None:
    forge(con, 31, "f" * 64)
    assert fault_of(con) == ("inserted", 31)


def test_reordered_pair_is_named(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("UPDATE audit_log SET seq = CASE seq WHEN 5 THEN 6 ELSE 5 END WHERE seq IN (5, 6)")
    result = audit.verify(con)
    assert (result.fault.kind, result.fault.seq) == ("reordered", 5)
    assert "now at seq 5 was recorded as seq 6" in result.message


def test_first_of_several_faults_is_reported(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM audit_log WHERE seq = 20")
    con.execute("""UPDATE audit_log SET payload = '{}' WHERE seq = 4""")
    assert fault_of(con) == ("altered", 4)


def test_truncated_log_passes_alone_but_fails_against_a_checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    point = audit.checkpoint(con)
    assert (point.seq, point.hash) == (30, audit.verify(con).head_hash)
    con.execute("DELETE FROM audit_log WHERE seq > 24")
    assert audit.verify(con).ok  # a cut tail leaves a sound, shorter chain: only the checkpoint shows it
    result = audit.verify(con, [point])
    assert (result.fault.kind, result.fault.seq) == ("truncated", 25)
    assert "events 25..30 are gone" in result.message


def test_rewritten_chain_fails_against_an_earlier_checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    early = audit.checkpoint(con)
    fill(con, 10, start=30)
    late = audit.checkpoint(con)
    # Rewrite event 3 and recompute every later hash and link, as a careful forger would.
    rows = con.execute(
        "SELECT seq, strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ'), actor, role, action, payload_hash, prev_hash "
        "FROM audit_log ORDER BY seq"
    ).fetchall()
    prev = GENESIS
    for seq, time, actor, role, action, payload_hash, _ in rows:
        if seq == 3:
            payload_hash = hashlib.sha256(b'{"proposal":"forged"}').hexdigest()
            con.execute("""UPDATE audit_log SET payload = '{"proposal":"forged"}' WHERE seq = 3""")
        new_hash = reference_hash(seq, time, actor, role, action, payload_hash, prev)
        con.execute(
            "UPDATE audit_log SET payload_hash = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            [payload_hash, prev, new_hash, seq],
        )
        prev = new_hash
    assert audit.verify(con).ok
    assert fault_of(con, [late]) == ("rewritten", 40)
    assert fault_of(con, [late, early]) == ("rewritten", 30)


def test_log_that_grew_after_a_checkpoint_still_extends_it(con: duckdb.DuckDBPyConnection) -> None:
    point = audit.checkpoint(con)
    fill(con, 5, start=30)
    result = audit.verify(con, [point])
    assert result.ok and result.head_seq == 35


def test_checkpoint_refuses_a_tampered_log(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM audit_log WHERE seq = 3")
    with pytest.raises(LabelgovError, match="not checkpointing"):
        audit.checkpoint(con)


def test_rollback_leaves_no_event() -> None:
    con = memory()
    fill(con, 2)
    with pytest.raises(ZeroDivisionError), transaction(con):
        audit.append_event(con, actor="bob", role="steward", action="proposal.apply", payload={"p": 1})
        _ = 1 / 0
    assert con.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 2
    again = fill(con, 1, start=2)[0]
    assert again.seq == 3 and audit.verify(con).ok


def test_append_outside_a_transaction_is_refused() -> None:
    con = memory()
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit.append_event(con, actor="bob", role="steward", action="proposal.apply", payload={})
    assert con.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 0


def test_concurrent_appenders_cannot_fork_the_chain(tmp_path: Path) -> None:
    first = duckdb.connect(str(tmp_path / "w.duckdb"))
    from queries.schema import migrate

    migrate(first, "w")
    second = first.cursor()
    first.execute("BEGIN TRANSACTION")
    second.execute("BEGIN TRANSACTION")
    audit.append_event(first, actor="a", role="admin", action="ingest", payload={})
    audit.append_event(second, actor="b", role="admin", action="ingest", payload={})
    first.execute("COMMIT")
    with pytest.raises(duckdb.Error):
        second.execute("COMMIT")
    assert audit.verify(first).events == 1 and audit.verify(first).ok


@pytest.mark.parametrize(
    ("field", "value"),
    [("actor", ""), ("actor", "bad\nname"), ("actor", " padded"), ("role", "x\x1f"), ("action", "Approve Now")],
)
def test_bad_names_are_refused_with_a_message(field: str, value: str) -> None:
    con = memory()
    fields = {"actor": "bob", "role": "steward", "action": "proposal.apply"} | {field: value}
    with pytest.raises(LabelgovError, match=f"audit event {field}"), transaction(con):
        audit.append_event(con, payload={}, **fields)


def test_export_jsonl_and_csv_round_trip(tmp_path: Path) -> None:
    con = memory()
    events = fill(con, 12)
    assert audit.export(con, tmp_path / "log.jsonl", "jsonl") == 12
    lines = (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()
    exported = [json.loads(line) for line in lines]
    assert [e["seq"] for e in exported] == list(range(1, 13))
    for line, record, event in zip(lines, exported, events, strict=True):
        assert record["payload"] == event.payload and record["hash"] == event.hash
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert record["hash"] == reference_hash(
            record["seq"], record["time"], record["actor"], record["role"], record["action"],
            record["payload_hash"], record["prev_hash"],
        )
    assert audit.export(con, tmp_path / "log.csv", "csv") == 12
    with open(tmp_path / "log.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["seq"]) for r in rows] == list(range(1, 13))
    assert [json.loads(r["payload"]) for r in rows] == [e.payload for e in events]
    assert all(hashlib.sha256(r["payload"].encode()).hexdigest() == r["payload_hash"] for r in rows)


def test_checkpoint_file_round_trip_and_bad_file(tmp_path: Path) -> None:
    con = memory()
    fill(con, 3)
    point = audit.checkpoint(con)
    audit.write_checkpoint(point, tmp_path / "cp.json")
    assert audit.read_checkpoint(tmp_path / "cp.json") == point
    (tmp_path / "bad.json").write_text('{"seq": 3, "hash": "xyz", "time": "2026-01-01T00:00:00Z"}')
    with pytest.raises(LabelgovError, match="is not an audit checkpoint"):
        audit.read_checkpoint(tmp_path / "bad.json")
    with pytest.raises(LabelgovError, match="cannot read checkpoint"):
        audit.read_checkpoint(tmp_path / "missing.json")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_checkpoint_export_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "w.duckdb")
    with connect(db) as con:
        events = fill(con, 6)
    code, out, _ = run(["audit", "verify", "--db", db], capsys)
    assert code == 0 and out.strip() == f"audit log verified: 6 events, head seq 6 hash {events[-1].hash}"

    outside = tmp_path / "outside"
    outside.mkdir()
    code, out, _ = run(["audit", "checkpoint", "--out", str(outside / "cp.json"), "--db", db], capsys)
    assert code == 0 and audit.read_checkpoint(outside / "cp.json").seq == 6

    code, out, _ = run(["audit", "export", str(tmp_path / "e.csv"), "--format", "csv", "--db", db], capsys)
    assert code == 0 and "exported 6 events" in out
    assert len((tmp_path / "e.csv").read_text(encoding="utf-8").splitlines()) >= 7

    code, out, _ = run(["audit", "show", "--limit", "2", "--db", db], capsys)
    shown = out.strip().splitlines()
    assert code == 0 and len(shown) == 2 and shown[0].split()[0] == "5" and shown[1].split()[0] == "6"

    with connect(db) as con:
        con.execute("DELETE FROM audit_log WHERE seq = 6")
    code, out, err = run(["audit", "verify", "--db", db], capsys)
    assert code == 0  # the cut tail is invisible without the checkpoint
    code, out, err = run(["audit", "verify", "--db", db, "--checkpoint", str(outside / "cp.json")], capsys)
    assert code == 1 and "FAILED verification at seq 6 (truncated)" in err, (out, err)

    with connect(db) as con:
        con.execute("""UPDATE audit_log SET payload = '{}' WHERE seq = 2""")
    code, _, err = run(["audit", "verify", "--db", db], capsys)
    assert code == 1 and "at seq 2 (altered)" in err

    code, _, err = run(["audit", "verify", "--db", db, "--checkpoint", str(tmp_path / "nope.json")], capsys)
    assert code == 2 and "cannot read checkpoint" in err
