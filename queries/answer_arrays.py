"""The answers as numpy arrays held in memory, one warehouse at a time, for the filtered questions of a
long-lived process (the dashboard server).

At ten million answers a filtered agreement or drift question spent most of its time before any statistic:
fetching millions of rows from DuckDB, then sorting them by item. Here the answers are fetched once per
warehouse file and cache key (data version and refresh count: they change with every ingest, governance write
and refresh), sorted by item, week and value; a filter is then a boolean mask over them, and a mask keeps that
order, so the rows need no sort either.

Questions that read a few columns once (counts, medians, an item scope) take the held columns and the mask
(``in_scope``) and walk them in compiled loops; those that sort or group many (agreement, drift) take copies of
the rows the filter keeps (``filtered``).

The cost is memory: 33 to 49 bytes per answer, as the columns' ranges allow (340 MB for the large demo's ten
million; the duration and the cost, doubles so that medians and sums equal the SQL ones, are 16 of them, and
the stated confidence 8 more unless it takes at most 256 distinct values), plus a byte per answer for each of
the last few filters' masks, in the process that enables it, and a few seconds for the first filtered question
after each change of the data. So it is off unless a process turns it on (``enable``): a command that asks one
question would pay the build for nothing, and refresh, which computes everything unfiltered under a memory
budget, never uses it. Warehouses in memory have no file to key them on and are not cached.

``mask`` mirrors Filters.where field by field (a NULL never matches a condition); tests compare the two on
many filters, and the results of every page function served from here with the SQL ones.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from queries import compiled_sums
from queries.connection import file_and_cache_key
from queries.filters import Filters
from queries.results import arrays

T = TypeVar("T")
# Stands for NULL in the integer day columns: below every date a filter can hold.
NO_DAY = np.iinfo(np.int32).min
# Text columns the filters compare, each stored as its 1-based position in the column's sorted distinct values
# (0: NULL), with the Filters field that names its values.
CODED = {"tier": "tiers", "stage": "stages", "source": "sources", "segment": "segments"}
DISTINCT = "SELECT list(DISTINCT {c} ORDER BY {c}) FILTER (WHERE {c} IS NOT NULL) FROM d_answers"
ROWS = """
SELECT item_idx, value_idx AS v, coalesce(day, ?) AS day, annotator_idx,
       coalesce(CAST(date_diff('day', DATE '1970-01-01', created_at) AS INTEGER), ?) AS created,
       CAST(coalesce(confidence, 'NaN') AS DOUBLE) AS confidence,
       CAST(coalesce(duration_s, 'NaN') AS DOUBLE) AS duration,
       CAST(coalesce(cost, 'NaN') AS DOUBLE) AS cost,
       CAST(coalesce(source_version, 0) AS INTEGER) AS source_version,
       CAST(coalesce(list_position(CAST(? AS VARCHAR[]), tier), 0) AS INTEGER) AS tier,
       CAST(coalesce(list_position(CAST(? AS VARCHAR[]), stage), 0) AS INTEGER) AS stage,
       CAST(coalesce(list_position(CAST(? AS VARCHAR[]), source), 0) AS INTEGER) AS source,
       CAST(coalesce(list_position(CAST(? AS VARCHAR[]), segment), 0) AS INTEGER) AS segment
FROM d_answers
"""
IN_BRANCH = "SELECT item_idx FROM d_items WHERE list_contains(consensus_lineage, ?)"
ANNOTATORS = "SELECT annotator_idx FROM d_annotator_index WHERE annotator_id IN (SELECT unnest(?))"


@dataclass(frozen=True)
class AnswerArrays:
    """Every answer, sorted by item, week start day (NO_DAY first) and value index."""

    columns: dict[str, np.ndarray]  # item_idx, v, day, annotator_idx, created, confidence (NaN: none stated),
    # duration (NaN: not timed), cost (NaN: none stated), source_version and the CODED
    dictionaries: dict[str, list[str]]  # per CODED column: its values in code order (code 1 is the first)
    # The distinct confidences when ``confidence`` holds positions in them (see build); None: it holds doubles.
    confidence_levels: np.ndarray | None
    # What ``kept`` computed for this version of the data, by name; also each branch's item table, since a page
    # asks for several periods or groupings of the same branch.
    kept: dict[str, Any] = dataclass_field(default_factory=dict)
    masks: dict[str, np.ndarray] = dataclass_field(default_factory=dict)  # see mask, in order of use

    @property
    def size(self) -> int:
        return int(self.columns["item_idx"].size)


_enabled = False
_held: tuple[tuple[str, str], AnswerArrays] | None = None
_lock = threading.Lock()
# The warehouse's file and data version as one page question read them at its start (see pinned).
_pinned: contextvars.ContextVar[tuple[str | None, str] | None] = contextvars.ContextVar("pinned", default=None)


@contextmanager
def pinned(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Within the block, lookups of the held answers and of what is kept beside them take the warehouse's file
    and data version read once on entry, instead of a statement each: a filtered drift page made seven, at 2-3
    ms apiece. The block's questions then also see one version of the data throughout. Only for questions on
    ``con``'s warehouse; a worker thread sees the pin when it runs in a copy of the caller's context
    (``contextvars.copy_context().run``)."""
    token = _pinned.set(file_and_cache_key(con) if _enabled else None)
    try:
        yield
    finally:
        _pinned.reset(token)


