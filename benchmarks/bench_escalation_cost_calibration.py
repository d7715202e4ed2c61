"""Timings of the escalation, cost-versus-quality and calibration page functions.

Median of 5 warm runs per function, unfiltered (the stored tables) and with filters (recomputed). Uses
the warehouse given with ``--db`` when it exists; otherwise builds the demo there at ``--scale`` (large by
default: a million items, escalations, a model with two versions, self-reported confidence) and refreshes
it. Prints the refresh time of this module's steps, then one row per function and filter.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from benchmarks.timing import median_warm
from queries import calibration, cost_quality, escalation
from queries.connection import connect, transaction
from queries.demo import simulate, write_simulation
from queries.demo_config import demo_config
from queries.filters import Filters
from queries.refresh import RefreshContext, refresh

STEPS = (
    ("escalation", escalation.refresh_step),
    ("cost_quality", cost_quality.refresh_step),
    ("calibration", calibration.refresh_step),
)
FILTERS = {
    "none": Filters(),
    "branch=hate": Filters(branch="hate"),
    "source=app": Filters(sources=("app",)),
}
CASES: list[tuple[str, Callable[[duckdb.DuckDBPyConnection, Filters], object]]] = [
    ("escalation_summary", escalation.escalation_summary),
    ("gains_by trigger", lambda c, f: escalation.gains_by(c, f, by="trigger")),
    ("gains_by expert", lambda c, f: escalation.gains_by(c, f, by="expert")),
    ("time_to_label", escalation.time_to_label),
    ("threshold_whatif", escalation.threshold_whatif),
    ("items_escalated_at 0.5", lambda c, f: escalation.items_escalated_at(c, f, 0.5, limit=200)),
    ("redundancy_curve", cost_quality.redundancy_curve),
    ("recommended_k", cost_quality.recommended_k),
    ("pareto_frontier", cost_quality.pareto_frontier),
    ("cost_per_correct annotator", lambda c, f: cost_quality.cost_per_correct(c, f, by="annotator")),
    ("cost_per_correct tier", lambda c, f: cost_quality.cost_per_correct(c, f, by="tier")),
    ("reliability_bins gold", calibration.reliability_bins),
    ("reliability_bins soft L1", lambda c, f: calibration.reliability_bins(c, f, level=1, against="soft")),
    ("calibration_table", calibration.calibration_table),
    ("fit_temperature", calibration.fit_temperature),
    ("annotator_confidence", calibration.annotator_confidence_calibration),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="/tmp/labelgov_bench_escalation.duckdb")
    parser.add_argument("--scale", default="large")
    args = parser.parse_args()
    if not Path(args.db).exists():
        t0 = time.perf_counter()
        with connect(args.db) as con, transaction(con):
            write_simulation(con, simulate(demo_config(args.scale, 7, True)), "bench")
        with connect(args.db) as con:
            refresh(con, full=True)
        print(f"built and refreshed {args.db} in {time.perf_counter() - t0:.0f} s")
    with connect(args.db) as con:
        counts = {
            t: con.execute("SELECT count(*) FROM " + t).fetchone()[0]
            for t in ("annotations", "items", "gold_labels", "predictions", "escalations")
        }
        print(", ".join(f"{k} {v:,}" for k, v in counts.items()))
        ctx = RefreshContext(full=True, since_batch=0, touched_items=0)
        with transaction(con):
            for name, step in STEPS:
                t0 = time.perf_counter()
                step(con, ctx)
                print(f"refresh step {name:<14}{time.perf_counter() - t0:8.2f} s")
        print(f"{'function':<28}" + "".join(f"{k:>16}" for k in FILTERS))
        for label, fn in CASES:
            cells = [median_warm(lambda fn=fn, f=f: fn(con, f)).wall * 1000 for f in FILTERS.values()]
            print(f"{label:<28}" + "".join(f"{ms:>13.0f} ms" for ms in cells))


if __name__ == "__main__":
    main()
