"""Storage of change proposals, their reviews and history, applied migrations and the relabelling queue.

Callers own the transaction: a lifecycle step writes its status change, its history row and its audit
event together or not at all.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

from queries.errors import LabelgovError
from queries.governance_versions import first_row

OPEN_STATUSES = ("draft", "submitted", "changes_requested", "approved", "stale")


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> dict[str, Any] | None:
    frame = con.execute(sql, params).df()
    if frame.empty:
        return None
    record = frame.iloc[0].to_dict()
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}


def next_proposal_id(con: duckdb.DuckDBPyConnection) -> int:
    row = first_row(con.execute("SELECT coalesce(max(proposal_id), 0) + 1 FROM proposals"))
    return int(row[0]) if row else 1


def insert_proposal(con: duckdb.DuckDBPyConnection, proposal_id: int, proposer: str, status: str) -> None:
    con.execute(
        "INSERT INTO proposals (proposal_id, title, rationale, base_version, proposer, status, compat_class, "
        "proposal_hash, target_hash, created_at, updated_at) "
        "VALUES (?, '', '', 0, ?, ?, '', '', '', now()::TIMESTAMP, now()::TIMESTAMP)",
        [proposal_id, proposer, status],
    )


def write_content(
    con: duckdb.DuckDBPyConnection,
    proposal_id: int,
    *,
    title: str,
    rationale: str,
    base_version: int,
    compat_class: str,
    proposal_hash: str,
    target_hash: str,
    source_text: str | None,
    operations: pd.DataFrame,
) -> None:
    """Replace what the proposal says; ``operations`` has columns seq, op, compat_class, spec (JSON text)."""
    con.execute(
        "UPDATE proposals SET title = ?, rationale = ?, base_version = ?, compat_class = ?, proposal_hash = ?, "
        "target_hash = ?, source_text = ?, report = NULL, report_hash = NULL, updated_at = now()::TIMESTAMP "
        "WHERE proposal_id = ?",
        [title, rationale, base_version, compat_class, proposal_hash, target_hash, source_text, proposal_id],
    )
    con.execute("DELETE FROM proposal_operations WHERE proposal_id = ?", [proposal_id])
    con.register("_gov_ops", operations)
    try:
        con.execute(
            "INSERT INTO proposal_operations SELECT ?, seq, op, compat_class, spec::JSON FROM _gov_ops",
            [proposal_id],
        )
    finally:
        con.unregister("_gov_ops")


def write_report(con: duckdb.DuckDBPyConnection, proposal_id: int, report: dict[str, Any], report_hash: str) -> None:
    con.execute(
        "UPDATE proposals SET report = ?::JSON, report_hash = ?, updated_at = now()::TIMESTAMP WHERE proposal_id = ?",
        [json.dumps(report, sort_keys=True), report_hash, proposal_id],
    )


def set_status(
    con: duckdb.DuckDBPyConnection, proposal_id: int, status: str, applied_version: int | None = None
) -> None:
    con.execute(
        "UPDATE proposals SET status = ?, applied_version = coalesce(?, applied_version), "
        "updated_at = now()::TIMESTAMP WHERE proposal_id = ?",
        [status, applied_version, proposal_id],
    )


def get_proposal(con: duckdb.DuckDBPyConnection, proposal_id: int) -> dict[str, Any]:
    record = _one(con, "SELECT * FROM proposals WHERE proposal_id = ?", [proposal_id])
    if record is None:
        raise LabelgovError(f"proposal {proposal_id} does not exist; `labelgov proposal list` shows them")
    return record


def list_proposals(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        """
        SELECT p.proposal_id, p.title, p.status, p.compat_class, p.base_version, p.proposer, p.updated_at,
               count(o.seq) AS operations, p.applied_version
        FROM proposals p LEFT JOIN proposal_operations o USING (proposal_id)
        GROUP BY ALL ORDER BY p.proposal_id
        """
    ).df()


def operations(con: duckdb.DuckDBPyConnection, proposal_id: int) -> pd.DataFrame:
    return con.execute(
        "SELECT seq, op, compat_class, spec::VARCHAR AS spec FROM proposal_operations "
        "WHERE proposal_id = ? ORDER BY seq",
        [proposal_id],
    ).df()


def add_editor(con: duckdb.DuckDBPyConnection, proposal_id: int, editor: str) -> None:
    con.execute("INSERT OR IGNORE INTO proposal_editors VALUES (?, ?, now()::TIMESTAMP)", [proposal_id, editor])


def editors(con: duckdb.DuckDBPyConnection, proposal_id: int) -> set[str]:
    rows = con.execute("SELECT editor FROM proposal_editors WHERE proposal_id = ?", [proposal_id]).fetchall()
    return {str(r[0]) for r in rows}


def add_review(
    con: duckdb.DuckDBPyConnection,
    proposal_id: int,
    *,
    reviewer: str,
    decision: str,
    comment: str | None,
    proposal_hash: str,
    report_hash: str | None,
    base_version: int,
    base_hash: str,
    acknowledged_report: bool,
) -> None:
    con.execute(
        "INSERT INTO proposal_reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, false, now()::TIMESTAMP)",
        [
            proposal_id,
            reviewer,
            decision,
            comment,
            proposal_hash,
            report_hash,
            base_version,
            base_hash,
            acknowledged_report,
        ],
    )


def valid_approvers(
    con: duckdb.DuckDBPyConnection, proposal_id: int, proposal_hash: str, report_hash: str | None, base_hash: str
) -> list[str]:
    """Stewards whose approval still signs exactly this proposal, this report and this base."""
    rows = con.execute(
        "SELECT DISTINCT reviewer FROM proposal_reviews WHERE proposal_id = ? AND decision = 'approve' "
        "AND NOT void AND proposal_hash = ? AND report_hash IS NOT DISTINCT FROM ? AND base_hash = ? "
        "ORDER BY reviewer",
        [proposal_id, proposal_hash, report_hash, base_hash],
    ).fetchall()
    return [str(r[0]) for r in rows]


def void_reviews(con: duckdb.DuckDBPyConnection, proposal_id: int) -> int:
    row = con.execute(
        "UPDATE proposal_reviews SET void = true WHERE proposal_id = ? AND NOT void RETURNING 1", [proposal_id]
    ).fetchall()
    return len(row)


def reviews(con: duckdb.DuckDBPyConnection, proposal_id: int) -> pd.DataFrame:
    return con.execute(
        "SELECT reviewer, decision, comment, acknowledged_report, void, created_at, left(report_hash, 12) AS report "
        "FROM proposal_reviews WHERE proposal_id = ? ORDER BY created_at",
        [proposal_id],
    ).df()


def add_event(
    con: duckdb.DuckDBPyConnection,
    proposal_id: int,
    *,
    actor: str,
    action: str,
    from_status: str | None,
    to_status: str,
    comment: str | None,
) -> None:
    con.execute(
        "INSERT INTO proposal_events SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ?, now()::TIMESTAMP "
        "FROM proposal_events WHERE proposal_id = ?",
        [proposal_id, actor, action, from_status, to_status, comment, proposal_id],
    )


def events(con: duckdb.DuckDBPyConnection, proposal_id: int) -> pd.DataFrame:
    return con.execute(
        "SELECT seq, actor, action, from_status, to_status, comment, created_at FROM proposal_events "
        "WHERE proposal_id = ? ORDER BY seq",
        [proposal_id],
    ).df()


def open_on_base(con: duckdb.DuckDBPyConnection, base_version: int, except_id: int) -> list[int]:
    rows = con.execute(
        "SELECT proposal_id FROM proposals WHERE base_version = ? AND proposal_id <> ? AND list_contains(?, status) "
        "ORDER BY proposal_id",
        [base_version, except_id, list(OPEN_STATUSES)],
    ).fetchall()
    return [int(r[0]) for r in rows]


def next_migration_id(con: duckdb.DuckDBPyConnection) -> int:
    row = first_row(con.execute("SELECT coalesce(max(migration_id), 0) + 1 FROM applied_migrations"))
    return int(row[0]) if row else 1


def migration_for(con: duckdb.DuckDBPyConnection, proposal_id: int) -> dict[str, Any] | None:
    return _one(con, "SELECT * FROM applied_migrations WHERE proposal_id = ?", [proposal_id])


def insert_migration(con: duckdb.DuckDBPyConnection, record: dict[str, Any]) -> None:
    con.execute(
        "INSERT INTO applied_migrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
        [
            record["migration_id"],
            record["proposal_id"],
            record["from_version"],
            record["to_version"],
            record["checksum"],
            record["annotations_mapped"],
            record["annotations_to_relabel"],
            record["items_to_relabel"],
            record["applied_by"],
        ],
    )


def migration_mapping(con: duckdb.DuckDBPyConnection, migration_id: int) -> pd.DataFrame:
    """The stored closure rows of one migration, in a stable order (what its checksum covers)."""
    return con.execute(
        "SELECT from_version, from_node, to_node, automatic FROM node_mappings WHERE migration_id = ? "
        "ORDER BY from_version, from_node",
        [migration_id],
    ).df()


def queue_relabelling(
    con: duckdb.DuckDBPyConnection, migration_id: int, new_version: int, doubtful_nodes: list[str]
) -> int:
    """Queue every item with an annotation that this migration leaves on a node people must look at again.

    Annotations still doubtful from an earlier migration stay in that migration's queue, not this one's.
    """
    con.execute(
        """
        INSERT INTO relabel_queue
        SELECT ?, a.item_id, m.to_node, coalesce(n.consider, []), count(*), 'pending', now()::TIMESTAMP
        FROM annotations a
        JOIN node_mappings m ON m.to_version = ? AND m.from_version = a.tree_version AND m.from_node = a.node_id
        JOIN tree_nodes n ON n.tree_version = ? AND n.node_id = m.to_node
        WHERE NOT m.automatic AND list_contains(?, m.to_node)
        GROUP BY a.item_id, m.to_node, n.consider
        """,
        [migration_id, new_version, new_version, doubtful_nodes],
    )
    row = con.execute("SELECT count(DISTINCT item_id) FROM relabel_queue WHERE migration_id = ?", [migration_id])
    fetched = first_row(row)
    return int(fetched[0]) if fetched else 0


def relabel_queue(con: duckdb.DuckDBPyConnection, proposal_id: int) -> pd.DataFrame:
    return con.execute(
        """
        SELECT q.item_id, q.from_node, array_to_string(q.candidates, '|') AS candidates, q.annotations, q.status,
               m.to_version AS tree_version, q.queued_at
        FROM relabel_queue q JOIN applied_migrations m USING (migration_id)
        WHERE m.proposal_id = ? ORDER BY q.from_node, q.item_id
        """,
        [proposal_id],
    ).df()


def relabel_queue_annotations(con: duckdb.DuckDBPyConnection, migration_id: int) -> int:
    row = first_row(
        con.execute("SELECT coalesce(sum(annotations), 0) FROM relabel_queue WHERE migration_id = ?", [migration_id])
    )
    return int(row[0]) if row else 0
