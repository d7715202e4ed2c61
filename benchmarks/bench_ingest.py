"""Ingest throughput: validated ingest versus a plain DuckDB load of the same file.

Generates an annotations file (45 leaf codes, 1M items, 2k annotators, a few bad rows of each kind)
as Parquet and CSV in a temporary directory, ingests each into a fresh warehouse file, loads each
into another fresh DuckDB file with a bare CREATE TABLE AS (no validation), and prints a table of
medians over ``--repeat`` runs: wall seconds, and CPU seconds (DuckDB's threads included), which swing
much less than wall time when the machine is busy.

    .venv/bin/python benchmarks/bench_ingest.py            # 10M rows, 3 runs
    .venv/bin/python benchmarks/bench_ingest.py --rows 1e6 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.timing import Timing, cpu_seconds
from queries.connection import connect
from queries.ingest import ingest_file
from queries.taxonomy import parse_tree, store_tree

GROUPS = 5
LEAVES_PER_GROUP = 9
ITEMS = 1_000_000
ANNOTATORS = 2_000

# Every 1000th row has an unknown label, every 2000th a negative duration, every 5000th a bad confidence.
ROWS_SQL = """
SELECT 'item-' || (hash(i) % $items) AS item_id,
       'worker-' || (hash(i * 7 + 1) % $annotators) AS annotator_id,
       CASE WHEN i % 1000 = 999 THEN 'no-such-code' ELSE 'c' || (hash(i * 13 + 5) % $codes) END AS label,
       TIMESTAMP '2025-01-01' + to_seconds((hash(i * 3) % 31536000)::BIGINT) AS created_at,
       CASE WHEN i % 2000 = 1999 THEN -1.0 ELSE round(1 + (hash(i * 17) % 60000) / 1000.0, 3) END AS duration_s,
       round((hash(i * 19) % 500) / 1000.0, 3) AS cost,
       CASE WHEN i % 5000 = 4999 THEN 1.5 ELSE round((hash(i * 23) % 1000) / 1000.0, 3) END AS confidence,
       'ann-' || i AS annotation_id
FROM range($rows) AS t(i)
"""


def tree_text() -> str:
    lines = ["taxonomy: bench", "nodes:"]
    code = 0
    for g in range(GROUPS):
        lines += [f"  group{g}:", "    children:"]
        for _ in range(LEAVES_PER_GROUP):
            lines += [f"      leaf{code}:", f"        codes: [c{code}]"]
            code += 1
    return "\n".join(lines) + "\n"


def generate(folder: Path, rows: int) -> dict[str, Path]:
    files = {"parquet": folder / "annotations.parquet", "csv": folder / "annotations.csv"}
    params = {"items": ITEMS, "annotators": ANNOTATORS, "codes": GROUPS * LEAVES_PER_GROUP, "rows": rows}
    with duckdb.connect() as con:
        con.execute("COPY (" + ROWS_SQL + ") TO '" + str(files["parquet"]) + "' (FORMAT parquet)", params)
        con.execute("COPY (SELECT * FROM read_parquet('" + str(files["parquet"]) + "')) TO '"
                    + str(files["csv"]) + "' (FORMAT csv, HEADER)")
    return files


def timed_ingest(folder: Path, name: str, file: Path) -> tuple[Timing, int, int]:
    db = folder / (name + ".duckdb")
    db.unlink(missing_ok=True)
    with connect(db) as con:
        store_tree(con, parse_tree(tree_text()), created_by="bench")
    with connect(db) as con:
        start, cpu = time.perf_counter(), cpu_seconds()
        report = ingest_file(con, "annotations", file, actor="bench")
        elapsed = Timing(time.perf_counter() - start, cpu_seconds() - cpu)
    return elapsed, report.rows_read, report.rows_quarantined


def timed_plain(folder: Path, name: str, file: Path) -> Timing:
    reader = "read_parquet" if file.suffix == ".parquet" else "read_csv"
    db = folder / (name + "-plain.duckdb")
    db.unlink(missing_ok=True)
    with duckdb.connect(str(db)) as con:
        start, cpu = time.perf_counter(), cpu_seconds()
        con.execute("CREATE TABLE plain AS SELECT * FROM " + reader + "(?)", [str(file)])
        return Timing(time.perf_counter() - start, cpu_seconds() - cpu)


def median(runs: list[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in runs), statistics.median(t.cpu for t in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the table shows medians")
    args = parser.parse_args()
    rows = int(args.rows)
    with tempfile.TemporaryDirectory(prefix="labelgov-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        files = generate(folder, rows)
        sizes = ", ".join(f"{name} {file.stat().st_size / 1e6:.0f} MB" for name, file in files.items())
        print(f"generated {rows:,} rows in {time.perf_counter() - start:.1f}s ({sizes})")
        print(f"medians of {args.repeat} runs; cpu = CPU seconds of this process")
        print(f"{'format':8} {'rows':>12} {'quarantined':>12} {'ingest s':>9} {'cpu s':>7} {'rows/s':>12} "
              f"{'plain s':>8} {'cpu s':>7} {'plain rows/s':>13} {'ingest/plain':>13}")
        for name, file in files.items():
            runs = [timed_ingest(folder, name, file) for _ in range(args.repeat)]
            ingest = median([t for t, _, _ in runs])
            _, read, quarantined = runs[0]
            plain = median([timed_plain(folder, name, file) for _ in range(args.repeat)])
            print(f"{name:8} {read:>12,} {quarantined:>12,} {ingest.wall:>9.2f} {ingest.cpu:>7.1f} "
                  f"{read / ingest.wall:>12,.0f} {plain.wall:>8.2f} {plain.cpu:>7.1f} {rows / plain.wall:>13,.0f} "
                  f"{ingest.wall / plain.wall:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
