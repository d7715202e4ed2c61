"""Storage of the audit log and the roles table: every SQL statement that touches them.

The event hash is computed by DuckDB from one fixed SQL expression, used both when an event is written
and when the chain is verified, so writer and verifier cannot drift apart. The expression builds the
canonical JSON of the hashed fields (keys sorted, no whitespace, UTC time with microseconds)::

    {"action":…,"actor":…,"payload_hash":…,"prev_hash":…,"role":…,"seq":N,"time":"YYYY-MM-DDTHH:MM:SS.ffffffZ"}

which is byte for byte what ``json.dumps(fields, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` gives for names without control characters (the governance layer refuses those),
so an auditor can recompute every hash from an export without labelgov. Verification runs as one
vectorised query with window functions; Python only looks at the first row that fails.

The expression is kept in code rather than as a macro in the warehouse on purpose: the verifier must
not trust logic stored in the very file it is checking.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from queries.errors import LabelgovError

GENESIS_HASH = "0" * 64

# Fixed SQL fragment (no user input): the SHA-256 of an event's canonical JSON, over columns named as in
# audit_log. Concatenated into statements below with `+`.
EVENT_HASH_SQL = (
    "sha256(json_object('action', action, 'actor', actor, 'payload_hash', payload_hash, "
    "'prev_hash', prev_hash, 'role', role, 'seq', seq, "
    "'time', strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ')))"
)

EVENT_COLUMNS = "seq, event_time, actor, role, action, payload, payload_hash, prev_hash, hash"

_APPEND_SQL = (
    "INSERT INTO audit_log BY NAME "  # noqa: S608 - fixed fragments, values bound as ?
    "WITH last AS (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1), "
    "fields AS (SELECT coalesce(max(last.seq), 0) + 1 AS seq, coalesce(max(last.hash), ?) AS prev_hash, "
    "?::TIMESTAMP AS event_time, ? AS actor, ? AS role, ? AS action, ?::JSON AS payload FROM last), "
    "hashed AS (SELECT *, sha256(payload) AS payload_hash FROM fields) "
    "SELECT *, " + EVENT_HASH_SQL + " AS hash FROM hashed "
    "RETURNING " + EVENT_COLUMNS
)

# Rows in seq order (ties by storage order, so a duplicate seq shows as the later copy) with the checks
# each row must pass; the first failing row is the first fault in the chain.
_FIRST_FAULT_SQL = (
    "WITH ordered AS ("  # noqa: S608 - fixed fragments, values bound as ?
    " SELECT rowid AS row_id, seq, prev_hash, hash,"
    " coalesce(sha256(payload) = payload_hash, false) AS payload_ok,"
    " coalesce(" + EVENT_HASH_SQL + " = hash, false) AS hash_ok,"
    " coalesce(lag(seq) OVER w, 0) AS before_seq, coalesce(lag(hash) OVER w, ?) AS before_hash,"
    " row_number() OVER w AS position"
    " FROM audit_log WINDOW w AS (ORDER BY seq, rowid)), "
    "checked AS (SELECT *, coalesce(prev_hash = before_hash, false) AS link_ok,"
    " coalesce(seq = before_seq + 1, false) AS seq_ok FROM ordered) "
    "SELECT row_id, seq, before_seq, payload_ok, hash_ok, link_ok, prev_hash FROM checked "
    "WHERE NOT (payload_ok AND hash_ok AND link_ok AND seq_ok) ORDER BY position LIMIT 1"
)

# The seq under which an intact row was originally hashed: the seq column is replaced by candidates.
_ORIGINAL_SEQ_SQL = (
    "SELECT candidate.seq FROM (SELECT * EXCLUDE (seq) FROM audit_log WHERE rowid = ?) AS row_, "  # noqa: S608 - fixed
    "range(1, ?) AS candidate(seq) WHERE " + EVENT_HASH_SQL + " = row_.hash ORDER BY candidate.seq LIMIT 1"
)


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
    """The first row, with the result fetched to the end as DuckDB 2 requires before the next statement."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def require_tables(con: duckdb.DuckDBPyConnection) -> None:
    """A read-only handle cannot migrate, so a warehouse from before the audit log gets a clear message."""
    row = _one(con, "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('audit_log', 'roles')")
    if not row or row[0] < 2:
        raise LabelgovError(
            "this warehouse predates the audit log and roles tables: open it once with a writing command "
            "(for example `labelgov roles grant YOU admin`) to upgrade it"
        )


