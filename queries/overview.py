"""The leadership overview: headline numbers for a period beside the period before it, and weekly trends.

A headline without a comparison cannot say whether things got better, so every tile carries the same
number for the previous period of equal length. Without a date filter the period is the last four weeks
of data (ending on the newest answer in scope), compared with the four weeks before.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel

from queries import agreement, answer_arrays, compiled_sums, frame_writes, overview_cells, soft_labels
from queries.filters import Filters
from queries.governance_store import OPEN_STATUSES
from queries.results import arrays, first_row

if TYPE_CHECKING:
    from queries.refresh import RefreshContext

DEFAULT_DAYS = 28
TREND_COLUMNS = ["week", "items", "annotations", "cost_per_item", "estimated_accuracy", "escalation_rate"]


class Period(BaseModel):
    start: date
    end: date
    previous_start: date
    previous_end: date


class Tile(BaseModel):
    """One headline number; ``previous`` is None when the earlier period has no data or no such number."""

    key: str
    label: str
    value: float | None
    previous: float | None
    kind: str  # count, share, ratio or money: how to print it
    help: str

    @property
    def delta(self) -> float | None:
        if self.value is None or self.previous is None:
            return None
        return self.value - self.previous


class Overview(BaseModel):
    period: Period | None
    tiles: list[Tile]


def _clean(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) or math.isinf(number) else number


def period_of(con: duckdb.DuckDBPyConnection, f: Filters) -> Period | None:
    """The period the tiles describe and the one before it; None when no answer is in scope."""
    if not soft_labels.table_exists(con, "d_answers"):
        return None
    if f.start is not None and f.end is not None:
        start, end = f.start, f.end
    else:
        newest = _newest_day(con, f)
        if newest is None:
            return None
        end = f.end or newest
        start = f.start or end - timedelta(days=DEFAULT_DAYS - 1)
    length = (end - start).days + 1
    previous_end = start - timedelta(days=1)
    previous_start = previous_end - timedelta(days=length - 1)
    return Period(start=start, end=end, previous_start=previous_start, previous_end=previous_end)


def _newest_day(con: duckdb.DuckDBPyConnection, f: Filters) -> date | None:
    """The day of the newest answer in scope: a maximum over the answers held in memory where a process holds
    them (answer_arrays), else in SQL.

    Under a filter the stored cells can express (Filters.cell_where), the newest week with a cell in scope
    is read from them first and only the answers from that week on are scanned: the newest answer in scope
    lies in that week, and the answers are stored in time order, so the scan skips all but the last row
    groups instead of testing a branch, source or tier on every answer.
    """
    scope = answer_arrays.in_scope(con, f)
    if scope is not None:
        newest = compiled_sums.masked_max(scope[1], scope[0]["created"], answer_arrays.NO_DAY)
        return None if newest == answer_arrays.NO_DAY else date(1970, 1, 1) + timedelta(days=newest)
    where, params = f.where("a")
    cells = f.cell_where("c") if soft_labels.table_exists(con, CELLS_TABLE) else None
    if cells is not None:
        cell_where, cell_params = cells
        week = first_row(con.execute("SELECT max(c.week) FROM " + CELLS_TABLE + " c WHERE " + cell_where, cell_params))  # noqa: S608 - predicate from Filters.cell_where, fixed table
        if week is None or week[0] is None:
            return None
        where, params = where + " AND a.created_at >= ?", [*params, week[0]]
    row = first_row(con.execute("SELECT max(a.created_at)::DATE FROM d_answers a WHERE " + where, params))  # noqa: S608 - predicate from Filters.where
    return None if row is None else row[0]


def _within(f: Filters, start: date, end: date) -> Filters:
    return Filters.model_validate({**f.model_dump(), "start": start, "end": end})


def _ds_items(con: duckdb.DuckDBPyConnection) -> str:
    """Each item's Dawid-Skene confidence, or an empty relation before the model has been fitted."""
    if soft_labels.table_exists(con, "d_ds_items"):
        return "(SELECT item_idx, ds_p FROM d_ds_items)"
    return "(SELECT 0 AS item_idx, NULL::DOUBLE AS ds_p WHERE FALSE)"


def _outcomes(con: duckdb.DuckDBPyConnection) -> str:
    """Whether each item was escalated, or an empty relation before the escalation step has run."""
    if soft_labels.table_exists(con, "d_item_outcomes"):
        return "(SELECT item_idx, escalated FROM d_item_outcomes)"
    return "(SELECT 0 AS item_idx, NULL::BOOLEAN AS escalated WHERE FALSE)"


Volume = tuple[int, int, float | None, float | None, int, int]
NO_VOLUME: Volume = (0, 0, None, None, 0, 0)


