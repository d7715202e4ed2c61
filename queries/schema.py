"""Warehouse schema and its forward-only migrations.

The schema version lives in the warehouse itself so that an older release refuses a file written by
a newer one instead of silently misreading it. Migrations are appended, never edited: a warehouse at
version N is brought to the current version by running migrations N+1.. in order, in one transaction.

The large fact tables carry no PRIMARY KEY or UNIQUE constraints on purpose: DuckDB maintains an ART
index for each, which makes bulk loads several times slower. Uniqueness is enforced by ingest, in bulk,
before rows are written.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from queries.errors import LabelgovError

MIGRATIONS: Sequence[tuple[str, str]] = (
    (
        "initial warehouse",
        """
        CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
        CREATE TABLE schema_migrations (
            version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL
        );
        CREATE TABLE tree_versions (
            tree_version INTEGER PRIMARY KEY,
            taxonomy VARCHAR NOT NULL,
            label VARCHAR,
            content_hash VARCHAR NOT NULL,
            parent_version INTEGER,
            created_by VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            source_text VARCHAR
        );
        CREATE TABLE tree_nodes (
            tree_version INTEGER NOT NULL,
            node_id VARCHAR NOT NULL,
            parent_id VARCHAR,
            title VARCHAR NOT NULL,
            description VARCHAR,
            codes VARCHAR[] NOT NULL,
            status VARCHAR NOT NULL DEFAULT 'active',
            depth INTEGER NOT NULL,
            path VARCHAR NOT NULL,
            is_leaf BOOLEAN NOT NULL,
            ordinal INTEGER NOT NULL,
            replaced_by VARCHAR,
            consider VARCHAR[],
            aliases VARCHAR[],
            guideline VARCHAR,
            PRIMARY KEY (tree_version, node_id)
        );
        CREATE TABLE ingest_batches (
            batch_id INTEGER PRIMARY KEY,
            kind VARCHAR NOT NULL,
            file_name VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            format VARCHAR NOT NULL,
            tree_version INTEGER,
            rows_read BIGINT NOT NULL,
            rows_accepted BIGINT NOT NULL,
            rows_quarantined BIGINT NOT NULL,
            ingested_by VARCHAR NOT NULL,
            ingested_at TIMESTAMP NOT NULL
        );
        CREATE TABLE quarantine (
            batch_id INTEGER NOT NULL,
            row_number BIGINT NOT NULL,
            reason VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            original JSON NOT NULL
        );
        CREATE TABLE items (
            item_id VARCHAR NOT NULL,
            source VARCHAR,
            segment VARCHAR,
            split VARCHAR,
            created_at TIMESTAMP,
            content_hash VARCHAR,
            metadata JSON,
            batch_id INTEGER
        );
        CREATE TABLE annotators (
            annotator_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL DEFAULT 'crowd',
            tier VARCHAR,
            expertise VARCHAR[],
            cost_rate DOUBLE,
            batch_id INTEGER
        );
        CREATE TABLE annotations (
            annotation_id VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            annotator_id VARCHAR NOT NULL,
            tree_version INTEGER NOT NULL,
            node_id VARCHAR NOT NULL,
            confidence DOUBLE,
            distribution MAP(VARCHAR, DOUBLE),
            stage VARCHAR NOT NULL DEFAULT 'initial',
            created_at TIMESTAMP,
            duration_s DOUBLE,
            cost DOUBLE,
            guideline_version VARCHAR,
            batch_id INTEGER NOT NULL
        );
        CREATE TABLE gold_labels (
            item_id VARCHAR NOT NULL,
            node_id VARCHAR NOT NULL,
            source VARCHAR,
            tree_version INTEGER NOT NULL,
            batch_id INTEGER NOT NULL
        );
        CREATE TABLE predictions (
            item_id VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL,
            tree_version INTEGER NOT NULL,
            node_id VARCHAR,
            probabilities MAP(VARCHAR, DOUBLE) NOT NULL,
            created_at TIMESTAMP,
            batch_id INTEGER NOT NULL
        );
        CREATE TABLE escalations (
            item_id VARCHAR NOT NULL,
            trigger VARCHAR NOT NULL,
            routed_to VARCHAR,
            created_at TIMESTAMP,
            resolved_at TIMESTAMP,
            batch_id INTEGER
        );
        CREATE TABLE demo_manifest (key VARCHAR PRIMARY KEY, value JSON NOT NULL);
        """,
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in the warehouse, 0 for an empty file."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()
    if not exists or exists[0] == 0:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
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
