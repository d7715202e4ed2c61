"""Opening the warehouse.

Design: nobody holds the DuckDB file for longer than one unit of work. A DuckDB process that has the
file open blocks every other process from writing it, so the dashboard opens a short-lived read-only
handle per query batch and the command line opens a read-write handle per command. Both retry while
another process holds the lock, so a dashboard render and an ingest can overlap without either
failing: the reader waits out the writer's short commit window, and the writer waits out a render.

Every write bumps ``meta.data_version`` inside its own transaction; readers key caches on it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from queries.errors import LabelgovError, WarehouseBusy
from queries.schema import check_version, migrate

DEFAULT_DB = Path("warehouse") / "labelgov.duckdb"
# A write's record of itself (action, payload), called inside the write's transaction so that the
# record (the audit log, which lives above this package) commits or rolls back with the write.
Recorder = Callable[[duckdb.DuckDBPyConnection, str, dict[str, Any]], None]
ENV_DB = "LABELGOV_DB"
LOCK_WAIT_S = float(os.environ.get("LABELGOV_LOCK_WAIT_S", "60"))
# Bulk rebuilds spill to disk past this much buffer memory instead of growing with the warehouse, so a
# refresh of ten million answers fits a small machine; pandas frames handed to numpy come on top.
BULK_MEMORY_LIMIT = "1GB"


def resolve_db_path(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """``--db`` first, then ``$LABELGOV_DB``, then ``./warehouse/labelgov.duckdb``."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env)
    return DEFAULT_DB


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


def _connect_with_retry(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise LabelgovError(f"cannot open warehouse {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"warehouse {path} is locked by another process (an ingest, refresh or apply); "
                    "try again when it finishes"
                ) from exc
            time.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not security
            delay = min(delay * 2, 0.5)
        except duckdb.Error as exc:
            raise LabelgovError(
                f"{path} is not a DuckDB warehouse this release can open ({exc}); "
                "point --db at a labelgov warehouse or a new file"
            ) from exc


@contextmanager
def connect(
    db: str | os.PathLike[str] | None = None,
    *,
    read_only: bool = False,
    wait_s: float | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; read-write opens migrate the schema forward first."""
    path = resolve_db_path(db)
    if read_only and not path.exists():
        raise LabelgovError(
            f"no warehouse at {path}: build one with `labelgov demo` or `labelgov tree import FILE`, "
            "or point --db / LABELGOV_DB at an existing one"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect_with_retry(path, read_only, LOCK_WAIT_S if wait_s is None else wait_s)
    try:
        if read_only:
            check_version(con, str(path))
        else:
            migrate(con, str(path))
        yield con
    finally:
        con.close()


def memory() -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse with the current schema, for tests and scratch work."""
    con = duckdb.connect(":memory:")
    migrate(con, ":memory:")
    return con


def data_version(con: duckdb.DuckDBPyConnection) -> int:
    """A counter that every write increments: the key for cached dashboard results."""
    rows = con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def bump_data_version(con: duckdb.DuckDBPyConnection) -> int:
    """Call inside the writing transaction so the new version commits with the data."""
    con.execute(
        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) WHERE key = 'data_version'"
    )
    return data_version(con)


@contextmanager
def bulk_settings(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Settings for rebuilding large tables, restored afterwards because the connection may live on.

    Without insertion order DuckDB writes CREATE TABLE AS results from all threads without
    re-sequencing them (statements with ORDER BY keep their order); the memory limit makes
    joins and sorts spill instead of holding every intermediate in memory.
    """
    before = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET memory_limit = '" + BULK_MEMORY_LIMIT + "'")
    try:
        yield con
    finally:
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET memory_limit = '" + before.replace("'", "") + "'")


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: commit when the block finishes, roll back on any exception."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")