def _volumes(con: duckdb.DuckDBPyConnection, f: Filters, period: Period) -> tuple[Volume, Volume]:
    """Items, answers, spend per item, the mean Dawid-Skene confidence of the items' labels, and the items
    with an escalation outcome and the escalated ones among them, for the period and for the one before.

    One pass over both periods' answers, split by the period's first day: the filter's semi-joins (a branch
    is a lookup in every item's lineage) and the joins to the per-item tables are built once, not per period.
    """
    both = _within(f, period.previous_start, period.end)
    scope = answer_arrays.in_scope(con, both)
    if scope is not None:
        return _volumes_held(con, period, *scope)
    answers, params = both.answers_from()
    rows = con.execute(
        "WITH s AS (SELECT a.item_idx, a.created_at >= ? AS current, count(*) AS n, sum(a.cost) AS cost "
        "FROM " + answers + " GROUP BY ALL) "
        "SELECT s.current, count(*), coalesce(sum(s.n), 0), sum(s.cost) / nullif(count(*), 0), avg(d.ds_p), "
        "count(o.item_idx), count(*) FILTER (WHERE o.escalated) "
        "FROM s LEFT JOIN " + _ds_items(con) + " d USING (item_idx) "
        "LEFT JOIN " + _outcomes(con) + " o USING (item_idx) GROUP BY s.current",
        [period.start, *params],
    ).fetchall()
    found = {
        bool(r[0]): (int(r[1]), int(r[2]), _clean(r[3]), _clean(r[4]), int(r[5]), int(r[6])) for r in rows
    }
    return found.get(True, NO_VOLUME), found.get(False, NO_VOLUME)


@dataclass(frozen=True)
class _PerItem:
    """Each item's Dawid-Skene confidence (NaN: none) and escalation outcome (-1: none, 1: escalated, else 0),
    indexed by item_idx."""

    confidence: np.ndarray
    outcome: np.ndarray


def _per_item(con: duckdb.DuckDBPyConnection) -> _PerItem:
    ds = arrays(con, "SELECT item_idx, ds_p FROM " + _ds_items(con))  # noqa: S608 - fixed relation
    outcomes = arrays(con, "SELECT item_idx, coalesce(escalated, FALSE) AS escalated FROM " + _outcomes(con))  # noqa: S608 - fixed relation
    size = int(max(ds["item_idx"].max(initial=-1), outcomes["item_idx"].max(initial=-1))) + 1
    confidence = np.full(size, np.nan)
    confidence[ds["item_idx"]] = np.asarray(ds["ds_p"], dtype=float)
    outcome = np.full(size, -1, dtype=np.int8)
    outcome[outcomes["item_idx"]] = np.asarray(outcomes["escalated"], dtype=np.int8)
    return _PerItem(confidence, outcome)


def _volumes_held(
    con: duckdb.DuckDBPyConnection, period: Period, columns: dict[str, np.ndarray], keep: np.ndarray
) -> tuple[Volume, Volume]:
    """_volumes from the answers held in memory (answer_arrays) in one compiled pass: an item's answers are
    contiguous there, so a period's distinct items are where the item index changes, and its per-item numbers
    are lookups in tables kept beside the answers."""
    per_item = answer_arrays.kept(con, "overview:per_item", lambda: _per_item(con))
    start = (period.start - date(1970, 1, 1)).days
    sums = compiled_sums.period_items(
        keep, columns["item_idx"], columns["created"], start, columns["cost"], per_item.confidence, per_item.outcome
    )
    found = []
    for now in (True, False):
        items, n, ds_sum, ds_n, outcomes, escalated, cost, costed = sums[int(now)].tolist()
        found.append(
            NO_VOLUME
            if items == 0
            else (
                int(items),
                int(n),
                _clean(cost / items) if costed else None,
                _clean(ds_sum / ds_n) if ds_n else None,
                int(outcomes),
                int(escalated),
            )
        )
    return found[0], found[1]


def open_proposals(con: duckdb.DuckDBPyConnection) -> int:
    """Change proposals not yet applied, rejected or withdrawn."""
    if not soft_labels.table_exists(con, "proposals"):
        return 0
    row = first_row(con.execute("SELECT count(*) FROM proposals WHERE list_contains(?, status)", [list(OPEN_STATUSES)]))
    return int(row[0]) if row else 0


