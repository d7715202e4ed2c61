"""How the dashboard reaches the warehouse.

The server never holds the DuckDB file: each render opens a short-lived handle, fetches what it needs
fully, and closes it, so `labelgov ingest` or `refresh` in another process can take the write lock
between renders (both sides retry while the other holds it; see queries.connection).

Within this process DuckDB refuses to mix read-only and read-write handles on one file, and a handle
is not thread-safe, while Streamlit serves every session on its own thread. A readers-writer gate
therefore lets any number of sessions read at once, each on its own read-only handle, and gives a
governance write (an approval clicked in the browser) the file alone.

Results are cached with st.cache_data under the warehouse's cache key (data version plus refresh
count), so every session sees new numbers right after an ingest or refresh, and never before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import streamlit as st
from pydantic import BaseModel

from queries.connection import connect, resolve_db_path
from queries.filters import Filters
from queries.refresh import cache_key, is_stale, refreshed_version


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


def db_path() -> Path:
    return resolve_db_path(None)


@contextmanager
def reading() -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only handle for one unit of work."""
    with GATE.read(), connect(db_path(), read_only=True) as con:
        yield con


@contextmanager
def writing() -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write handle with the file to ourselves, for governance actions from the browser."""
    with GATE.write(), connect(db_path()) as con:
        yield con
    st.session_state.pop(RUN_STATE, None)
    st.cache_data.clear()


RUN_STATE = "labelgov_run_state"


class RunState(BaseModel):
    """What one script run learns about the warehouse from a single handle.

    Opening the file costs a few hundred milliseconds, so a run asks once for the cache key and the
    refresh state instead of once per query; a warm page then opens the warehouse exactly once.
    """

    key: str
    never_refreshed: bool
    stale: bool


def begin_run() -> RunState:
    with reading() as con:
        state = RunState(key=cache_key(con), never_refreshed=refreshed_version(con) is None, stale=is_stale(con))
    st.session_state[RUN_STATE] = state
    return state


def current_key() -> str:
    state = st.session_state.get(RUN_STATE)
    if isinstance(state, RunState):
        return state.key
    with reading() as con:
        return cache_key(con)


@st.cache_data(show_spinner=False, max_entries=512)
def _cached(
    path: str, key: str, _func: Callable[..., Any], name: str, filters_json: str, kwargs_repr: str, **kwargs: Any
) -> Any:
    """Keyed on path, warehouse version, function name, filters and arguments; `_func` is not hashed."""
    del path, key, name, kwargs_repr
    with reading() as con:
        return _func(con, Filters.model_validate_json(filters_json), **kwargs)


def query(func: Callable[..., Any], filters: Filters, **kwargs: Any) -> Any:
    """Run an analytics function ``func(con, filters, **kwargs)`` through the cache."""
    name = func.__module__ + "." + func.__qualname__
    return _cached(
        str(db_path()), current_key(), func, name, filters.model_dump_json(), repr(sorted(kwargs.items())), **kwargs
    )


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_plain(path: str, key: str, _func: Callable[..., Any], name: str, args_repr: str, *args: Any) -> Any:
    del path, key, name, args_repr
    with reading() as con:
        return _func(con, *args)


def call(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func(con, *args)`` for functions that take no filters (tree, versions, item detail)."""
    name = func.__module__ + "." + func.__qualname__
    return _cached_plain(str(db_path()), current_key(), func, name, repr(args), *args)
