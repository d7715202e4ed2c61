"""The overview's weekly cells, counted in one compiled walk over the answers.

A cell is (week, the item's tree version, source, segment and consensus node, tier, stage) in the four groupings
Filters.cell_where picks from: by tier, by stage, both or neither (``by_tier``/``by_stage``; a cell that does not
group by tier has no tier). It holds its answers and their spend, and its items: the (week, item) units, or
(week, item, tier) and so on, whose answers fall in it, each with the item's Dawid-Skene confidence and whether
it was escalated. Any union of cells then sums to what the live queries compute from the answers.

In SQL that was four hash aggregations of every answer on wide string keys (GROUPING SETS) and a join and
aggregation of their seven million rows, 4 to 5 s of a refresh at ten million answers. Here the answers are
bucketed by item (a counting sort), each item's few answers are ordered by week, tier and stage in place, and each
(week, item) unit adds its groups straight into the cells: about 1.2 s on two threads, a quarter of the CPU time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import duckdb
import numba
import numpy as np
import pyarrow as pa
from numba import types
from numba.typed import Dict

from queries import answer_arrays, compiled_sums, frame_writes, item_profiles
from queries.results import arrays

TABLE = "d_overview_cells"
# Tier and stage as 1-based positions in their sorted distinct values (0: NULL); undated answers are in no week.
ANSWERS = """
SELECT a.item_idx, a.day,
       CAST(coalesce(list_position(CAST(? AS VARCHAR[]), a.tier), 0) AS INTEGER) AS tier,
       CAST(coalesce(list_position(CAST(? AS VARCHAR[]), a.stage), 0) AS INTEGER) AS stage,
       CAST(coalesce(a.cost, 'NaN') AS DOUBLE) AS cost
FROM d_answers a WHERE a.day IS NOT NULL
"""
PROFILES = "CREATE OR REPLACE TEMP TABLE _overview_profiles AS " + item_profiles.PROFILES
# The items the escalation log names: the overview's escalation rate counts these, stored or live.
ESCALATED = "SELECT DISTINCT x.item_idx FROM escalations e JOIN d_item_index x USING (item_id)"
CELLS = (
    "CREATE OR REPLACE TABLE " + TABLE + " AS "
    "SELECT CAST(DATE '1970-01-01' + c.day AS TIMESTAMP) AS week, p.tree_version, p.source, p.segment, "
    "p.consensus_node, c.tier, c.stage, c.by_tier, c.by_stage, c.items, c.annotations, c.cost, c.ds_sum, c.ds_n, "
    "c.escalated "
    "FROM _cells c LEFT JOIN _overview_profiles p USING (profile)"
)
# Per cell, in the kernel's table: items, answers, spend, answers with a stated cost, summed confidence, items
# with a confidence, escalated items.
ITEMS, ANSWERED, COST, COSTED, DS_SUM, DS_N, ESCALATED_ITEMS = range(7)


def build(con: duckdb.DuckDBPyConnection, confidence: np.ndarray) -> None:
    """Write the cells; ``confidence`` is each item's Dawid-Skene confidence by item index, NaN for none."""
    tiers, stages = (
        list(con.execute(answer_arrays.DISTINCT.replace("{c}", column)).fetchall()[0][0] or [])  # fixed columns
        for column in ("tier", "stage")
    )
    answers = arrays(con, ANSWERS, [tiers, stages])
    con.execute(PROFILES)
    items = arrays(con, item_profiles.of_items("_overview_profiles"))
    escalated = arrays(con, ESCALATED)["item_idx"]
    size = 1 + max(int(a.max(initial=-1)) for a in (answers["item_idx"], items["item_idx"], escalated))
    profile = np.full(size, -1, dtype=np.int64)
    profile[items["item_idx"]] = items["profile"]
    n_profiles = int(items["profile"].max(initial=-1)) + 1
    confidence = np.pad(confidence[:size], (0, max(size - confidence.size, 0)), constant_values=np.nan)
    was_escalated = np.zeros(size, dtype=np.bool_)
    was_escalated[escalated] = True
    first_day = int(answers["day"].min(initial=0))
    # Each answer's (day, tier, stage) in bit fields of one key, so that the walk finds runs by shifts and masks.
    stage_bits, tier_bits = len(stages).bit_length(), len(tiers).bit_length()
    packed = np.subtract(answers["day"], first_day, dtype=np.int64)
    packed <<= tier_bits
    packed |= answers["tier"]
    packed <<= stage_bits
    packed |= answers["stage"]
    item, columns = answers.pop("item_idx"), {"packed": packed, "cost": answers.pop("cost")}
    del packed, answers
    start = compiled_sums.by_item(item, size, columns)
    del item
    args = (start, columns["packed"], columns["cost"], profile, confidence, was_escalated, n_profiles, len(tiers),
            len(stages), tier_bits, stage_bits)
    # Two halves of the items on two threads (the walk releases the GIL), their cells merged after: while the
    # overview step walks, nothing else in the refresh runs.
    middle = size // 2
    with ThreadPoolExecutor(max_workers=1) as pool:
        second = pool.submit(_cells, *args, middle, size)
        first = _cells(*args, 0, middle)
        keys, sums = _merged(first, second.result())
    del columns, args
    frame_writes.run_over(con, "_cells", _frame(keys, sums, first_day, n_profiles, tiers, stages), CELLS)
    con.execute("DROP TABLE _overview_profiles")


