"""Writing a simulation into the warehouse tables in bulk.

Each table goes in as one Arrow table and one INSERT ... SELECT: strings that repeat (node ids,
annotators, sources) travel as Arrow dictionaries, and per-row identifiers and JSON are formatted by
DuckDB inside the INSERT, which is many times faster than building millions of Python strings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa

from queries import demo_config as cfg
from queries.demo_labels import GUIDELINES, STAGES, TRIGGERS, Labels
from queries.demo_model import Predictions
from queries.demo_world import END_S, Annotators, Items, TreeIndex
from queries.results import first_row

START_US = np.datetime64(datetime.combine(cfg.START, datetime.min.time()), "us")
BATCH_TABLES = ("items", "annotators", "annotations", "gold_labels", "predictions", "escalations")

ITEMS_SQL = """
INSERT INTO items
SELECT 'item-' || lpad(CAST(item AS VARCHAR), 7, '0'), CAST(source AS VARCHAR), CAST(segment AS VARCHAR),
       CAST(split AS VARCHAR), created_at, md5('demo-content-' || CAST(content_key AS VARCHAR)),
       json_object('chars', chars, 'has_media', has_media, 'user_reported', user_reported,
                   'account_age_days', account_age_days),
       ?
FROM _demo_rows
"""
ANNOTATORS_SQL = "INSERT INTO annotators SELECT annotator_id, kind, tier, expertise, cost_rate, ? FROM _demo_rows"
ANNOTATIONS_SQL = """
INSERT INTO annotations
SELECT 'ann-' || lpad(CAST(row_number AS VARCHAR), 9, '0'), 'item-' || lpad(CAST(item AS VARCHAR), 7, '0'),
       CAST(annotator_id AS VARCHAR), ?, CAST(node_id AS VARCHAR), confidence, NULL, CAST(stage AS VARCHAR),
       created_at, duration_s, cost, CAST(guideline_version AS VARCHAR), ?
FROM _demo_rows
"""
GOLD_SQL = """
INSERT INTO gold_labels
SELECT 'item-' || lpad(CAST(item AS VARCHAR), 7, '0'), CAST(node_id AS VARCHAR), 'audit', ?, ? FROM _demo_rows
"""
PREDICTIONS_SQL = """
INSERT INTO predictions
SELECT 'item-' || lpad(CAST(item AS VARCHAR), 7, '0'), ?, CAST(model_version AS VARCHAR), ?,
       CAST(node_id AS VARCHAR), probabilities, created_at, ?
FROM _demo_rows
"""
ESCALATIONS_SQL = """
INSERT INTO escalations
SELECT 'item-' || lpad(CAST(item AS VARCHAR), 7, '0'), CAST(trigger AS VARCHAR), CAST(routed_to AS VARCHAR),
       created_at, resolved_at, ?