def _numbers(con: duckdb.DuckDBPyConnection, alpha: float, volume: Volume) -> dict[str, float | None]:
    """The tiles' numbers for one period from its alpha and its _volumes part."""
    items, answers, cost, accuracy, outcomes, escalated = volume
    if items == 0:
        return {"items": 0, "annotations": 0, "alpha": None, "estimated_accuracy": None,
                "escalation_rate": None, "cost_per_item": None}
    # escalation.escalation_summary's rate over the same items (those with an answer in scope), without
    # the rest of that summary.
    has_outcomes = soft_labels.table_exists(con, "d_item_outcomes")
    rate = (escalated / outcomes if outcomes else 0.0) if has_outcomes else None
    return {
        "items": items,
        "annotations": answers,
        "alpha": _clean(alpha),
        "estimated_accuracy": accuracy,
        "escalation_rate": _clean(rate),
        "cost_per_item": cost,
    }


TILES: tuple[tuple[str, str, str, str], ...] = (
    ("items", "Items labelled", "count", "Items with at least one answer in the period."),
    ("annotations", "Annotations", "count", "Answers given in the period."),
    ("alpha", "Agreement (alpha)", "ratio", "Krippendorff's alpha (nominal) over the period's answers; 1 is perfect."),
    ("estimated_accuracy", "Estimated accuracy", "share",
     "Mean probability, under the Dawid-Skene model, that an item's consensus label is right."),
    ("escalation_rate", "Escalation rate", "share", "Share of the period's items sent to an expert."),
    ("cost_per_item", "Cost per item", "money", "Spend on answers per labelled item."),
)


def overview(con: duckdb.DuckDBPyConnection, f: Filters) -> Overview:
    """Tiles for the period and the previous one; open proposals are a count now, with no previous value."""
    proposals = float(open_proposals(con))
    proposal_tile = Tile(
        key="open_proposals", label="Open change proposals", value=proposals, previous=None, kind="count",
        help="Tree change proposals waiting for review, approval or application.",
    )
    result = _stored_tiles(con) if f.is_empty() and soft_labels.table_exists(con, TILES_TABLE) else _tiles(con, f)
    return Overview(period=result.period, tiles=[*result.tiles, proposal_tile])


def _tiles(con: duckdb.DuckDBPyConnection, f: Filters) -> Overview:
    """The period's tiles (without open proposals) computed from the answers."""
    period = period_of(con, f)
    if period is None:
        empty = [Tile(key=k, label=lbl, value=None, previous=None, kind=kind, help=h) for k, lbl, kind, h in TILES]
        return Overview(period=None, tiles=empty)
    periods = ((period.start, period.end), (period.previous_start, period.previous_end))
    if f.is_empty():
        # Refresh, inside its transaction: a second cursor would not see the tables it has just written.
        current, previous = _volumes(con, f, period)
        alpha_now, alpha_before = (agreement.alpha(con, _within(f, *p), bootstrap=0).value for p in periods)
    else:
        # A page: the volumes are counting passes (SQL where no answers are held), alpha compiled sums; on two
        # threads (the volumes on their own cursor) they overlap.
        with ThreadPoolExecutor(max_workers=1) as pool, con.cursor() as cursor:
            volumes = pool.submit(_volumes, cursor, f, period)
            alpha_now, alpha_before = (agreement.alpha(con, _within(f, *p), bootstrap=0).value for p in periods)
            current, previous = volumes.result()
    now = _numbers(con, alpha_now, current)
    before = _numbers(con, alpha_before, previous)
    had_data = before["items"] not in (0, None)
    tiles = [
        Tile(key=k, label=lbl, value=now[k], previous=before[k] if had_data else None, kind=kind, help=h)
        for k, lbl, kind, h in TILES
    ]
    return Overview(period=period, tiles=tiles)


# The unfiltered overview tiles and the weekly trends' additive counts per cell, kept at refresh: the page
# everyone opens first would otherwise scan every answer several times, and a sidebar filter on source,
# segment, branch, tier, stage or whole weeks would scan them all again. Alpha per week is not kept here:
# the agreement step stores it. The cells are counted by queries/overview_cells.
TILES_TABLE = "d_overview_tiles"
CELLS_TABLE = overview_cells.TABLE
PERIOD_FIELDS = ("start", "end", "previous_start", "previous_end")


def refresh_step(con: duckdb.DuckDBPyConnection, ctx: RefreshContext) -> str:
    """Global numbers (the period ends at the newest answer), so always in full; reads the Dawid-Skene and
    escalation outcome tables, so it runs after their steps. The cells are written first: the tiles' period
    is found through them."""
    overview_cells.build(con, _per_item(con).confidence)
    result = _tiles(con, Filters())
    period = result.period.model_dump() if result.period is not None else dict.fromkeys(PERIOD_FIELDS)
    tiles = pd.DataFrame(
        {
            "key": [t.key for t in result.tiles],
            "value": pd.Series([t.value for t in result.tiles], dtype="float64"),
            "previous": pd.Series([t.previous for t in result.tiles], dtype="float64"),
            **{name: pd.Series([period[name]] * len(result.tiles), dtype="datetime64[ns]") for name in PERIOD_FIELDS},
        }
    )
    frame_writes.store(con, TILES_TABLE, tiles if result.period is not None else tiles.iloc[:0])
    return "full"


