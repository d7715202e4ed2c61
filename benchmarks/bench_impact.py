"""Impact report of a merge on a large warehouse (~10M annotations): target under 10 s.

Uses the warehouse given with ``--db`` (e.g. the large demo), merging the first two sibling leaves of its
latest tree; when that file is new or empty, or no --db is given, builds a synthetic warehouse with
DuckDB range(): 100 leaves in 10 groups, five
answers per item, 80% right and otherwise a sibling, a sparse model prediction per item, gold for 5% of
items and escalations for 1%. Prints one row per phase; the report is timed cold and warm (median of 3),
in wall-clock and in this process's CPU seconds (which a busy machine does not inflate).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from governance.impact import ImpactReport, compute_report
from governance.proposals import ProposalFile, proposal_hash
from queries.connection import connect
from queries.taxonomy import load_tree, parse_tree, store_tree

GROUPS, PER_GROUP, ANSWERS_PER_ITEM = 10, 10, 5


SYNTHETIC_ANNOTATIONS = """
INSERT INTO annotations (annotation_id, item_id, annotator_id, tree_version, node_id, stage, created_at,
                         duration_s, cost, batch_id)
WITH src AS (
    SELECT i, i // 5 AS item, CAST(hash(i // 5) % 100 AS BIGINT) AS truth, CAST(hash(i * 7 + 1) % 100 AS BIGINT) AS r
    FROM range(?) t(i)
)
SELECT 'a' || i, 'item' || item, 'ann' || CAST(hash(i * 3) % 2000 AS VARCHAR), 1,
       'l' || CAST(leaf // 10 AS VARCHAR) || '_' || CAST(leaf % 10 AS VARCHAR),
       'initial', TIMESTAMP '2026-01-01' + INTERVAL (i % 180) DAY, 5 + (hash(i) % 60), 0.02 + (hash(i) % 8) / 100, 1
FROM (SELECT *, CASE WHEN r < 80 THEN truth ELSE (truth // 10) * 10 + CAST(hash(i * 13) % 10 AS BIGINT) END AS leaf
      FROM src)
"""

SYNTHETIC_REST = [
    """
    INSERT INTO predictions
    SELECT 'item' || item, 'clf', 'v1', 1, NULL,
           map(['l' || CAST(truth // 10 AS VARCHAR) || '_' || CAST(truth % 10 AS VARCHAR),
                'l' || CAST(truth // 10 AS VARCHAR) || '_' || CAST((truth + 1) % 10 AS VARCHAR),
                'l' || CAST((truth // 10 + 1) % 10 AS VARCHAR) || '_0'], [0.7, 0.2, 0.1]),
           TIMESTAMP '2026-06-01', 1
    FROM (SELECT DISTINCT item_id, CAST(substr(item_id, 5) AS BIGINT) AS item FROM annotations)
         , LATERAL (SELECT CAST(hash(item) % 100 AS BIGINT) AS truth)
    """,
    """
    INSERT INTO gold_labels
    SELECT 'item' || item, 'l' || CAST(truth // 10 AS VARCHAR) || '_' || CAST(truth % 10 AS VARCHAR), 'expert', 1, 1
    FROM (SELECT CAST(substr(item_id, 5) AS BIGINT) AS item FROM annotations GROUP BY item_id)
         , LATERAL (SELECT CAST(hash(item) % 100 AS BIGINT) AS truth)
    WHERE item % 20 = 0
    """,
    """
    INSERT INTO escalations
    SELECT item_id, 'disagreement', 'expert', TIMESTAMP '2026-06-02', NULL, 1
    FROM (SELECT DISTINCT item_id FROM annotations) WHERE hash(item_id) % 100 = 0
    """,
]


def synthetic_tree() -> str:
    lines = ["taxonomy: bench", "nodes:"]
    for g in range(GROUPS):
        lines.append(f"  g{g}:")
        lines.append("    children:")
        lines += [f"      l{g}_{k}: {{}}" for k in range(PER_GROUP)]
    return "\n".join(lines) + "\n"


def build(con: duckdb.DuckDBPyConnection, annotations: int) -> None:
    con.execute("BEGIN TRANSACTION")
    store_tree(con, parse_tree(synthetic_tree()), created_by="bench")
    con.execute(SYNTHETIC_ANNOTATIONS, [annotations])
    for sql in SYNTHETIC_REST:
        con.execute(sql)
    con.execute("COMMIT")


def merge_spec(con: duckdb.DuckDBPyConnection) -> ProposalFile:
    tree = load_tree(con)
    leaves = [n for n in tree.nodes if n.is_leaf and n.status == "active"]
    first = leaves[0]
    sibling = next(n for n in leaves[1:] if n.parent_id == first.parent_id)
    return ProposalFile.model_validate(
        {
            "title": "merge",
            "rationale": "benchmark",
            "operations": [{"op": "merge", "nodes": [sibling.node_id], "into": first.node_id}],
        }
    )


def timed(func: Callable[[], ImpactReport]) -> tuple[ImpactReport, float, float]:
    """The result, wall-clock seconds and this process's CPU seconds (all threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = func()
    return result, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="a warehouse; built synthetically when new (default: a temp file)")
    parser.add_argument("--annotations", type=int, default=10_000_000, help="synthetic size")
    args = parser.parse_args()
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "bench.duckdb"
        with connect(db) as con:
            if con.execute("SELECT count(*) FROM annotations").fetchall()[0][0] == 0:
                start, cpu = time.perf_counter(), time.process_time()
                build(con, args.annotations)
                rows.append(("build synthetic warehouse", time.perf_counter() - start, time.process_time() - cpu, ""))
            total = con.execute("SELECT count(*) FROM annotations").fetchall()[0][0]
            version = con.execute("SELECT max(tree_version) FROM tree_versions").fetchall()[0][0]
            spec = merge_spec(con)
            digest = proposal_hash(spec.title, spec.rationale, version, spec.operations)

            def report() -> ImpactReport:
                return compute_report(
                    con, proposal_id=0, proposal_hash=digest, base_version=version, operations=spec.operations
                )

            result, wall, cpu_s = timed(report)
            rows.append(("impact report (cold)", wall, cpu_s, f"{total:,} annotations"))
            warm = [timed(report)[1:] for _ in range(3)]
            rows.append(
                (
                    "impact report (warm, median of 3)",
                    statistics.median(w for w, _ in warm),
                    statistics.median(c for _, c in warm),
                    f"target < 10 s; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
                )
            )
    merged = spec.operations[0]
    note = f"alpha {result.alpha_before:.4f} -> {result.alpha_after:.4f}"
    rows.append((f"merge {merged.nodes[0]} into {merged.into}", 0.0, 0.0, note))
    width = max(len(r[0]) for r in rows)
    print(f"{'phase':<{width}}  {'wall s':>8}  {'cpu s':>8}  note")
    for name, seconds, cpu_seconds, text in rows:
        print(f"{name:<{width}}  {seconds:>8.2f}  {cpu_seconds:>8.2f}  {text}")


if __name__ == "__main__":
    main()