def enable() -> None:
    """Serve filtered scans of this process from memory (see the module notes)."""
    global _enabled
    _enabled = True


def filtered(
    con: duckdb.DuckDBPyConnection, f: Filters, window: str | None, annotator: bool, confidence: bool = False
) -> dict[str, Any] | None:
    """The columns agreement.fetch asks for, already sorted, or None when the arrays do not serve the question:
    not enabled, no filter (refresh, and pages that read stored tables), a warehouse in memory, or a window
    other than the week. Confidences held as positions come as they are held, their distinct values under
    ``confidence_levels``."""
    if window not in (None, "week"):
        return None
    scope = _scope(con, f, dated=window is not None, shared=True)
    if scope is None:
        return None
    held, keep = scope
    columns = held.columns
    names = [
        "item_idx",
        "v",
        *(["day"] if window is not None else []),
        *(["annotator_idx"] if annotator else []),
        *(["confidence"] if confidence else []),
    ]
    rows = dict(zip(names, compiled_sums.compress(keep, [columns[name] for name in names]), strict=True))
    if confidence and held.confidence_levels is not None:
        rows["confidence_levels"] = held.confidence_levels
    return rows


def in_scope(con: duckdb.DuckDBPyConnection, f: Filters) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Every held column and the mask of the answers ``f`` keeps, for a question that reads a few columns once
    and need not copy them out; None where ``filtered`` is None. The columns are shared: read-only."""
    scope = _scope(con, f)
    return None if scope is None else (scope[0].columns, scope[1])


def _scope(
    con: duckdb.DuckDBPyConnection, f: Filters, dated: bool = False, shared: bool = False
) -> tuple[AnswerArrays, np.ndarray] | None:
    if not _enabled or f.is_empty():
        return None
    held = _arrays(con)
    return None if held is None else (held, mask(con, held, f, dated, shared))


def holds(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether this process holds the answers of ``con``'s current data, so that ``kept`` keeps."""
    return _enabled and _arrays(con, fetch=False) is not None


def kept(con: duckdb.DuckDBPyConnection, name: str, compute: Callable[[], T]) -> T:
    """``compute()``, once per version of the data in a process that holds the answers: small derived tables
    that every filtered question reads whole (each item's consensus, the dated predictions) are kept beside
    the arrays and dropped with them. Elsewhere (also before a filtered question has fetched the arrays for
    this version: an unfiltered one never holds them) it is just ``compute()``. The result is shared: callers
    must not change it."""
    held = _arrays(con, fetch=False) if _enabled else None
    if held is None:
        return compute()
    if name not in held.kept:
        held.kept[name] = compute()
    return held.kept[name]


def _arrays(con: duckdb.DuckDBPyConnection, fetch: bool = True) -> AnswerArrays | None:
    """The arrays of this warehouse file and version; fetched when not held yet, unless ``fetch`` is False."""
    global _held
    path, version = _pinned.get() or file_and_cache_key(con)
    if path is None:
        return None
    key = (path, version)
    with _lock:  # one build at a time: two concurrent builds would hold the answers twice
        if not fetch and (_held is None or _held[0] != key):
            return None
        if _held is None or _held[0] != key:
            _held = None  # the old arrays go before the new ones are fetched
            _held = (key, build(con))
        return _held[1]


def build(con: duckdb.DuckDBPyConnection) -> AnswerArrays:
    dictionaries: dict[str, list[str]] = {
        column: list(con.execute(DISTINCT.replace("{c}", column)).fetchall()[0][0] or [])  # column names from CODED
        for column in CODED
    }
    raw = arrays(con, ROWS, [NO_DAY, NO_DAY, *dictionaries.values()])
    key = np.subtract(raw["item_idx"], 0, dtype=np.int64)
    dated = raw["day"] != NO_DAY
    first = int(raw["day"][dated].min(initial=0))
    day = np.where(dated, raw["day"].astype(np.int64) - first + 1, 0)  # small and non-negative, NO_DAY first
    day_bits = int(day.max(initial=0)).bit_length()
    value_bits = int(raw["v"].max(initial=0)).bit_length()
    key <<= day_bits + value_bits
    key |= day << value_bits
    key |= raw["v"].astype(np.int64)
    order = np.argsort(key)
    del key, day
    columns = {name: _narrow(column[order]) for name, column in raw.items()}
    codes, levels = pd.factorize(columns["confidence"], use_na_sentinel=False)
    if levels.size > np.iinfo(np.uint8).max + 1:
        return AnswerArrays(columns, dictionaries, None)
    # Confidences are stated on a coarse scale (twenty steps in the demo): held as a byte each, a position in
    # their distinct values. A filtered drift question copied the kept rows' doubles, its widest column, in
    # more time than all its other columns together.
    columns["confidence"] = codes.astype(np.uint8)
    return AnswerArrays(columns, dictionaries, np.asarray(levels, dtype=np.float64))


