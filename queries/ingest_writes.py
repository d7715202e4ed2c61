"""The last steps of an ingest: duplicates, original rows of quarantined rows, and the batch write.

Everything that can be worked out before writing (duplicates against the file and the warehouse, which
items and annotators are new) is kept in temporary tables, so the write transaction only copies rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np

from queries.errors import LabelgovError
from queries.ingest_fields import Kind
from queries.ingest_readers import Source, used_params
from queries.ingest_report import IngestReport
from queries.ingest_rules import STAGED
from queries.results import arrays, first_row

NEW_ITEMS = "_ingest_new_items"
NEW_ANNOTATORS = "_ingest_new_annotators"


@dataclass(frozen=True)
class Target:
    """Where a kind's accepted rows go and what makes a row a duplicate of another."""

    insert_sql: str
    key: tuple[str, ...]  # staged columns
    stored_match: str  # EXISTS condition against the warehouse table, alias w, staged alias s
    described: str  # SQL for the message naming the duplicated key


TARGETS: dict[Kind, Target] = {
    "annotations": Target(
        "INSERT INTO annotations (annotation_id, item_id, annotator_id, tree_version, node_id, confidence, "  # noqa: S608 - fixed table
        "distribution, stage, created_at, duration_s, cost, batch_id) "
        "SELECT coalesce(id, $id_prefix || rn), item, annotator, $tree_version, node_id, confidence, distribution, "
        "stage, created_at, duration, cost, $batch FROM " + STAGED + " WHERE reason IS NULL",
        ("id",),
        "EXISTS (SELECT 1 FROM annotations w WHERE w.annotation_id = s.id)",
        "concat('annotation id ', s.id)",
    ),
    "gold": Target(
        "INSERT INTO gold_labels (item_id, node_id, source, tree_version, batch_id) "  # noqa: S608 - fixed table
        "SELECT item, node_id, source, $tree_version, $batch FROM " + STAGED + " WHERE reason IS NULL",
        ("item",),
        "EXISTS (SELECT 1 FROM gold_labels w WHERE w.item_id = s.item)",
        "concat('gold label for item ', s.item)",
    ),
    "predictions": Target(
        "INSERT INTO predictions (item_id, model, model_version, tree_version, node_id, probabilities, created_at, "
        "batch_id) SELECT item, model, model_version, $tree_version, node_id, probabilities, created_at, $batch "
        "FROM " + STAGED + " WHERE reason IS NULL",
        ("item", "model", "model_version"),
        "EXISTS (SELECT 1 FROM predictions w WHERE w.item_id = s.item AND w.model = s.model "
        "AND w.model_version = s.model_version)",
        "concat('prediction of ', s.model, ' ', s.model_version, ' for item ', s.item)",
    ),
    # The log has no id of its own: the same trigger raised for the same item at the same moment is a repeat.
    "escalations": Target(
        "INSERT INTO escalations (item_id, trigger, routed_to, created_at, resolved_at, batch_id) "  # noqa: S608 - fixed table
        "SELECT item, trigger, routed_to, created_at, resolved_at, $batch FROM " + STAGED + " WHERE reason IS NULL",
        ("item", "trigger", "created_at"),
        "EXISTS (SELECT 1 FROM escalations w WHERE w.item_id = s.item AND w.trigger = s.trigger "
        "AND w.created_at = s.created_at)",
        "concat('escalation of item ', s.item, ' by trigger ', s.trigger, ' at ', s.created_at)",
    ),
}


def find_duplicates(con: duckdb.DuckDBPyConnection, kind: Kind) -> None:
    """Mark rows whose key is already stored, then repeats within the file (the first one stays).

    Repeats are looked for among rows whose key hash occurs twice, found by sorting the hashes in numpy:
    a vectorised sort of ten million integers takes a tenth of the time DuckDB needs to build a hash table
    with ten million groups. The few candidates are then compared exactly, so a hash collision between
    different keys marks nothing.
    """
    target = TARGETS[kind]
    present = " AND ".join("s." + column + " IS NOT NULL" for column in target.key)
    keys = ", ".join("s." + column for column in target.key)
    con.execute(
        "UPDATE " + STAGED + " AS s SET reason = 'duplicate_id', "  # noqa: S608 - fixed tables and fragments
        "message = " + target.described + " || ' is already in the warehouse' "
        "WHERE s.reason IS NULL AND " + present + " AND " + target.stored_match
    )
    hashes = np.sort(
        arrays(con, "SELECT hash(" + keys + ") AS h FROM " + STAGED + " s WHERE s.reason IS NULL AND " + present)["h"]  # noqa: S608 - fixed tables and fragments
    )
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    del hashes
    if repeated.size == 0:
        return
    con.execute(
        "UPDATE " + STAGED + " AS s SET reason = 'duplicate_id', "  # noqa: S608 - fixed tables and fragments
        "message = " + target.described + " || ' repeats row ' || d.first_rn "
        "FROM (SELECT s.rn, first_value(s.rn) OVER (PARTITION BY " + keys + " ORDER BY s.rn) AS first_rn FROM "
        + STAGED + " s WHERE s.reason IS NULL AND " + present + " AND hash(" + keys + ") IN (SELECT unnest($repeated)) "
        "QUALIFY s.rn <> first_rn) d WHERE s.rn = d.rn",
        {"repeated": repeated},
    )