def _merged(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The cells of several walks, those with the same key added up."""
    keys, inverse = np.unique(np.concatenate([k for k, _ in parts]), return_inverse=True)
    stacked = np.concatenate([sums for _, sums in parts])
    summed = np.zeros((keys.size, stacked.shape[1]))
    np.add.at(summed, inverse, stacked)
    return keys, summed


def _frame(
    keys: np.ndarray, sums: np.ndarray, first_day: int, n_profiles: int, tiers: list[str], stages: list[str]
) -> pa.Table:
    """The cells with their packed keys unpacked (see _cells): day, profile, and tier and stage as text."""
    tier_slots, stage_slots = len(tiers) + 2, len(stages) + 2
    stage_slot = keys % stage_slots
    tier_slot = keys // stage_slots % tier_slots
    rest = keys // (stage_slots * tier_slots)
    return pa.table(
        {
            "day": (rest // (n_profiles + 1) + first_day).astype(np.int32),
            "profile": (rest % (n_profiles + 1)).astype(np.int32),
            "tier": frame_writes.dictionary(np.maximum(tier_slot - 2, 0), tiers or [""], null=tier_slot < 2),
            "stage": frame_writes.dictionary(np.maximum(stage_slot - 2, 0), stages or [""], null=stage_slot < 2),
            "by_tier": tier_slot > 0,
            "by_stage": stage_slot > 0,
            "items": sums[:, ITEMS].astype(np.int64),
            "annotations": sums[:, ANSWERED].astype(np.int64),
            # NULL where no answer states a cost, or no item has a confidence, as SQL's sum of no values.
            "cost": pa.array(sums[:, COST], mask=sums[:, COSTED] == 0),
            "ds_sum": pa.array(sums[:, DS_SUM], mask=sums[:, DS_N] == 0),
            "ds_n": sums[:, DS_N].astype(np.int64),
            "escalated": sums[:, ESCALATED_ITEMS].astype(np.int64),
        }
    )


@numba.njit(cache=True, nogil=True)
def _add(
    table: np.ndarray, keys: np.ndarray, used: int, unit_cells: np.ndarray, unit_key: int, slot: int, answers: int,
    cost: float, costed: int, confidence: float, escalated: bool,
) -> int:
    """One group of a unit into its cell (``unit_cells``: the cells of the unit's week and profile by slot), the
    cell made on first sight in the table's next row; returns the rows used."""
    at = unit_cells[slot]
    if at < 0:
        at = used
        unit_cells[slot] = at
        keys[at] = unit_key * unit_cells.size + slot
        used += 1
    table[at, ITEMS] += 1
    table[at, ANSWERED] += answers
    table[at, COST] += cost
    table[at, COSTED] += costed
    if confidence == confidence:
        table[at, DS_SUM] += confidence
        table[at, DS_N] += 1
    table[at, ESCALATED_ITEMS] += escalated
    return used


@numba.njit(cache=True, nogil=True)
def _cells(
    start: np.ndarray, packed: np.ndarray, cost: np.ndarray, profile: np.ndarray, confidence: np.ndarray,
    escalated: np.ndarray, n_profiles: int, n_tiers: int, n_stages: int, tier_bits: int, stage_bits: int, low: int,
    high: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's packed key and sums, from the answers of items [low, high) (``start``: where each item's rows
    begin in ``packed``, the answers' (day, tier, stage) keys, and ``cost``; both are reordered in place). A cell
    key packs
    (day, profile) and (tier slot, stage slot), a slot 0 for a cell that does not group by it, else 1 + the code
    (1 for NULL); an item without a profile (no consensus) takes profile n_profiles, which the profile table does
    not hold. A unit looks its (day, profile) up once in a hash map, and its groups' cells by slot in that pair's
    row of a dense table: a hash lookup per group cost four times the rest of the walk."""
    tier_slots, stage_slots = n_tiers + 2, n_stages + 2
    day_shift = tier_bits + stage_bits
    tier_mask, stage_mask = (1 << tier_bits) - 1, (1 << stage_bits) - 1
    by_stage = np.zeros((n_stages + 1, 3))  # per stage code within a unit: answers, spend, costed answers
    pairs = Dict.empty(key_type=types.int64, value_type=types.int64)
    pair_cells = np.full((1 << 12, tier_slots * stage_slots), -1, dtype=np.int64)
    table = np.zeros((1 << 16, 7))
    keys = np.zeros(1 << 16, dtype=np.int64)
    used = 0
    for it in range(low, high):
        low, high = start[it], start[it + 1]
        # The item's answers by (day, tier, stage): an insertion sort, as an item has a few dozen at most.
        for j in range(low + 1, high):
            k, c = packed[j], cost[j]
            at = j
            while at > low and packed[at - 1] > k:
                packed[at] = packed[at - 1]
                cost[at] = cost[at - 1]
                at -= 1
            packed[at] = k
            cost[at] = c
        own = profile[it] if profile[it] >= 0 else n_profiles
        p, esc = confidence[it], escalated[it]
        j = low
        while j < high:  # each (day, item) unit, each tier's run in it, and each (tier, stage) run in that
            unit = packed[j] >> day_shift
            unit_key = unit * (n_profiles + 1) + own
            if unit_key in pairs:
                pair = pairs[unit_key]
            else:
                pair = len(pairs)
                pairs[unit_key] = pair
                if pair == pair_cells.shape[0]:
                    pair_cells = np.concatenate((pair_cells, np.full_like(pair_cells, -1)))
            unit_cells = pair_cells[pair]
            if used + unit_cells.size > keys.size:  # room for every cell the unit could make
                table = np.concatenate((table, np.zeros_like(table)))
                keys = np.concatenate((keys, np.zeros_like(keys)))
            unit_n, unit_cost, unit_costed = 0, 0.0, 0
            while j < high and packed[j] >> day_shift == unit:
                run = packed[j] >> stage_bits
                t = run & tier_mask
                t_n, t_cost, t_costed = 0, 0.0, 0
                while j < high and packed[j] >> stage_bits == run:
                    same = packed[j]
                    s = same & stage_mask
                    s_n, s_cost, s_costed = 0, 0.0, 0
                    while j < high and packed[j] == same:
                        c = cost[j]
                        s_n += 1
                        if c == c:
                            s_cost += c
                            s_costed += 1
                        j += 1
                    used = _add(
                        table, keys, used, unit_cells, unit_key, (1 + t) * stage_slots + 1 + s, s_n, s_cost, s_costed,
                        p, esc,
                    )
                    by_stage[s, 0] += s_n
                    by_stage[s, 1] += s_cost
                    by_stage[s, 2] += s_costed
                    t_n, t_cost, t_costed = t_n + s_n, t_cost + s_cost, t_costed + s_costed
                used = _add(
                    table, keys, used, unit_cells, unit_key, (1 + t) * stage_slots, t_n, t_cost, t_costed, p, esc
                )
                unit_n, unit_cost, unit_costed = unit_n + t_n, unit_cost + t_cost, unit_costed + t_costed
            for s in range(n_stages + 1):
                if by_stage[s, 0] > 0:
                    used = _add(
                        table, keys, used, unit_cells, unit_key, 1 + s, int(by_stage[s, 0]), by_stage[s, 1],
                        int(by_stage[s, 2]), p, esc,
                    )
                    by_stage[s, :] = 0.0
            used = _add(table, keys, used, unit_cells, unit_key, 0, unit_n, unit_cost, unit_costed, p, esc)
    return keys[:used], table[:used]
