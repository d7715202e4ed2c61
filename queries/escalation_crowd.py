"""Each item's crowd view before escalation, the label after it, its spend and time span, in one compiled walk.

The escalation outcome table needs, per answered item: the plurality of its ``initial`` answers (ties to the node
first in tree order) and that node's share of them, how many there were, the expert's label (the latest
``adjudication`` answer, else the latest ``escalated`` one) and who gave it, the spend of the crowd, of the
experts and in all, and the item's first and last answer. In SQL these were two aggregations of every answer, by
(item, node) and by item, and a sort of the experts' answers: more than half of the outcome table's 3.7 s at ten
million answers. Here the answers are grouped by item (compiled_sums.by_item) and each item's are walked once.
"""

from __future__ import annotations

import duckdb
import numba
import numpy as np
import pyarrow as pa

from queries import compiled_sums, soft_labels
from queries.derived_base import as_of_version
from queries.results import arrays

# Stands for a missing timestamp: below every real one.
NO_TIME = np.iinfo(np.int64).min
INITIAL, ESCALATED, ADJUDICATION = 1, 2, 3  # stage codes; 0 for any other stage
# ``{items}`` restricts the items (a fixed predicate on ``a.item_idx``); parameters: NO_TIME, then the chunk's items.
ANSWERS = """
SELECT a.item_idx, a.value_idx,
       CAST(CASE a.stage WHEN 'initial' THEN 1 WHEN 'escalated' THEN 2 WHEN 'adjudication' THEN 3 ELSE 0 END
            AS TINYINT) AS stage, a.annotator_idx,
       CAST(coalesce(a.cost, 'NaN') AS DOUBLE) AS cost, coalesce(epoch_us(a.created_at), ?) AS at
FROM d_answers a WHERE {items}
"""
ORDINALS = "SELECT value_idx, ordinal FROM d_nodes WHERE tree_version = ?"


def table(con: duckdb.DuckDBPyConnection, items: str) -> pa.Table:
    """One row per answered item of ``items`` (a fixed predicate on ``a.item_idx``): item_idx, tree_version (the
    as-of version, the one d_answers holds), crowd_value (the plurality's value_idx, NULL without initial answers),
    crowd_share, crowd_answers, after_value and expert_idx (the value and annotator of the label after escalation:
    the latest adjudication answer, else the latest escalated one; NULL without either), crowd_cost, expert_cost,
    total_cost, first_at and final_at.

    Items are taken a chunk at a time, as the soft labels take them (soft_labels.item_chunks): refresh runs this
    beside the model fit, and every answer's columns at once (and once more in item order) came to 600 MB over
    its memory budget."""
    version = as_of_version(con) or 0
    nodes = arrays(con, ORDINALS, [version])
    sql = ANSWERS.replace("{items}", items + " AND a.item_idx >= ? AND a.item_idx < ?")
    parts = [_chunk(con, sql, low, high, nodes) for low, high in soft_labels.item_chunks(con)]
    return pa.concat_tables([_rows(*part, version) for part in parts]) if parts else _rows(*_empty(), version)


