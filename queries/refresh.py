"""`labelgov refresh`: materialise the derived tables that page queries read.

Ingest and governance writes bump ``meta.data_version``; refresh records the version it was computed
from, so the derived tables are stale exactly when the two differ, and the dashboard says so. Steps run
in order inside one transaction, so readers see either the old derived tables or the new ones.

A step receives the items touched since the last refresh and may update only those when its
mathematics allows (per-item soft labels, escalation outcomes); global models (Dawid-Skene, agreement,
drift) recompute in full and say so in the report.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
from pydantic import BaseModel

from queries import (
    agreement,
    calibration,
    contested,
    cost_quality,
    data_quality,
    derived_base,
    drift,
    escalation,
    hierarchy_accuracy,
    overview,
    reliability,
    soft_labels,
)
from queries.connection import Recorder, bulk_settings, data_version, meta_value, transaction
from queries.errors import LabelgovError
from queries.results import first_row


@dataclass
class RefreshContext:
    """What changed since the last refresh, for steps that can work incrementally."""

    full: bool
    since_batch: int
    touched_items: int
    notes: list[str] = field(default_factory=list)
    # Work a step started on a thread, by step, for a later step to finish.
    pending: dict[str, Future[Any]] = field(default_factory=dict)


class StepTiming(BaseModel):
    step: str
    seconds: float
    mode: str
    # The process's peak resident memory when the step ended: the step that raises it is the one to shrink.
    peak_gb: float


class RefreshReport(BaseModel):
    data_version: int
    as_of_version: int | None
    full: bool
    touched_items: int
    steps: list[StepTiming]
    seconds: float
    # Nothing was written since the last refresh, in the same tree version: no step ran.
    up_to_date: bool = False


Step = Callable[[duckdb.DuckDBPyConnection, RefreshContext], str]


def _base(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    derived_base.build_answers(con)
    return "full"


def _items(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    derived_base.build_items(con)
    return "full"


def _started(key: str, work: Callable[[duckdb.DuckDBPyConnection], Callable[[], Any]]) -> Step:
    """A step that reads its inputs (``work``) and runs the rest on a thread of its own, for the step _finished
    makes to store: the work is compiled passes and numpy that release the GIL, and the steps between take the
    core it leaves idle. Those steps must read none of the tables the work's results become."""

    def step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
        call = work(con)
        pool = ThreadPoolExecutor(max_workers=1)
        ctx.pending[key] = pool.submit(call)
        pool.shutdown(wait=False)  # the thread ends with the work; the future keeps its result
        return "full"

    return step


def _finished(key: str, store: Callable[[duckdb.DuckDBPyConnection, Any], str]) -> Step:
    """The step that waits for _started's work and stores its result."""

    def step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
        return store(con, ctx.pending.pop(key).result())

    return step


# The shape of the derived tables: change it whenever a step adds, drops or reshapes a table, so that
# a warehouse refreshed by another release asks for a refresh instead of failing in a page query.
DERIVED_LAYOUT = "2026-12-07.5"

# Ordered: later steps read what earlier ones wrote. Analytic modules add their step here.
# Dawid-Skene fits on a thread from "reliability" until "reliability_tables" stores it: the steps between read
# none of its tables, and their SQL takes the core the fit leaves idle (about 5 of its 28 CPU seconds at ten
# million answers). The fit reads only the answers, so it starts before the items' consensus is built. The
# cost-quality replay's small fits run likewise beside the soft labels, whose walk leaves a core partly idle.
STEPS: list[tuple[str, Step]] = [
    ("base", _base),
    ("reliability", _started("reliability", reliability.refresh_work)),
    ("items", _items),
    ("escalation", escalation.refresh_step),
    ("data_quality", data_quality.refresh_step),
    ("reliability_tables", _finished("reliability", reliability.refresh_store)),
    ("overview", overview.refresh_step),
    ("cost_quality", _started("cost_quality", cost_quality.refresh_work)),
    ("soft_labels", soft_labels.refresh_step),
    ("cost_quality_tables", _finished("cost_quality", cost_quality.refresh_store)),
    ("contested", contested.refresh_step),
    ("hierarchy_accuracy", hierarchy_accuracy.refresh_step),
    ("calibration", calibration.refresh_step),
    ("agreement", agreement.refresh_step),
    ("drift", drift.refresh_step),
]