def _stored_tiles(con: duckdb.DuckDBPyConnection) -> Overview:
    stored = con.execute("SELECT * FROM " + TILES_TABLE).df()  # noqa: S608 - fixed table name
    if stored.empty:
        return _tiles(con, Filters())
    first = stored.iloc[0]
    period = Period(**{name: first[name].date() for name in PERIOD_FIELDS})
    values = stored.set_index("key")
    tiles = [
        Tile(key=k, label=lbl, value=_clean(values.at[k, "value"]), previous=_clean(values.at[k, "previous"]),
             kind=kind, help=h)
        for k, lbl, kind, h in TILES
    ]
    return Overview(period=period, tiles=tiles)


def weekly_trends(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per week: items answered, answers, spend per item, mean Dawid-Skene confidence, share escalated and
    nominal alpha."""
    weekly = weekly_counts(con, f)
    return with_alpha(weekly, pd.DataFrame() if weekly.empty else agreement.agreement_table(con, f, by="week"))


def weekly_counts(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """weekly_trends without alpha: the dashboard takes alpha from the weekly agreement table it also shows on
    the Label tree page, so that a filter computes that table once for both."""
    if not soft_labels.table_exists(con, "d_answers"):
        return soft_labels.empty_frame(TREND_COLUMNS)
    cells = f.cell_where("c") if soft_labels.table_exists(con, CELLS_TABLE) else None
    return _weekly_counts(con, f) if cells is None else _weekly_from_cells(con, *cells)


def with_alpha(weekly: pd.DataFrame, alphas: pd.DataFrame) -> pd.DataFrame:
    """weekly_counts' rows with each week's nominal alpha from agreement_table(by="week") (NaN without one)."""
    if weekly.empty:
        return soft_labels.empty_frame([*TREND_COLUMNS, "alpha"])
    if alphas.empty:
        return weekly.assign(alpha=float("nan"))
    return weekly.merge(
        alphas[["group", "alpha_nominal"]].rename(columns={"group": "week", "alpha_nominal": "alpha"}),
        on="week", how="left",
    )


def _weekly_from_cells(con: duckdb.DuckDBPyConnection, where: str, params: list[object]) -> pd.DataFrame:
    """_weekly_counts summed from the stored cells the predicate (Filters.cell_where) keeps, in its types."""
    frame = con.execute(
        "SELECT c.week, CAST(sum(c.items) AS BIGINT) AS items, CAST(sum(c.annotations) AS HUGEINT) AS annotations, "  # noqa: S608 - predicate from Filters.cell_where, fixed table
        "sum(c.cost) / sum(c.items) AS cost_per_item, sum(c.ds_sum) / nullif(sum(c.ds_n), 0) AS estimated_accuracy, "
        "sum(c.escalated) / sum(c.items) AS escalation_rate FROM " + CELLS_TABLE + " c WHERE " + where + " "
        "GROUP BY c.week ORDER BY c.week",
        params,
    ).df()
    return _iso_weeks(frame)


def _iso_weeks(frame: pd.DataFrame) -> pd.DataFrame:
    frame["week"] = pd.to_datetime(frame["week"]).dt.strftime("%Y-%m-%d")
    return frame


def _weekly_counts(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """The weekly trends without alpha, weeks as ISO dates."""
    where, params = f.where("a")
    frame = con.execute(
        "WITH w AS (SELECT a.week, a.item_idx, count(*) AS n, sum(a.cost) AS cost FROM d_answers a WHERE "  # noqa: S608 - predicate from Filters.where, fixed relations
        + where + " GROUP BY ALL), "
        "esc AS (" + overview_cells.ESCALATED + ") "
        "SELECT w.week, count(*) AS items, sum(w.n) AS annotations, sum(w.cost) / count(*) AS cost_per_item, "
        "avg(d.ds_p) AS estimated_accuracy, avg(CASE WHEN esc.item_idx IS NULL THEN 0 ELSE 1 END) AS escalation_rate "
        "FROM w LEFT JOIN " + _ds_items(con) + " d USING (item_idx) LEFT JOIN esc USING (item_idx) "
        "WHERE w.week IS NOT NULL GROUP BY w.week ORDER BY w.week",
        params,
    ).df()
    return _iso_weeks(frame)