def attach_originals(con: duckdb.DuckDBPyConnection, source: Source) -> None:
    """Copy duplicates' rows as written in the file (other quarantined rows got theirs while staging)."""
    pending = first_row(con.execute(
        "SELECT count(*) FROM " + STAGED + " WHERE reason IS NOT NULL AND original IS NULL"  # noqa: S608 - fixed table
    ))
    if not pending or pending[0] == 0:
        return
    carried = ", ".join(expr + " AS c" + str(i) for i, expr in enumerate(source.original_columns))
    sql = (
        "UPDATE " + STAGED + " AS s SET original = q.original FROM (SELECT rn, "  # noqa: S608 - fixed fragments
        + source.original_sql + " AS original FROM (SELECT " + source.row_number_sql + " AS rn, " + carried
        + " FROM " + source.from_sql + " WHERE " + source.row_number_sql + " IN (SELECT rn FROM " + STAGED
        + " WHERE reason IS NOT NULL AND original IS NULL))) q WHERE s.rn = q.rn"
    )
    con.execute(sql, used_params(sql, source.params))


def prepare_new_entities(con: duckdb.DuckDBPyConnection, kind: Kind) -> tuple[int, int]:
    """Items (and annotators) of accepted rows that the warehouse does not know yet."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE " + NEW_ITEMS + " AS SELECT DISTINCT item FROM " + STAGED + " s "  # noqa: S608 - fixed tables
        "WHERE s.reason IS NULL AND NOT EXISTS (SELECT 1 FROM items w WHERE w.item_id = s.item)"
    )
    items = first_row(con.execute("SELECT count(*) FROM " + NEW_ITEMS))  # noqa: S608 - fixed table
    if kind != "annotations":
        return int(items[0]) if items else 0, 0
    con.execute(
        "CREATE OR REPLACE TEMP TABLE " + NEW_ANNOTATORS + " AS SELECT DISTINCT annotator FROM " + STAGED + " s "  # noqa: S608 - fixed tables
        "WHERE s.reason IS NULL AND NOT EXISTS (SELECT 1 FROM annotators w WHERE w.annotator_id = s.annotator)"
    )
    annotators = first_row(con.execute("SELECT count(*) FROM " + NEW_ANNOTATORS))  # noqa: S608 - fixed table
    return int(items[0]) if items else 0, int(annotators[0]) if annotators else 0


def write_rows(con: duckdb.DuckDBPyConnection, kind: Kind, batch_id: int, tree_version: int) -> None:
    params: dict[str, object] = {"batch": batch_id, "tree_version": tree_version}
    if kind == "annotations":
        params["id_prefix"] = "b" + str(batch_id) + "-"
    sql = TARGETS[kind].insert_sql
    con.execute(sql, used_params(sql, params))


def write_quarantine(con: duckdb.DuckDBPyConnection, batch_id: int) -> None:
    con.execute(
        "INSERT INTO quarantine (batch_id, row_number, reason, message, original) "  # noqa: S608 - fixed table
        "SELECT $batch, rn, reason, message, original FROM " + STAGED + " WHERE reason IS NOT NULL ORDER BY rn",
        {"batch": batch_id},
    )


def write_new_entities(con: duckdb.DuckDBPyConnection, kind: Kind, batch_id: int) -> None:
    con.execute(
        "INSERT INTO items (item_id, batch_id) SELECT item, $batch FROM " + NEW_ITEMS,  # noqa: S608 - fixed table
        {"batch": batch_id},
    )
    if kind == "annotations":
        con.execute(
            "INSERT INTO annotators (annotator_id, kind, batch_id) SELECT annotator, 'crowd', $batch FROM "  # noqa: S608 - fixed table
            + NEW_ANNOTATORS,
            {"batch": batch_id},
        )


def write_record(con: duckdb.DuckDBPyConnection, report: IngestReport, batch_id: int, actor: str) -> None:
    con.execute(
        "INSERT INTO ingest_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            batch_id, report.kind, report.file_name, report.sha256, report.format, report.tree_version,
            report.rows_read, report.rows_accepted, report.rows_quarantined, actor,
            datetime.now(UTC).replace(tzinfo=None),
        ],
    )


def write_batch(con: duckdb.DuckDBPyConnection, kind: Kind, report: IngestReport, actor: str) -> int:
    """All writes of one batch; the caller holds the transaction. Returns the new batch id."""
    again = first_row(con.execute(
        "SELECT min(batch_id) FROM ingest_batches WHERE sha256 = ? AND kind = ?", [report.sha256, kind]
    ))
    if again and again[0] is not None:
        raise LabelgovError(
            f"{report.file_name} was ingested as batch {again[0]} while this ingest ran; nothing written"
        )
    row = first_row(con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches"))
    batch_id = int(row[0]) if row else 1
    write_rows(con, kind, batch_id, report.tree_version)
    write_quarantine(con, batch_id)
    write_new_entities(con, kind, batch_id)
    write_record(con, report, batch_id, actor)
    return batch_id
