"""Warehouse schema and its forward-only migrations.

The schema version lives in the warehouse itself so that an older release refuses a file written by
a newer one instead of silently misreading it. Migrations are appended, never edited: a warehouse at
version N is brought to the current version by running migrations N+1.. in order, in one transaction.
Each migration is a numbered SQL file in ``queries/migrations/``.

The large fact tables carry no PRIMARY KEY or UNIQUE constraints on purpose: DuckDB maintains an ART
index for each, which makes bulk loads several times slower. Uniqueness is enforced by ingest, in bulk,
before rows are written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from queries.errors import LabelgovError
from queries.results import first_row

MIGRATION_DIR = Path(__file__).resolve().parent / "migrations"


def _load_migrations() -> list[tuple[str, str]]:
    """Migrations are numbered SQL files, ``NNN_description.sql``, applied in number order."""
    found = []
    for file in sorted(MIGRATION_DIR.glob("[0-9][0-9][0-9]_*.sql")):
        number = int(file.name[:3])
        found.append((number, file.stem[4:].replace("_", " "), file.read_text(encoding="utf-8")))
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 001.. without gaps, found {numbers}")
    return [(description, ddl) for _, description, ddl in found]


MIGRATIONS: Sequence[tuple[str, str]] = tuple(_load_migrations())

SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in the warehouse, 0 for an empty file."""
    exists = first_row(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ))
    if not exists or exists[0] == 0:
        return 0
    row = first_row(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))
    return int(row[0]) if row else 0


def check_version(con: duckdb.DuckDBPyConnection, path: str) -> int:
    """Refuse a warehouse written by a newer release; return its version."""
    version = current_version(con)
    if version > SCHEMA_VERSION:
        raise LabelgovError(
            f"{path} was written by a newer labelgov (schema {version}, this release reads up to "
            f"{SCHEMA_VERSION}): upgrade labelgov, or point --db at another warehouse"
        )
    return version


def migrate(con: duckdb.DuckDBPyConnection, path: str) -> int:
    """Bring the warehouse to SCHEMA_VERSION in one transaction; return how many migrations ran."""
    version = check_version(con, path)
    if version == SCHEMA_VERSION:
        return 0
    con.execute("BEGIN TRANSACTION")
    try:
        for number, (description, ddl) in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            con.execute(ddl)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [number, description]
            )
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES ('data_version', "
            "coalesce((SELECT value FROM meta WHERE key = 'data_version'), '0'))"
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION - version