def _peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # Linux reports kilobytes


def refreshed_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The data version the derived tables were computed from.

    None when they were never computed, or were computed by a release whose derived tables had another
    shape: the page queries of this release would not find what they read, so it counts as never.
    """
    value = meta_value(con, "refreshed_data_version", "")
    if not value or meta_value(con, "derived_layout", "") != DERIVED_LAYOUT:
        return None
    return int(value)


def require_refreshed(con: duckdb.DuckDBPyConnection) -> int:
    """refreshed_version for readers that cannot answer without the derived tables (the report, the export):
    one message that says what to run, instead of a missing table deep inside a query."""
    version = refreshed_version(con)
    if version is None:
        raise LabelgovError("the analytics have not been computed yet: run `labelgov refresh` first")
    return version


def is_stale(con: duckdb.DuckDBPyConnection) -> bool:
    return refreshed_version(con) != data_version(con)


def refresh(
    con: duckdb.DuckDBPyConnection,
    *,
    full: bool = False,
    as_of: int | Literal["latest"] | None = None,
    record: Recorder | None = None,
) -> RefreshReport:
    """Run every step; incremental steps only revisit items from batches newer than the last refresh.

    ``as_of`` pins the analytics to a tree version (``"latest"`` follows the newest again; None keeps
    the current choice). Changing it recomputes everything.

    Every write bumps the data version, so when it still equals the refreshed one in the same as-of
    tree version no step runs (``up_to_date``) unless ``full`` asks. A warehouse last refreshed before
    the as-of version was recorded is recomputed once in full, since its tables' version is unknown.
    """
    started = time.perf_counter()
    with bulk_settings(con), transaction(con):
        # Chosen inside the transaction, so a failed refresh does not leave the choice without the tables.
        if as_of is not None:
            derived_base.choose_as_of(con, None if as_of == "latest" else as_of)
        as_of_now = derived_base.as_of_version(con)
        version = data_version(con)
        previous = refreshed_version(con)
        # Every table is in the as-of version, so moving it (a choice, or a new latest tree) recomputes all.
        moved = meta_value(con, "refreshed_as_of", "") != str(as_of_now)
        if not (full or moved) and previous == version:
            # Nothing was written since: the tables already are what a refresh would compute.
            if record is not None:
                record(con, "refresh", {"data_version": version, "up_to_date": True, "as_of_version": as_of_now})
            return RefreshReport(
                data_version=version, as_of_version=as_of_now, full=False, touched_items=0, steps=[],
                seconds=round(time.perf_counter() - started, 3), up_to_date=True,
            )
        full = full or moved or previous is None
        since = 0 if full else int(meta_value(con, "refreshed_batch", "0"))
        row = first_row(con.execute("SELECT count(DISTINCT item_id) FROM annotations WHERE batch_id > ?", [since]))
        ctx = RefreshContext(full=full, since_batch=since, touched_items=int(row[0]) if row else 0)
        timings: list[StepTiming] = []
        for name, step in STEPS:
            t0 = time.perf_counter()
            mode = step(con, ctx)
            timings.append(
                StepTiming(step=name, seconds=round(time.perf_counter() - t0, 3), mode=mode, peak_gb=_peak_gb())
            )
        top = first_row(con.execute("SELECT coalesce(max(batch_id), 0) FROM ingest_batches"))
        count = int(meta_value(con, "refresh_count", "0")) + 1
        for key, value in (
            ("refreshed_data_version", version),
            ("refreshed_batch", int(top[0]) if top else 0),
            ("refreshed_as_of", as_of_now),
            ("refresh_count", count),
            ("derived_layout", DERIVED_LAYOUT),
        ):
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(value)])
        if record is not None:
            record(
                con,
                "refresh",
                {
                    "data_version": version,
                    "full": full,
                    "as_of_version": as_of_now,
                    "steps": [t.model_dump() for t in timings],
                },
            )
    return RefreshReport(
        data_version=version,
        as_of_version=as_of_now,
        full=full,
        touched_items=ctx.touched_items,
        steps=timings,
        seconds=round(time.perf_counter() - started, 3),
    )