FROM _demo_rows
"""
TRUTH_SQL = """
INSERT INTO demo_truth SELECT 'item-' || lpad(CAST(item AS VARCHAR), 7, '0'), CAST(node_id AS VARCHAR) FROM _demo_rows
"""


def _labels(codes: np.ndarray, names: Sequence[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(names)))


def _timestamps(seconds: np.ndarray) -> pa.Array:
    """Seconds since the start as TIMESTAMP; NaN becomes NULL (an unresolved escalation)."""
    missing = np.isnan(seconds)
    micros = np.where(missing, 0, np.round(seconds * 1e6)).astype(np.int64)
    return pa.array(START_US + micros.astype("timedelta64[us]"), mask=missing)


def _insert(con: duckdb.DuckDBPyConnection, sql: str, rows: pa.Table, params: list[object]) -> None:
    con.register("_demo_rows", rows)
    try:
        con.execute(sql, params)
    finally:
        con.unregister("_demo_rows")


def open_batches(con: duckdb.DuckDBPyConnection, config: cfg.DemoConfig, tree_version: int,
                 counts: dict[str, int], created_by: str) -> dict[str, int]:
    """One ingest_batches row per table, so every demo row is traceable like an ingested one.

    There is no file to fingerprint, so the sha256 is that of the recipe (seed, size, events), which
    reproduces the rows exactly.
    """
    row = first_row(con.execute("SELECT coalesce(max(batch_id), 0) FROM ingest_batches"))
    first = (int(row[0]) if row else 0) + 1
    batches = {table: first + i for i, table in enumerate(BATCH_TABLES)}
    recipe = f"labelgov-demo seed={config.seed} items={config.items} events={config.events}"
    con.executemany(
        "INSERT INTO ingest_batches VALUES (?, 'demo', ?, ?, 'generated', ?, ?, ?, 0, ?, now()::TIMESTAMP)",
        [
            [batch, f"demo:{table}", hashlib.sha256(f"{recipe} table={table}".encode()).hexdigest(),
             tree_version, counts[table], counts[table], created_by]
            for table, batch in batches.items()
        ],
    )
    return batches


def write_items(con: duckdb.DuckDBPyConnection, items: Items, batch: int) -> None:
    rows = pa.table({
        "item": np.arange(len(items.t)),
        "source": _labels(items.source, items.source_names),
        "segment": _labels(items.segment, list(cfg.LANGUAGES)),
        "split": _labels(items.split, list(cfg.SPLITS)),
        "created_at": _timestamps(items.t),
        "content_key": items.content_key,
        "chars": items.chars,
        "has_media": items.has_media,
        "user_reported": items.user_reported,
        "account_age_days": items.account_age_days,
    })
    _insert(con, ITEMS_SQL, rows, [batch])


def write_annotators(con: duckdb.DuckDBPyConnection, people: Annotators, batch: int) -> None:
    rows = pa.table({
        "annotator_id": people.ids,
        "kind": people.kind,
        "tier": people.tier,
        "expertise": pa.array(people.expertise, type=pa.list_(pa.string())),
        "cost_rate": people.cost_rate,
    })
    _insert(con, ANNOTATORS_SQL, rows, [batch])


def write_annotations(con: duckdb.DuckDBPyConnection, index: TreeIndex, people: Annotators, labels: Labels,
                      tree_version: int, batch: int) -> None:
    answers = labels.annotations
    rows = pa.table({
        "row_number": np.arange(len(answers.item)),
        "item": answers.item,
        "annotator_id": _labels(answers.annotator, people.ids),
        "node_id": _labels(answers.node, index.node_ids),
        "confidence": pa.array(labels.confidence, mask=np.isnan(labels.confidence)),
        "stage": _labels(labels.stage, STAGES),
        "created_at": _timestamps(answers.t),
        "duration_s": labels.duration_s,
        "cost": labels.cost,
        "guideline_version": _labels(labels.guideline, GUIDELINES),
    })
    _insert(con, ANNOTATIONS_SQL, rows, [tree_version, batch])


def write_gold(con: duckdb.DuckDBPyConnection, index: TreeIndex, items: Items, labels: Labels,
               tree_version: int, batch: int) -> None:
    rows = pa.table({
        "item": labels.gold,
        "node_id": _labels(index.leaves[items.truth[labels.gold]], index.node_ids),
    })
    _insert(con, GOLD_SQL, rows, [tree_version, batch])


def write_predictions(con: duckdb.DuckDBPyConnection, index: TreeIndex, items: Items, model: Predictions,
                      tree_version: int, batch: int) -> None:
    leaf_names = pa.array([index.node_ids[node] for node in index.leaves])
    probabilities = pa.MapArray.from_arrays(
        pa.array(model.offsets.astype(np.int32)), leaf_names.take(pa.array(model.keys)), pa.array(model.values)
    )
    seconds = np.minimum(items.t[model.item] + model.delay_s, END_S - 1)
    rows = pa.table({
        "item": model.item,
        "model_version": _labels(model.version, list(cfg.MODEL_SIGNAL)),
        "node_id": _labels(index.leaves[model.leaf], index.node_ids),
        "probabilities": probabilities,
        "created_at": _timestamps(seconds),
    })
    _insert(con, PREDICTIONS_SQL, rows, [cfg.MODEL, tree_version, batch])


def write_escalations(con: duckdb.DuckDBPyConnection, people: Annotators, labels: Labels, batch: int) -> None:
    rows = pa.table({
        "item": labels.escalated,
        "trigger": _labels(labels.trigger, TRIGGERS),
        "routed_to": _labels(labels.routed_to, people.ids),
        "created_at": _timestamps(labels.escalated_at),
        "resolved_at": _timestamps(labels.resolved_at),
    })
    _insert(con, ESCALATIONS_SQL, rows, [batch])


def write_truth(con: duckdb.DuckDBPyConnection, index: TreeIndex, items: Items) -> None:
    """The planted true leaf of every item: demo-only, so the table is made here, not by a migration."""
    con.execute("CREATE TABLE IF NOT EXISTS demo_truth (item_id VARCHAR, node_id VARCHAR)")
    rows = pa.table({
        "item": np.arange(len(items.t)),
        "node_id": _labels(index.leaves[items.truth], index.node_ids),
    })
    _insert(con, TRUTH_SQL, rows, [])