def _chunk(
    con: duckdb.DuckDBPyConnection, sql: str, low: int, high: int, nodes: dict[str, np.ndarray]
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The answered items of [low, high) and _walk's arrays for them."""
    answers = arrays(con, sql, [int(NO_TIME), low, high])
    n_values = 1 + max(int(answers["value_idx"].max(initial=-1)), int(nodes["value_idx"].max(initial=-1)))
    ordinal = np.full(n_values, np.iinfo(np.int64).max, dtype=np.int64)
    ordinal[nodes["value_idx"]] = nodes["ordinal"]
    start = compiled_sums.by_item(answers.pop("item_idx") - low, high - low, answers)
    walked = _walk(start, *(answers.pop(c) for c in ("value_idx", "stage", "annotator_idx", "cost", "at")), ordinal)
    item = np.flatnonzero(start[1:] > start[:-1])
    return item + low, tuple(column[item] for column in walked)


def _empty() -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """No items: _walk's ten arrays, empty."""
    ints, floats = np.zeros(0, dtype=np.int64), np.zeros(0)
    return ints, (ints, ints, ints, ints, ints, floats, floats, floats, ints, ints)


def _rows(item: np.ndarray, walked: tuple[np.ndarray, ...], version: int) -> pa.Table:
    value, top, initial, after, expert, crowd_cost, expert_cost, total_cost, first, final = walked
    return pa.table(
        {
            "item_idx": item.astype(np.int32),
            "tree_version": np.full(item.size, version, dtype=np.int32),
            "crowd_value": pa.array(value.astype(np.int32), mask=initial == 0),
            "crowd_share": pa.array(top / np.maximum(initial, 1), mask=initial == 0),
            "crowd_answers": initial,
            "after_value": pa.array(after.astype(np.int32), mask=after < 0),
            "expert_idx": pa.array(expert.astype(np.int32), mask=after < 0),
            "crowd_cost": crowd_cost,
            "expert_cost": expert_cost,
            "total_cost": total_cost,
            "first_at": pa.array(first, type=pa.timestamp("us"), mask=first == NO_TIME),
            "final_at": pa.array(final, type=pa.timestamp("us"), mask=final == NO_TIME),
        }
    )


@numba.njit(cache=True, nogil=True)
def _walk(
    start: np.ndarray, value: np.ndarray, stage: np.ndarray, annotator: np.ndarray, cost: np.ndarray, at: np.ndarray,
    ordinal: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Per item index: the plurality value of the initial answers (the most answers, then the lowest ordinal)
    with its answers and the initial answers; the value and annotator of the label after escalation (-1 when no
    expert answered; an adjudication beats an escalated answer, then the later one, an undated one last); the
    three spends (NaN costs left out, so an item without a stated cost spent 0); the first and last timestamp
    (NO_TIME when none)."""
    n_items = start.size - 1
    best = np.full(n_items, -1, dtype=np.int64)
    top = np.zeros(n_items, dtype=np.int64)
    initial = np.zeros(n_items, dtype=np.int64)
    after = np.full(n_items, -1, dtype=np.int64)
    expert = np.full(n_items, -1, dtype=np.int64)
    crowd_cost = np.zeros(n_items)
    expert_cost = np.zeros(n_items)
    total_cost = np.zeros(n_items)
    first = np.full(n_items, NO_TIME, dtype=np.int64)
    final = np.full(n_items, NO_TIME, dtype=np.int64)
    votes = np.zeros(ordinal.size, dtype=np.int64)
    voted = np.empty(ordinal.size, dtype=np.int64)
    for it in range(n_items):
        n_voted = 0
        after_stage, after_at = 0, NO_TIME
        for j in range(start[it], start[it + 1]):
            s, c, t = stage[j], cost[j], at[j]
            if c == c:
                total_cost[it] += c
                if s == INITIAL:
                    crowd_cost[it] += c
                elif s >= ESCALATED:
                    expert_cost[it] += c
            if t != NO_TIME:
                if first[it] == NO_TIME or t < first[it]:
                    first[it] = t
                if t > final[it]:
                    final[it] = t
            if s == INITIAL:
                v = value[j]
                if votes[v] == 0:
                    voted[n_voted] = v
                    n_voted += 1
                votes[v] += 1
                initial[it] += 1
            elif s >= ESCALATED and (after[it] < 0 or s > after_stage or (s == after_stage and t > after_at)):
                after[it], expert[it], after_stage, after_at = value[j], annotator[j], s, t
        for k in range(n_voted):
            v = voted[k]
            if votes[v] > top[it] or (votes[v] == top[it] and ordinal[v] < ordinal[best[it]]):
                best[it], top[it] = v, votes[v]
            votes[v] = 0
    return best, top, initial, after, expert, crowd_cost, expert_cost, total_cost, first, final