def in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """Outside an explicit transaction every statement gets a new transaction id."""
    first = _one(con, "SELECT txid_current()")
    second = _one(con, "SELECT txid_current()")
    return first == second


def append(
    con: duckdb.DuckDBPyConnection, *, time: datetime, actor: str, role: str, action: str, payload_json: str
) -> tuple[Any, ...]:
    """One statement reads the head and writes the next event, so seq and prev_hash cannot be stale."""
    row = _one(con, _APPEND_SQL, [GENESIS_HASH, time, actor, role, action, payload_json])
    assert row is not None
    return row


def recent(con: duckdb.DuckDBPyConnection, limit: int) -> list[tuple[Any, ...]]:
    """The newest ``limit`` events, oldest first."""
    return con.execute(
        "SELECT * FROM (SELECT " + EVENT_COLUMNS + " FROM audit_log ORDER BY seq DESC LIMIT ?) "  # noqa: S608 - fixed column list
        "ORDER BY seq",
        [limit],
    ).fetchall()


def head(con: duckdb.DuckDBPyConnection) -> tuple[int, int, str]:
    """(events, head seq, head hash); an empty log has head 0 and the genesis hash."""
    row = _one(
        con, "SELECT count(*), coalesce(max(seq), 0), coalesce(arg_max(hash, seq), ?) FROM audit_log", [GENESIS_HASH]
    )
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2])


def hashes_at(con: duckdb.DuckDBPyConnection, seq: int) -> list[str]:
    return [r[0] for r in con.execute("SELECT hash FROM audit_log WHERE seq = ? ORDER BY rowid", [seq]).fetchall()]


def first_fault(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The first row, in seq order, that fails a payload, hash, seq or link check; None for a sound chain."""
    cursor = con.execute(_FIRST_FAULT_SQL, [GENESIS_HASH])
    rows = cursor.fetchall()
    return dict(zip([d[0] for d in cursor.description], rows[0], strict=True)) if rows else None


def original_seq(con: duckdb.DuckDBPyConnection, row_id: int, upper: int) -> int | None:
    """The seq in 1..upper-1 under which the row's stored hash was computed, if any."""
    row = _one(con, _ORIGINAL_SEQ_SQL, [row_id, upper])
    return int(row[0]) if row else None


def hash_appears_after(con: duckdb.DuckDBPyConnection, event_hash: str, seq: int) -> bool:
    """Whether an event with this hash sits later in the log than ``seq``."""
    row = _one(con, "SELECT count(*) FROM audit_log WHERE hash = ? AND seq > ?", [event_hash, seq])
    return bool(row and row[0])


def events_table(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Every event in seq order, for export as a table; the payload stays canonical JSON text."""
    return con.sql(
        "SELECT seq, strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ') AS time, actor, role, action, "
        "payload::VARCHAR AS payload, payload_hash, prev_hash, hash FROM audit_log ORDER BY seq"
    ).to_arrow_table()


def events_as_json_lines(con: duckdb.DuckDBPyConnection) -> list[str]:
    """One JSON object per event with the payload embedded as an object, keys sorted."""
    rows = con.execute(
        "SELECT json_object('action', action, 'actor', actor, 'hash', hash, 'payload', payload, "
        "'payload_hash', payload_hash, 'prev_hash', prev_hash, 'role', role, 'seq', seq, "
        "'time', strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ')) FROM audit_log ORDER BY seq"
    ).fetchall()
    return [r[0] for r in rows]


# --- roles -------------------------------------------------------------------------------------------


def role_of(con: duckdb.DuckDBPyConnection, user: str) -> str | None:
    row = _one(con, "SELECT role FROM roles WHERE user_id = ?", [user])
    return str(row[0]) if row else None


def role_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in con.execute("SELECT role, count(*) FROM roles GROUP BY role").fetchall()}


def set_role(con: duckdb.DuckDBPyConnection, *, user: str, role: str, granted_by: str, granted_at: datetime) -> None:
    con.execute("INSERT OR REPLACE INTO roles VALUES (?, ?, ?, ?)", [user, role, granted_by, granted_at])


def delete_role(con: duckdb.DuckDBPyConnection, user: str) -> None:
    con.execute("DELETE FROM roles WHERE user_id = ?", [user])


def list_roles(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute("SELECT user_id, role, granted_by, granted_at FROM roles ORDER BY user_id").fetchall()
