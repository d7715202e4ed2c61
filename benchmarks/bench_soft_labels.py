"""Timings of soft labels, contested items, hierarchical accuracy and data quality on ~10M answers.

Median of 5 warm runs per page function. Uses the warehouse given with ``--db`` when it exists (the large
demo, say); otherwise builds a synthetic one with DuckDB range(): items with a true leaf of the demo
tree and four answers each, item sources, segments, splits and content hashes (a few duplicated across
splits), two fast annotators, gold for 5% of the items and model predictions for 20%.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import duckdb

from benchmarks.timing import cpu_seconds, median_warm
from queries import contested, data_quality, derived_base, hierarchy_accuracy, reliability, soft_labels
from queries.connection import connect, transaction
from queries.filters import Filters
from queries.refresh import RefreshContext
from queries.taxonomy import read_tree_file, store_tree

TREE_FILE = Path(__file__).resolve().parents[1] / "queries" / "demo_tree.yaml"
# Four answers per item: mostly the item's true leaf, sometimes a sibling, a random leaf or the parent
# (a coarse answer). u1 and u2 answer in 1.5-3.5 s, everyone else in 8-48 s.
ANSWERS = """
INSERT INTO annotations (annotation_id, item_id, annotator_id, tree_version, node_id, confidence, stage,
                         created_at, duration_s, cost, guideline_version, batch_id)
WITH it AS (SELECT i, CAST(1 + hash(i) % len(?::VARCHAR[]) AS BIGINT) AS t FROM range(?) r(i)),
raw AS (SELECT i, t, j, random() AS r, random() AS r2, 'u' || (hash(i * 7 + j) % 500) AS who FROM it, range(4) q(j)),
tab AS (SELECT ?::VARCHAR[] AS leaves, ?::VARCHAR[][] AS sibs, ?::VARCHAR[] AS parents)
SELECT 'a' || i || '_' || j, 'i' || i, who, ?,
       CASE WHEN r < 0.8 THEN leaves[t]
            WHEN r < 0.9 THEN sibs[t][1 + CAST(floor(r2 * len(sibs[t])) AS INTEGER)]
            WHEN r < 0.97 THEN leaves[1 + CAST(floor(r2 * len(leaves)) AS INTEGER)]
            ELSE parents[t] END,
       round(0.5 + 0.5 * r2, 2), 'initial',
       TIMESTAMP '2026-01-05' + to_days(CAST(i % 182 AS INTEGER)) + to_minutes(CAST(j * 30 AS INTEGER)),
       CASE WHEN who IN ('u1', 'u2') THEN 1.5 + 2 * r2 ELSE 8 + 40 * r2 END, 0.05, 'g1', 1
