"""Demo generation time per scale: simulation, bulk write to a fresh warehouse file, and the total.

Wall time depends on what else the machine runs; CPU seconds (all threads of this process) do not,
so both are printed.

Usage: python benchmarks/bench_demo.py [--scales small,medium,large] [--seed 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.timing import cpu_seconds
from queries.connection import connect, transaction
from queries.demo import row_counts, simulate, write_simulation
from queries.demo_config import demo_config


def run(scale: str, seed: int) -> dict[str, object]:
    config = demo_config(scale, seed)
    with tempfile.TemporaryDirectory() as folder:
        cpu_start = cpu_seconds()
        started = time.perf_counter()
        sim = simulate(config)
        simulated = time.perf_counter()
        with connect(Path(folder) / "bench.duckdb") as con, transaction(con):
            write_simulation(con, sim, "bench")
        written = time.perf_counter()
        cpu = cpu_seconds() - cpu_start
        size_mb = (Path(folder) / "bench.duckdb").stat().st_size / 1e6
    counts = row_counts(sim)
    rows = sum(counts.values())
    return {
        "scale": scale, "items": counts["items"], "annotations": counts["annotations"],
        "predictions": counts["predictions"], "escalations": counts["escalations"],
        "simulate_s": simulated - started, "write_s": written - simulated, "total_s": written - started,
        "cpu_s": cpu, "rows_per_s": rows / (written - started), "file_mb": size_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="small,medium,large", help="comma-separated scales or item counts")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    header = (f"{'scale':<8}{'items':>11}{'annotations':>13}{'predictions':>13}{'escalations':>13}"
              f"{'simulate s':>12}{'write s':>9}{'total s':>9}{'cpu s':>8}{'rows/s':>11}{'file MB':>9}")
    print(header)
    print("-" * len(header))
    for scale in args.scales.split(","):
        r = run(scale.strip(), args.seed)
        print(f"{r['scale']:<8}{r['items']:>11,}{r['annotations']:>13,}{r['predictions']:>13,}{r['escalations']:>13,}"
              f"{r['simulate_s']:>12.1f}{r['write_s']:>9.1f}{r['total_s']:>9.1f}{r['cpu_s']:>8.1f}{r['rows_per_s']:>11,.0f}"
              f"{r['file_mb']:>9.0f}")


if __name__ == "__main__":
    main()
