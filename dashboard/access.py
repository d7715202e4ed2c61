"""How the dashboard reaches the warehouse.

The server never holds the DuckDB file: each render opens a short-lived handle, fetches what it needs
fully, and closes it, so `labelgov ingest` or `refresh` in another process can take the write lock
between renders (both sides retry while the other holds it, and a writer queues readers behind it at
the warehouse's gate; see queries.connection).

Within this process DuckDB refuses to mix read-only and read-write handles on one file, and a handle
is not thread-safe, while Streamlit serves every session on its own thread. A readers-writer gate
therefore lets any number of sessions read at once, each on its own read-only handle, and gives a
governance write (an approval clicked in the browser) the file alone.

Results are cached with st.cache_data under the warehouse's cache key (data version plus refresh
count), so every session sees new numbers right after an ingest or refresh, and never before. A
result is only ever stored under the key of the data it was computed from: a query that finds the
data moved on since its key was read starts again under the new key. Reading the key needs no handle
while the warehouse files are unchanged since it was last read, and while another process writes,
renders keep the key from before the write, so pages whose results are cached draw at once from the
last committed state instead of queueing behind the writer; only a result not yet cached waits.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import streamlit as st
from pydantic import BaseModel

from queries import answer_arrays
from queries.connection import LOCK_WAIT_S, cache_key, connect, resolve_db_path, write_in_progress
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.refresh import is_stale, refreshed_version


class _Gate:
    """Many readers or one writer; a waiting writer stops new readers from starving it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._writers_waiting == 0)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


GATE = _Gate()

# The server lives for many questions: filtered ones select from the answers held in memory (see
# queries/answer_arrays) instead of scanning and sorting them each time.
answer_arrays.enable()


# A dashboard reader waits behind a write (with a spinner) rather than failing: a refresh of a large
# warehouse takes minutes, and a reader never holds anything a writer needs while it waits.
READ_WAIT_S = max(LOCK_WAIT_S, float(os.environ.get("LABELGOV_READ_WAIT_S", "900")))


def db_path() -> Path:
    return resolve_db_path(None)


@contextmanager
def reading() -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only handle for one unit of work."""
    with GATE.read(), connect(db_path(), read_only=True, wait_s=READ_WAIT_S) as con:
        yield con


@contextmanager
def writing() -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write handle with the file to ourselves, for governance actions from the browser."""
    with GATE.write(), connect(db_path()) as con:
        yield con
    _forget(db_path())
    st.session_state.pop(RUN_STATE, None)
    st.cache_data.clear()


RUN_STATE = "labelgov_run_state"


class RunState(BaseModel):
    """What one script run learns about the warehouse from a single handle.

    Opening the file costs a few hundred milliseconds, so a run asks once for the cache key and the
    refresh state instead of once per query, and not at all while the files are as they were.
    """

    key: str
    never_refreshed: bool
    stale: bool


Fingerprint = tuple[tuple[int, int, int] | None, ...]


def _fingerprint(path: Path) -> Fingerprint:
    """The warehouse file and its write-ahead log as the file system sees them: every commit changes one."""
    parts: list[tuple[int, int, int] | None] = []
    for file in (path, path.with_name(path.name + ".wal")):
        try:
            info = file.stat()
        except FileNotFoundError:
            parts.append(None)
            continue
        parts.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(parts)


# The last state read per warehouse, with the fingerprint taken just before reading it.
_KNOWN: dict[Path, tuple[Fingerprint, RunState]] = {}
_KNOWN_LOCK = threading.Lock()


def _forget(path: Path) -> None:
    with _KNOWN_LOCK:
        _KNOWN.pop(path, None)


def _read_state(path: Path) -> RunState:
    # Fingerprint first: a write that commits while we read changes it, so the next run reads again.
    fingerprint = _fingerprint(path)
    with reading() as con:
        state = RunState(key=cache_key(con), never_refreshed=refreshed_version(con) is None, stale=is_stale(con))
    with _KNOWN_LOCK:
        _KNOWN[path] = (fingerprint, state)
    return state


def warehouse_state() -> RunState:
    """The current state; the one from before a write while another process is writing."""
    path = db_path()
    with _KNOWN_LOCK:
        known = _KNOWN.get(path)
    if known is not None and (known[0] == _fingerprint(path) or write_in_progress(path)):
        return known[1]
    return _read_state(path)


def begin_run() -> RunState:
    state = warehouse_state()
    st.session_state[RUN_STATE] = state
    return state


def current_key() -> str:
    state = st.session_state.get(RUN_STATE)
    if isinstance(state, RunState):
        return state.key
    return warehouse_state().key


class _KeyMoved(Exception):
    """The data changed after the key was read; raised so that st.cache_data stores nothing."""


@st.cache_data(show_spinner=False, max_entries=512)
def _cached(
    path: str, key: str, _func: Callable[..., Any], name: str, filters_json: str, kwargs_repr: str, **kwargs: Any
) -> Any:
    """Keyed on path, warehouse version, function name, filters and arguments; `_func` is not hashed."""
    del path, name, kwargs_repr
    with reading() as con:
        if cache_key(con) != key:
            raise _KeyMoved
        return _func(con, Filters.model_validate_json(filters_json), **kwargs)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_plain(path: str, key: str, _func: Callable[..., Any], name: str, args_repr: str, *args: Any) -> Any:
    del path, name, args_repr
    with reading() as con:
        if cache_key(con) != key:
            raise _KeyMoved
        return _func(con, *args)


# Writes that commit during one query are few (an ingest, then its refresh); past this many the page
# asks to be reloaded rather than chase the data.
KEY_ATTEMPTS = 4


def _through_cache(run: Callable[[str], Any]) -> Any:
    """Run under the current key; if the data moved on meanwhile, again under the new one."""
    key = current_key()
    for _ in range(KEY_ATTEMPTS):
        try:
            return run(key)
        except _KeyMoved:
            state = _read_state(db_path())
            if isinstance(st.session_state.get(RUN_STATE), RunState):
                st.session_state[RUN_STATE] = state
            key = state.key
    raise LabelgovError("the warehouse changed several times while this page was drawn; reload the page")


def query(func: Callable[..., Any], filters: Filters, **kwargs: Any) -> Any:
    """Run an analytics function ``func(con, filters, **kwargs)`` through the cache.

    The arguments are keyed with the function's defaults filled in, so that two views asking the same
    question, one naming a default and one leaving it out, share one result.
    """
    name = func.__module__ + "." + func.__qualname__
    kwargs = _with_defaults(func, kwargs)
    path, filters_json, kwargs_repr = str(db_path()), filters.model_dump_json(), repr(sorted(kwargs.items()))
    return _through_cache(lambda key: _cached(path, key, func, name, filters_json, kwargs_repr, **kwargs))


def _with_defaults(func: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus every default of ``func`` after its connection and filters that they leave out."""
    optional = list(inspect.signature(func).parameters.values())[2:]
    defaults = {p.name: p.default for p in optional if p.default is not inspect.Parameter.empty}
    return {**defaults, **kwargs}


def call(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func(con, *args)`` for functions that take no filters (tree, versions, item detail)."""
    name = func.__module__ + "." + func.__qualname__
    path, args_repr = str(db_path()), repr(args)
    return _through_cache(lambda key: _cached_plain(path, key, func, name, args_repr, *args))
