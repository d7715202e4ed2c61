"""Opening the warehouse.

Design: nobody holds the DuckDB file for longer than one unit of work. A DuckDB process that has the
file open blocks every other process from writing it, so the dashboard opens a short-lived read-only
handle per query batch and the command line opens a read-write handle per command. Both retry while
another process holds the lock, so a dashboard render and an ingest can overlap without either
failing: the reader waits out the writer, and the writer waits out the renders in flight.

DuckDB's own lock has no queue: a writer that retries while readers keep opening short handles can
wait forever, because some reader always has the file open. A gate file beside the warehouse
(``<name>.gate``) gives writers priority across processes: a writer takes it exclusively before
opening the warehouse and keeps it until it closes, and a reader passes through it (a shared lock,
released at once) before opening. Readers that arrive while a writer waits or writes queue at the
gate instead of renewing DuckDB's lock, so the readers already inside drain and the writer gets in.
The gate is an flock, so the kernel releases it when a process dies: a crash leaves no stale lock.

Every write bumps ``meta.data_version`` inside its own transaction; readers key caches on it.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

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
# refresh of ten million answers fits a small machine; pandas frames handed to numpy come on top. DuckDB
# does not always hand its cache back before a numpy-heavy step (Dawid-Skene adds about 1 GB at ten million
# answers): at 768 MB the refresh peaked at 1.6 or 2.0 GB from run to run, at 512 MB at 1.6-1.8 GB, for
# about 2 s more.
BULK_MEMORY_LIMIT = "512MB"


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


def _backoff(delay: float) -> float:
    """Sleep a jittered ``delay`` and return the next one: readers and writers must not retry in step."""
    time.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not security
    return min(delay * 2, 0.5)


def _busy(path: Path) -> WarehouseBusy:
    return WarehouseBusy(
        f"warehouse {path} is locked by another process (an ingest, refresh or apply); try again when it finishes"
    )


def _connect_with_retry(path: Path, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise LabelgovError(f"cannot open warehouse {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise _busy(path) from exc
            delay = _backoff(delay)
        except duckdb.Error as exc:
            raise LabelgovError(
                f"{path} is not a DuckDB warehouse this release can open ({exc}); "
                "point --db at a labelgov warehouse or a new file"
            ) from exc


def gate_path(path: Path) -> Path:
    return path.with_name(path.name + ".gate")


def _open_gate(path: Path) -> int | None:
    """The gate's file descriptor; None where it cannot be created (a read-only folder): no priority then."""
    gate = gate_path(path)
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(gate, flags, 0o666)
        except OSError:
            continue
    return None


def _flock(fd: int, operation: int, path: Path, deadline: float) -> None:
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _busy(path) from None
            delay = _backoff(delay)


# Writer gates this process holds: path -> [file descriptor, depth]. A process takes a gate once and
# shares it among its own writers (nested or on other threads), which DuckDB lets share the file.
_HELD: dict[Path, list[int]] = {}
_HELD_LOCK = threading.Lock()


def _share_held(path: Path) -> bool:
    with _HELD_LOCK:
        held = _HELD.get(path)
        if held is not None:
            held[1] += 1
        return held is not None


@contextmanager
def _writer_gate(path: Path, deadline: float) -> Iterator[None]:
    key = path.resolve()
    if not _share_held(key):
        fd = _open_gate(path)
        if fd is not None:
            try:
                _flock(fd, fcntl.LOCK_EX, path, deadline)
            except BaseException:
                os.close(fd)
                raise
        with _HELD_LOCK:
            if key in _HELD:  # another thread of this process got in first; share its gate
                _HELD[key][1] += 1
                if fd is not None:
                    os.close(fd)
            else:
                _HELD[key] = [-1 if fd is None else fd, 1]
    try:
        yield
    finally:
        with _HELD_LOCK:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                fd = _HELD.pop(key)[0]
                if fd >= 0:
                    os.close(fd)  # closing releases the flock


def _pass_reader_gate(path: Path, deadline: float) -> None:
    """Wait while a writer holds or waits for the gate; readers never keep it."""
    with _HELD_LOCK:
        if path.resolve() in _HELD:
            return
    fd = _open_gate(path)
    if fd is None:
        return
    try:
        _flock(fd, fcntl.LOCK_SH, path, deadline)
    finally:
        os.close(fd)


def write_in_progress(db: str | os.PathLike[str] | None = None) -> bool:
    """Whether another labelgov process is writing the warehouse or waiting to, without waiting."""
    path = resolve_db_path(db)
    try:
        _pass_reader_gate(path, time.monotonic())
    except WarehouseBusy:
        return True
    return False


@contextmanager
def connect(
    db: str | os.PathLike[str] | None = None,
    *,
    read_only: bool = False,
    wait_s: float | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; read-write opens migrate the schema forward first.

    ``wait_s`` bounds the whole wait for the gate and the lock, then WarehouseBusy says who holds it.
    """
    path = resolve_db_path(db)
    if read_only and not path.exists():
        raise LabelgovError(
            f"no warehouse at {path}: build one with `labelgov demo` or `labelgov tree import FILE`, "
            "or point --db / LABELGOV_DB at an existing one"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
    if read_only:
        _pass_reader_gate(path, deadline)
        con = _connect_with_retry(path, True, deadline)
        try:
            check_version(con, str(path))
            yield con
        finally:
            con.close()
        return
    with _writer_gate(path, deadline):
        con = _connect_with_retry(path, False, deadline)
        try:
            migrate(con, str(path))
            yield con
        finally:
            con.close()


def memory() -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse with the current schema, for tests and scratch work."""
    con = duckdb.connect(":memory:")
    migrate(con, ":memory:")
    return con


@overload
def meta_value(con: duckdb.DuckDBPyConnection, key: str, default: str) -> str: ...
@overload
def meta_value(con: duckdb.DuckDBPyConnection, key: str, default: None = None) -> str | None: ...
def meta_value(con: duckdb.DuckDBPyConnection, key: str, default: str | None = None) -> str | None:
    """The warehouse's bookkeeping value under ``key``, ``default`` when it was never written."""
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
    return str(rows[0][0]) if rows else default


def data_version(con: duckdb.DuckDBPyConnection) -> int:
    """A counter that every write increments: the key for cached dashboard results."""
    return int(meta_value(con, "data_version", "0"))


KEY_VALUES = "(SELECT value FROM meta WHERE key = 'data_version'), (SELECT value FROM meta WHERE key = 'refresh_count')"
WAREHOUSE_FILE = "(SELECT path FROM duckdb_databases() WHERE database_name = current_database())"


def cache_key(con: duckdb.DuckDBPyConnection) -> str:
    """Changes after every ingest, governance write or refresh: key cached results on it."""
    return _key(*con.execute("SELECT " + KEY_VALUES).fetchall()[0])


def file_and_cache_key(con: duckdb.DuckDBPyConnection) -> tuple[str | None, str]:
    """The warehouse's file (None in memory) and cache_key in one statement: the held answers check both for
    every kept value and filtered question, a dozen times on a filtered drift page, where three statements
    cost about a millisecond and a half each time."""
    path, version, count = con.execute("SELECT " + WAREHOUSE_FILE + ", " + KEY_VALUES).fetchall()[0]
    return (str(path) if path else None), _key(version, count)


def _key(version: str | None, count: str | None) -> str:
    return f"{int(version or 0)}:{count or 0}"


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

