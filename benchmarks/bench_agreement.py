"""Timings of agreement and drift on ~10M answers: median of 5 warm runs per function.

Uses the large demo warehouse when given one (``--db``); otherwise builds a synthetic warehouse with
DuckDB range(): items with a true leaf of the demo tree, four answers each, mostly right, sometimes a
sibling, a random leaf or the parent (a coarse answer), spread over 26 weeks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.timing import cpu_seconds, median_warm
from queries import agreement, drift
from queries.connection import connect
from queries.filters import Filters
from queries.refresh import RefreshContext, refresh
from queries.taxonomy import read_tree_file, store_tree

TREE_FILE = Path(__file__).resolve().parents[1] / "queries" / "demo_tree.yaml"

SYNTHETIC = """
INSERT INTO annotations (annotation_id, item_id, annotator_id, tree_version, node_id, confidence, stage,
                         created_at, duration_s, cost, guideline_version, batch_id)
WITH it AS (
    SELECT i, CAST(1 + hash(i) % len(?::VARCHAR[]) AS BIGINT) AS t FROM range(?) r(i)
), raw AS (
    SELECT i, t, j, random() AS r, random() AS r2 FROM it, range(4) q(j)
), tab AS (SELECT ?::VARCHAR[] AS leaves, ?::VARCHAR[][] AS sibs, ?::VARCHAR[] AS parents)
SELECT 'a' || i || '_' || j, 'i' || i, 'u' || (hash(i * 7 + j) % 500), ?,
       CASE WHEN r < 0.8 THEN leaves[t]
            WHEN r < 0.9 THEN sibs[t][1 + CAST(floor(r2 * len(sibs[t])) AS INTEGER)]
            WHEN r < 0.97 THEN leaves[1 + CAST(floor(r2 * len(leaves)) AS INTEGER)]
            ELSE parents[t] END,
       round(0.5 + 0.5 * r2, 2), 'initial',
       TIMESTAMP '2026-01-05' + to_days(CAST(i % 182 AS INTEGER)) + to_minutes(CAST(j * 30 AS INTEGER)),
       10.0, 0.05, 'g1', 1
FROM raw, tab
"""


def build_synthetic(db: str, answers: int) -> None:
    tree = read_tree_file(TREE_FILE)
    with connect(db) as con:
        version = store_tree(con, tree, created_by="bench")
        leaves = [n for n in tree.nodes if n.is_leaf]
        by_parent: dict[str | None, list[str]] = {}
        for n in leaves:
            by_parent.setdefault(n.parent_id, []).append(n.node_id)
        con.execute("SELECT setseed(0.42)")
        con.execute(
            SYNTHETIC,
            [
                [n.node_id for n in leaves],
                answers // 4,
                [n.node_id for n in leaves],
                [by_parent[n.parent_id] for n in leaves],
                [n.parent_id for n in leaves],
                version,
            ],
        )
        con.execute("INSERT INTO items (item_id) SELECT DISTINCT item_id FROM annotations")
        con.execute("INSERT INTO annotators (annotator_id) SELECT DISTINCT annotator_id FROM annotations")
        con.execute(
            "INSERT INTO ingest_batches VALUES (1, 'annotations', 'bench', 'x', 'sql', ?, ?, ?, 0, 'bench', now())",
            [version, answers, answers],
        )
        con.execute("UPDATE meta SET value = '1' WHERE key = 'data_version'")
        report = refresh(con, full=True)
        print(
            f"built {answers:,} answers; refresh {report.seconds:.1f} s:", [(s.step, s.seconds) for s in report.steps]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="/tmp/labelgov_bench_agreement.duckdb")
    parser.add_argument("--answers", type=int, default=10_000_000)
    args = parser.parse_args()
    if not Path(args.db).exists():
        build_synthetic(args.db, args.answers)
    with connect(args.db) as con:
        n = con.execute("SELECT count(*) FROM d_answers").fetchone()
        print(f"warehouse {args.db}: {n[0] if n else 0:,} answers")
        top = con.execute("SELECT node_id FROM d_nodes WHERE depth = 1 ORDER BY ordinal LIMIT 1").fetchone()
        branch = Filters(branch=top[0]) if top else Filters()
        weeks = con.execute("SELECT min(week), max(week) FROM d_answers").fetchone()
        window = (
            Filters(start=weeks[0].date(), end=(weeks[0] + (weeks[1] - weeks[0]) / 2).date()) if weeks else Filters()
        )
        cases: list[tuple[str, Callable[[], object]]] = [
            ("alpha nominal (analytic CI)", lambda: agreement.alpha(con, Filters())),
            ("alpha tree (analytic CI)", lambda: agreement.alpha(con, Filters(), metric="tree")),
            ("alpha nominal, bootstrap B=50", lambda: agreement.alpha(con, Filters(), bootstrap=50)),
            ("alpha, branch filter", lambda: agreement.alpha(con, branch)),
            ("agreement_table overall (stored)", lambda: agreement.agreement_table(con, Filters())),
            ("agreement_table week (stored)", lambda: agreement.agreement_table(con, Filters(), by="week")),
            ("agreement_table level, half range", lambda: agreement.agreement_table(con, window, by="level")),
            ("pairwise_kappa top 15", lambda: agreement.pairwise_kappa(con, Filters())),
            ("drift_matrix (stored)", lambda: drift.drift_matrix(con, Filters())),
            ("drift_matrix, half range", lambda: drift.drift_matrix(con, window)),
            ("drift_alerts (stored)", lambda: drift.drift_alerts(con, Filters())),
            ("drift_alerts, half range", lambda: drift.drift_alerts(con, window)),
            ("agreement_drift, half range", lambda: drift.agreement_drift(con, window)),
        ]
        for name, step in (("agreement", agreement.refresh_step), ("drift", drift.refresh_step)):
            t0, c0 = time.perf_counter(), cpu_seconds()
            step(con, RefreshContext(full=True, since_batch=0, touched_items=0))
            print(f"refresh step {name}: {time.perf_counter() - t0:.1f} s wall, {cpu_seconds() - c0:.1f} s CPU")
        print(f"{'function':40s} {'median s':>9s} {'CPU s':>9s}")
        for name, fn in cases:
            wall, cpu = median_warm(fn)
            print(f"{name:40s} {wall:9.3f} {cpu:9.3f}", flush=True)


if __name__ == "__main__":
    main()
