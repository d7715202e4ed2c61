"""Validated bulk ingest of annotations, gold labels, model predictions and the escalation log.

A file becomes one batch, all or nothing. Rows that fail a check are not dropped silently: they go to
``quarantine`` with a reason code, the row's place in the file and the row as it was written, so that
rows accepted + rows quarantined always equals rows read. Only a file that cannot be read as a whole is
refused outright, with one message saying what to fix.

The expensive work (reading, typing, label resolution, duplicate detection) happens in temporary
tables before the write transaction opens; the transaction itself is a few INSERT ... SELECTs, so the
warehouse is held for as short a time as possible. The same file (by SHA-256 and kind) is ingested once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from queries.connection import Recorder, bump_data_version, transaction
from queries.errors import LabelgovError
from queries.ingest_fields import Kind, check_kind, check_mapping, parse_mapping
from queries.ingest_readers import (
    Source,
    check_file,
    detect_format,
    duckdb_failure,
    open_delimited,
    open_jsonl,
    open_parquet,
    used_params,
)
from queries.ingest_report import IngestReport
from queries.ingest_rules import STAGED, prepare_labels, staging_sql
from queries.ingest_writes import attach_originals, find_duplicates, prepare_new_entities, write_batch
from queries.label_studio import open_label_studio
from queries.results import first_row
from queries.taxonomy import latest_version

LARGE_FILE_BYTES = 25_000_000  # about a million rows in any of the formats
HASH_CHUNK = 8 << 20
EXAMPLES = 5

Progress = Callable[[str], None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tree_version(con: duckdb.DuckDBPyConnection, requested: int | None) -> int:
    if requested is None:
        version = latest_version(con)
        if version is None:
            raise LabelgovError("the warehouse has no label tree yet: run `labelgov tree import FILE` first")
        return version
    row = first_row(con.execute("SELECT count(*) FROM tree_versions WHERE tree_version = ?", [requested]))
    if not row or row[0] == 0:
        raise LabelgovError(f"--tree-version {requested} does not exist; see `labelgov info` for the versions")
    return requested


def _previous_batch(con: duckdb.DuckDBPyConnection, sha256: str, kind: str) -> int | None:
    row = first_row(con.execute(
        "SELECT min(batch_id) FROM ingest_batches WHERE sha256 = ? AND kind = ?", [sha256, kind]
    ))
    return int(row[0]) if row and row[0] is not None else None


def _open_source(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, kind: Kind, mapping: dict[str, str]
) -> Source:
    if fmt in ("csv", "tsv"):
        return open_delimited(con, path, fmt, kind, mapping)
    if fmt == "parquet":
        return open_parquet(con, path, kind, mapping)
    if fmt == "jsonl":
        return open_jsonl(con, path, kind, mapping)
    if kind == "escalations":
        raise LabelgovError(
            f"{path}: a Label Studio export holds answers, not an escalation log; write escalations as CSV, "
            "Parquet or JSON Lines with columns item_id, trigger, created_at and optional routed_to, resolved_at"
        )
    return open_label_studio(con, path, kind, mapping)


def _summarise(con: duckdb.DuckDBPyConnection, report: IngestReport) -> None:
    rows = con.execute(
        "SELECT reason, count(*) FROM " + STAGED + " GROUP BY reason ORDER BY reason"  # noqa: S608 - fixed table name
    ).fetchall()
    report.rows_read = sum(int(n) for _, n in rows)
    report.quarantined = {str(reason): int(n) for reason, n in rows if reason is not None}
    report.rows_accepted = report.rows_read - report.rows_quarantined
    first = con.execute(
        "SELECT rn, reason, message FROM " + STAGED + " WHERE reason IS NOT NULL ORDER BY rn LIMIT $n",  # noqa: S608 - fixed table name
        {"n": EXAMPLES},
    ).fetchall()
    report.examples = [f"row {rn} {reason}: {message}" for rn, reason, message in first]


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    path: str | Path,
    *,
    fmt: str | None = None,
    mapping: str | Mapping[str, str] | None = None,
    tree_version: int | None = None,
    dry_run: bool = False,
    actor: str = "unknown",
    progress: Progress | None = None,
    record: Recorder | None = None,
) -> IngestReport:
    """Validate ``path`` in bulk and write it as one batch (nothing at all when ``dry_run``).

    ``progress`` hears the phase names, only for files large enough (about a million rows) to take a while.
    """
    checked_kind = check_kind(kind)
    pairs = parse_mapping(mapping) if mapping is None or isinstance(mapping, str) else list(mapping.items())
    fields = check_mapping(pairs, checked_kind)
    file = Path(path)
    check_file(file)
    file_format = detect_format(file, fmt)
    say = progress if progress is not None and file.stat().st_size >= LARGE_FILE_BYTES else None
    if say:
        say(f"hashing {file.name}")
    sha256 = file_sha256(file)
    # A private connection to the same database: its own temp tables, transaction and time zone.
    cur = con.cursor()
    try:
        cur.execute("SET TimeZone = 'UTC'")
        version = _tree_version(cur, tree_version)
        report = IngestReport(
            kind=checked_kind, file_name=str(file.resolve()), format=file_format, sha256=sha256,
            tree_version=version, dry_run=dry_run,
        )
        previous = _previous_batch(cur, sha256, checked_kind)
        if previous is not None:
            report.duplicate_of_batch = previous
            report.messages.append(
                f"{file.name} was already ingested as {checked_kind} batch {previous}; nothing to do"
            )
            return report
        if say:
            say(f"reading {file.name} as {file_format}")
        source = _open_source(cur, file, file_format, checked_kind, fields)
        if say:
            say("validating rows")
        prepare_labels(cur, version)
        sql, params = staging_sql(checked_kind, source, version, datetime.now(UTC))
        try:
            cur.execute(sql, used_params(sql, params))
        except duckdb.Error as exc:
            raise duckdb_failure(file, file_format, exc) from exc
        if source.rejected_sql:
            cur.execute("INSERT INTO " + STAGED + " (rn, reason, message, original) " + source.rejected_sql)
        if say:
            say("checking duplicates")
        find_duplicates(cur, checked_kind)
        attach_originals(cur, source)
        _summarise(cur, report)
        report.new_items, report.new_annotators = prepare_new_entities(cur, checked_kind)
        if dry_run:
            report.messages.append("dry run: nothing was written")
            return report
        if say:
            say(f"writing {report.rows_accepted:,} rows")
        with transaction(cur):
            report.batch_id = write_batch(cur, checked_kind, report, actor)
            bump_data_version(cur)
            if record is not None:
                record(cur, "ingest." + checked_kind, report.model_dump(mode="json", exclude={"messages"}))
        return report
    finally:
        cur.close()