def _narrow(column: np.ndarray) -> np.ndarray:
    """The smallest integer type that holds the column: the arrays stay in memory for the life of the data."""
    if column.size == 0 or column.dtype.kind != "i":
        return column
    for kind in (np.int8, np.int16, np.int32):
        info = np.iinfo(kind)
        if info.min <= column.min() and column.max() <= info.max:
            return column.astype(kind)
    return column


def mask(
    con: duckdb.DuckDBPyConnection, held: AnswerArrays, f: Filters, dated: bool = False, shared: bool = False
) -> np.ndarray:
    """The answers Filters.where keeps, as a boolean array over ``held``; with ``dated`` only those of them
    with a week (the week window's scans). The caller's own, which it may change, unless ``shared``: then it
    may be the kept array itself, read-only.

    The part of the mask that is not about dates is kept for the last few filters (MASKS_KEPT): a page asks
    several questions of one filter, and the overview asks for two periods of it, so the lookups of branch,
    tier or source in every answer are made once per filter rather than once per question."""
    c = held.columns
    keep = _undated_mask(con, held, f.model_copy(update={"start": None, "end": None}), dated)
    if shared and f.start is None and f.end is None:
        return keep
    keep = keep.copy()
    if f.start is not None:
        keep &= c["created"] >= _days(f.start)
    if f.end is not None:
        keep &= (c["created"] <= _days(f.end)) & (c["created"] != NO_DAY)
    return keep


# Undated masks kept per version of the data: one byte per answer each (10 MB at ten million answers). A filter
# takes two on a drift page, which scans only the answers with a week (see mask).
MASKS_KEPT = 6


def _undated_mask(con: duckdb.DuckDBPyConnection, held: AnswerArrays, f: Filters, dated: bool) -> np.ndarray:
    key = f.model_dump_json() + (" dated" if dated else "")
    with _lock:
        kept = held.masks.pop(key, None)
        if kept is not None:
            held.masks[key] = kept  # the most recently used last
            return kept
    c = held.columns
    keep = np.ones(held.size, dtype=bool)
    if f.tree_version is not None:
        keep &= c["source_version"] == f.tree_version
    if f.branch is not None:
        name = "branch:" + f.branch
        if name not in held.kept:
            held.kept[name] = _member_table(arrays(con, IN_BRANCH, [f.branch])["item_idx"], c["item_idx"])
        keep &= held.kept[name][c["item_idx"]]
    for column, field in CODED.items():
        wanted = getattr(f, field)
        if wanted:
            positions = {value: i + 1 for i, value in enumerate(held.dictionaries[column])}
            keep &= _lookup(np.array([positions[v] for v in wanted if v in positions], dtype=np.int64), c[column])
    if f.annotators:
        keep &= _lookup(arrays(con, ANNOTATORS, [list(f.annotators)])["annotator_idx"], c["annotator_idx"])
    if dated:
        keep &= c["day"] != NO_DAY
    keep.flags.writeable = False
    with _lock:
        held.masks[key] = keep
        while len(held.masks) > MASKS_KEPT:
            held.masks.pop(next(iter(held.masks)))
    return keep


def _days(day: Any) -> int:
    return int(np.datetime64(day, "D").astype(np.int64))


def _lookup(members: np.ndarray, column: np.ndarray) -> np.ndarray:
    """column IN members for non-negative integer columns, by indexing a table of members: linear, where
    np.isin sorts."""
    return _member_table(members, column)[column]


def _member_table(members: np.ndarray, column: np.ndarray) -> np.ndarray:
    """member_table indexed by every value of ``column``."""
    return member_table(members, max(int(column.max(initial=0)), int(members.max(initial=-1))) + 1)


def member_table(members: np.ndarray, size: int) -> np.ndarray:
    """A boolean table of ``size`` non-negative indices (items, annotators), True at ``members`` (those past the
    end left out): a membership test is then one indexing, linear where np.isin sorts."""
    table = np.zeros(size, dtype=bool)
    members = np.asarray(members, dtype=np.int64)
    table[members[members < size]] = True
    return table
