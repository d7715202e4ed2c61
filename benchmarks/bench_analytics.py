"""The analytics at scale: refresh, every page-level query, and the independent references.

Run on the large demo (about ten million answers)::

    labelgov demo --scale large --no-serve --db /tmp/large.duckdb
    python -m benchmarks.bench_analytics --db /tmp/large.duckdb

Prints one table: the full refresh (wall seconds and peak resident memory of the refresh process), each
page-level query's median wall and CPU milliseconds over 5 warm runs (as wall/cpu: wall is what a user
waits on an idle machine; CPU counts both of DuckDB's threads and swings less when the machine is busy,
so compare loaded runs by it) unfiltered and under each sidebar filter a
user applies (the last week, and the busiest branch, source and annotator tier: the largest share of the
answers a single value keeps, so the slowest case of each), and, on the
same data, crowd-kit's DawidSkene and MajorityVote and the ``krippendorff`` package on a sample of
items (1M answers; they cannot take 10M in reasonable time and memory) beside this package's own
Dawid-Skene and alpha on the same sample and on every answer, with the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np

from benchmarks.timing import median_warm

RUNS = 5


def refresh_in_child(db: str) -> dict[str, Any]:
    """A full refresh in its own process, so that its peak memory is its own."""
    code = (
        "import json, resource, time\n"
        "from queries.connection import connect\n"
        "from queries.refresh import refresh\n"
        f"with connect({db!r}) as con:\n"
        "    t = time.perf_counter(); r = refresh(con, full=True); s = time.perf_counter() - t\n"
        "print(json.dumps({'seconds': s, 'peak_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,"
        " 'steps': [x.model_dump() for x in r.steps]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def page_cases(con: Any) -> list[tuple[str, Callable[[Any], object]]]:
    from queries import (
        agreement,
        calibration,
        contested,
        cost_quality,
        data_quality,
        drift,
        escalation,
        hierarchy_accuracy,
        overview,
        reliability,
        soft_labels,
        tree_view,
    )

    busiest = con.execute("SELECT annotator_id FROM d_answers GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchall()
    annotator = busiest[0][0] if busiest else ""
    item = con.execute("SELECT item_id FROM d_items ORDER BY item_id LIMIT 1").fetchall()[0][0]
    return [
        ("overview.overview", lambda f: overview.overview(con, f)),
        ("overview.weekly_trends", lambda f: overview.weekly_trends(con, f)),
        ("tree_view.node_volumes", lambda f: tree_view.node_volumes(con, f)),
        ("tree_view.children_confusion", lambda f: tree_view.children_confusion(con, f, None)),
        ("soft_labels.level_stats", lambda f: soft_labels.level_stats(con, f)),
        ("soft_labels.branch_stats", lambda f: soft_labels.branch_stats(con, f)),
        ("soft_labels.labelling_priorities", lambda f: soft_labels.labelling_priorities(con, f)),
        ("contested.contested_items", lambda f: contested.contested_items(con, f)),
        ("contested.item_detail", lambda f: contested.item_detail(con, item)),
        ("agreement.agreement_table(level)", lambda f: agreement.agreement_table(con, f, by="level")),
        ("agreement.agreement_table(week)", lambda f: agreement.agreement_table(con, f, by="week")),
        ("agreement.pairwise_kappa", lambda f: agreement.pairwise_kappa(con, f)),
        ("reliability.annotator_table", lambda f: reliability.annotator_table(con, f)),
        ("reliability.confusion_matrix", lambda f: reliability.confusion_matrix(con, f, annotator)),
        ("reliability.reliability_over_time", lambda f: reliability.reliability_over_time(con, f, annotator)),
        ("escalation.escalation_summary", lambda f: escalation.escalation_summary(con, f)),
        ("escalation.gains_by(branch)", lambda f: escalation.gains_by(con, f, by="branch")),
        ("escalation.threshold_whatif", lambda f: escalation.threshold_whatif(con, f)),
        ("drift.drift_matrix", lambda f: drift.drift_matrix(con, f)),
        ("drift.drift_alerts", lambda f: drift.drift_alerts(con, f)),
        ("drift.drift_report", lambda f: drift.drift_report(con, f)),
        ("cost_quality.pareto_frontier", lambda f: cost_quality.pareto_frontier(con, f)),
        ("cost_quality.recommended_k", lambda f: cost_quality.recommended_k(con, f)),
        ("calibration.calibration_table", lambda f: calibration.calibration_table(con, f)),
        ("calibration.reliability_bins", lambda f: calibration.reliability_bins(con, f)),
        ("hierarchy_accuracy", lambda f: hierarchy_accuracy.hierarchical_accuracy(con, f)),
        ("data_quality.check_counts", lambda f: data_quality.check_counts(con, f)),
    ]


def filter_cases(con: Any) -> list[tuple[str, Any]]:
    """The sidebar filters each page function is timed under, as (column heading, Filters)."""
    from queries.filters import Filters

    last = con.execute("SELECT max(week) FROM d_answers").fetchall()[0][0]
    week = Filters(start=last.date(), end=last.date() + timedelta(days=6)) if last else Filters()
    branch = con.execute(
        "SELECT consensus_lineage[1] FROM d_items GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchall()
    source = con.execute("SELECT source FROM d_answers GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchall()
    tier = con.execute(
        "SELECT tier FROM d_answers WHERE tier IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchall()
    return [
        ("unfiltered", Filters()),
        ("one week", week),
        ("branch", Filters(branch=branch[0][0]) if branch else Filters()),
        ("source", Filters(sources=(source[0][0],)) if source else Filters()),
        ("tier", Filters(tiers=(tier[0][0],)) if tier else Filters()),
    ]


def reference_rows(con: Any, sample_answers: int, iterations: int) -> list[tuple[str, float, str]]:
    """Ours against crowd-kit and krippendorff on the same sampled items, and ours on everything."""
    import krippendorff
    import pandas as pd
    from crowdkit.aggregation import DawidSkene, MajorityVote

    from queries.alpha import alpha_from_counts
    from queries.dawid_skene import dawid_skene

    every = con.execute(
        "SELECT a.item_idx, a.annotator_idx, n.ordinal FROM d_answers a JOIN d_nodes n USING (tree_version, node_id) "
        "WHERE a.is_leaf"
    ).fetchnumpy()
    item, person, label = every["item_idx"], every["annotator_idx"], every["ordinal"]
    _, label = np.unique(label, return_inverse=True)
    per_item = max(1, len(item) // max(1, int(item.max()) + 1))
    keep = item < sample_answers // per_item
    s_item, s_person, s_label = item[keep], person[keep], label[keep]
    rows: list[tuple[str, float, str]] = []

    def timed(name: str, fn: Callable[[], object], note: str) -> float:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        rows.append((name, seconds, note))
        return seconds

    n_sample = f"{keep.sum():,} answers"
    ours = timed(
        "labelgov Dawid-Skene (sample)",
        lambda: dawid_skene(s_item, s_person, s_label, n_iter=iterations, tol=-np.inf),
        n_sample,
    )
    frame = pd.DataFrame({"task": s_item, "worker": s_person, "label": s_label})
    theirs = timed(
        "crowd-kit DawidSkene (sample)", lambda: DawidSkene(n_iter=iterations, tol=-np.inf).fit(frame), n_sample
    )
    rows.append(("  ratio crowd-kit / labelgov", theirs / ours, "x"))
    timed("crowd-kit MajorityVote (sample)", lambda: MajorityVote().fit(frame), n_sample)
    timed(
        "labelgov Dawid-Skene (all answers)",
        lambda: dawid_skene(item, person, label, n_iter=iterations, tol=-np.inf),
        f"{len(item):,} answers",
    )

    def our_alpha(i: np.ndarray, v: np.ndarray) -> float:
        k = int(v.max()) + 1
        keys, counts = np.unique(i.astype(np.int64) * k + v, return_counts=True)
        _, dense = np.unique(keys // k, return_inverse=True)
        return alpha_from_counts(dense, keys % k, counts, k)

    mine = timed("labelgov alpha (sample)", lambda: our_alpha(s_item, s_label), n_sample)
    units = int(s_item.max()) + 1
    coders = int(s_person.max()) + 1
    matrix = np.full((coders, units), np.nan)
    matrix[s_person, s_item] = s_label
    ref = timed(
        "krippendorff.alpha (sample)",
        lambda: krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"),
        n_sample,
    )
    rows.append(("  ratio krippendorff / labelgov", ref / mine, "x"))
    timed("labelgov alpha (all answers)", lambda: our_alpha(item, label), f"{len(item):,} answers")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a demo warehouse (it is refreshed in place)")
    parser.add_argument("--skip-refresh", action="store_true")
    parser.add_argument("--skip-references", action="store_true", help="time the page queries only")
    parser.add_argument("--sample-answers", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()

    from queries import answer_arrays
    from queries.connection import connect

    if not args.skip_refresh:
        result = refresh_in_child(args.db)
        print(f"{'full refresh':<40}{result['seconds']:>10.1f} s   peak {result['peak_gb']:.2f} GB")
        for step in result["steps"]:
            print(f"  {step['step']:<38}{step['seconds']:>10.1f} s")
    with connect(args.db, read_only=True) as con:
        answers = con.execute("SELECT count(*) FROM d_answers").fetchall()[0][0]
        filters = filter_cases(con)
        # As the dashboard server does: filtered questions select from the answers held in memory, built by the
        # first of them (timed here on its own).
        answer_arrays.enable()
        start = time.perf_counter()
        answer_arrays.filtered(con, filters[-1][1], "week", annotator=True)
        print(f"\n{'answers into memory (first filtered query)':<40}{time.perf_counter() - start:>10.1f} s")
        print(f"\npage queries on {answers:,} answers, wall/CPU ms, medians of {RUNS} warm runs")
        print(f"{'function':<40}" + "".join(f"{name:>12}" for name, _ in filters))
        for name, fn in page_cases(con):
            cells = []
            for _, f in filters:
                try:
                    timing = median_warm(lambda f=f, run=fn: run(f), RUNS)
                    cells.append(f"{timing.wall * 1000:.0f}/{timing.cpu * 1000:.0f}".rjust(12))
                except Exception as exc:
                    cells.append(f"{'error':>12}")
                    print(f"  {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            print(f"{name:<40}{''.join(cells)}", flush=True)
        if args.skip_references:
            return
        print(f"\nreferences (same data, {args.iterations} EM iterations)")
        for name, value, note in reference_rows(con, args.sample_answers, args.iterations):
            unit = "x" if note == "x" else "s"
            print(f"{name:<40}{value:>10.2f} {unit}   {'' if note == 'x' else note}")
    print(f"\npeak memory of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