FROM raw, tab
"""
# Item attributes, 0.1% of items re-posted under another item's content, 5% gold, 20% predictions.
EXTRAS = (
    "INSERT INTO items (item_id, source, segment, split, content_hash) "
    "SELECT item_id, ['web', 'app', 'partner_api', 'live_chat'][1 + CAST(hash(item_id) % 4 AS BIGINT)], "
    "['en', 'es', 'fr', 'de', 'pt'][1 + CAST(hash(item_id || 's') % 5 AS BIGINT)], "
    "['train', 'train', 'train', 'train', 'train', 'train', 'train', 'train', 'test', 'validation']"
    "[1 + CAST(hash(item_id || 'x') % 10 AS BIGINT)], "
    "md5(CASE WHEN hash(item_id || 'd') % 1000 = 0 THEN 'dup' || hash(item_id) % 500 ELSE item_id END) "
    "FROM (SELECT DISTINCT item_id FROM annotations)",
    "INSERT INTO annotators (annotator_id) SELECT DISTINCT annotator_id FROM annotations",
    "INSERT INTO gold_labels SELECT item_id, node_id, 'expert', tree_version, 1 FROM annotations "
    "WHERE suffix(annotation_id, '_0') AND hash(item_id || 'g') % 20 = 0",
    "INSERT INTO predictions SELECT item_id, 'clf', 'v1', tree_version, NULL, "
    "MAP([node_id, 'safe_personal'], [0.7, 0.3]), TIMESTAMP '2026-03-01', 1 FROM annotations "
    "WHERE suffix(annotation_id, '_1') AND node_id <> 'safe_personal' AND hash(item_id || 'p') % 5 = 0",
    "UPDATE meta SET value = '1' WHERE key = 'data_version'",
)


def build(db: str, answers: int) -> None:
    tree = read_tree_file(TREE_FILE)
    leaves = [n for n in tree.nodes if n.is_leaf]
    siblings: dict[str | None, list[str]] = {}
    for n in leaves:
        siblings.setdefault(n.parent_id, []).append(n.node_id)
    with connect(db) as con:
        version = store_tree(con, tree, created_by="bench")
        con.execute("SELECT setseed(0.42)")
        ids = [n.node_id for n in leaves]
        con.execute(
            ANSWERS, [ids, answers // 4, ids, [siblings[n.parent_id] for n in leaves], [n.parent_id for n in leaves],
                      version]
        )
        for statement in EXTRAS:
            con.execute(statement)
        con.execute(
            "INSERT INTO ingest_batches VALUES (1, 'annotations', 'bench', 'x', 'sql', ?, ?, ?, 0, 'bench', now())",
            [version, answers, answers],
        )


def prepare(db: str) -> None:
    """The refresh steps these pages read, timed one by one (the full refresh also runs other analyses)."""
    steps: list[tuple[str, Callable[[duckdb.DuckDBPyConnection, RefreshContext], object]]] = [
        ("base", lambda con, ctx: derived_base.build(con)),
        ("reliability", reliability.refresh_step),
        ("soft_labels (full)", soft_labels.refresh_step),
        ("contested", contested.refresh_step),
        ("data_quality", data_quality.refresh_step),
        ("hierarchy_accuracy", hierarchy_accuracy.refresh_step),
    ]
    with connect(db) as con, transaction(con):
        for name, step in steps:
            t0, c0 = time.perf_counter(), cpu_seconds()
            step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
            print(f"refresh step {name:28s} {time.perf_counter() - t0:7.1f} s wall {cpu_seconds() - c0:7.1f} s CPU")
        t0, c0 = time.perf_counter(), cpu_seconds()
        top = con.execute("SELECT coalesce(max(batch_id), 0) FROM ingest_batches").fetchone()
        mode = soft_labels.refresh_step(
            con, RefreshContext(full=False, since_batch=int(top[0]) if top else 0, touched_items=0)
        )
        print(
            f"refresh step soft_labels ({mode}, no new batch) {time.perf_counter() - t0:7.1f} s wall "
            f"{cpu_seconds() - c0:7.1f} s CPU"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="/tmp/labelgov_bench_soft_labels.duckdb")
    parser.add_argument("--answers", type=int, default=10_000_000)
    args = parser.parse_args()
    if not Path(args.db).exists():
        build(args.db, args.answers)
    with connect(args.db, read_only=True) as con:
        ready = soft_labels.table_exists(con, "d_dq_annotators")
    if not ready:
        prepare(args.db)
    with connect(args.db, read_only=True) as con:
        n = con.execute("SELECT count(*) FROM d_answers").fetchone()
        print(f"warehouse {args.db}: {n[0] if n else 0:,} answers")
        top = con.execute("SELECT node_id FROM d_nodes WHERE depth = 1 ORDER BY ordinal LIMIT 1").fetchone()
        branch = Filters(branch=top[0]) if top else Filters()
        # A two-week window: a filter on answers, so the pages recompute from d_answers (~1M answers here).
        first = con.execute("SELECT min(week) FROM d_answers").fetchone()[0]
        window = Filters(start=first.date(), end=(first + timedelta(days=13)).date())
        # An item from the middle of the table, whatever the warehouse's size.
        middle = "SELECT item_id FROM d_items LIMIT 1 OFFSET (SELECT count(*) // 2 FROM d_items)"
        item = con.execute(middle).fetchone()[0]
        everything = Filters()
        cases: list[tuple[str, Callable[[], object]]] = [
            ("level_stats", lambda: soft_labels.level_stats(con, everything)),
            ("level_stats, branch filter", lambda: soft_labels.level_stats(con, branch)),
            ("level_stats, two-week range", lambda: soft_labels.level_stats(con, window)),
            ("branch_stats", lambda: soft_labels.branch_stats(con, everything)),
            ("branch_stats, branch filter", lambda: soft_labels.branch_stats(con, branch)),
            ("branch_stats, two-week range", lambda: soft_labels.branch_stats(con, window)),
            ("labelling_priorities", lambda: soft_labels.labelling_priorities(con, everything)),
            ("item_node_mass, one item", lambda: soft_labels.item_node_mass(con, everything, items=[item])),
            ("contested_items entropy", lambda: contested.contested_items(con, everything)),
            ("contested_items gap, branch filter", lambda: contested.contested_items(con, branch, sort="gap")),
            ("contested_items posterior", lambda: contested.contested_items(con, everything, sort="posterior")),
            ("contested_items, two-week range", lambda: contested.contested_items(con, window)),
            ("item_detail", lambda: contested.item_detail(con, item)),
            ("hierarchical_accuracy", lambda: hierarchy_accuracy.hierarchical_accuracy(con, everything)),
            ("hierarchical_accuracy, two-week range", lambda: hierarchy_accuracy.hierarchical_accuracy(con, window)),
            ("cross_split_duplicates", lambda: data_quality.cross_split_duplicates(con, everything)),
            ("missing_metadata", lambda: data_quality.missing_metadata(con, everything)),
            ("too_fast_annotators", lambda: data_quality.too_fast_annotators(con, everything)),
            ("source_divergence", lambda: data_quality.source_divergence(con, everything)),
            ("check_counts", lambda: data_quality.check_counts(con, everything)),
        ]
        print(f"{'function':40s} {'median s':>9s}")
        for name, fn in cases:
            print(f"{name:40s} {median_warm(fn).wall:9.3f}")


if __name__ == "__main__":
    main()
