"""Dawid-Skene engine against crowd-kit, and the reliability page functions.

Part 1 fits generated answers (numpy: items with a true class, a fixed number of answers each from a
skewed crowd that confuses a sibling class, a few uniform spammers) with this engine, crowd-kit's
``DawidSkene`` and ``MajorityVote``, all at the same fixed number of EM iterations. Each fit runs in
its own process so that the peak resident memory (getrusage) is that fit's alone. crowd-kit runs only
up to ``--crowdkit-max`` answers (its 10M-answer fit needs minutes and several GB).

Run from the repository root: ``python -m benchmarks.bench_reliability [--db PATH]``.

Part 2 times the page functions (median of 5 warm runs) on a refreshed warehouse given with ``--db``
(e.g. the large demo after ``labelgov refresh``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from benchmarks.timing import median_warm
from queries.dawid_skene import dawid_skene
from tests.test_dawid_skene import synthetic_answers


def fit_once(method: str, answers: int, classes: int, iterations: int) -> dict[str, float]:
    """One fit in this process: wall and CPU seconds, peak RSS in GB, accuracy of the predicted class.

    CPU seconds (user + system, getrusage) are reported next to wall time because on a shared machine
    the wall time mostly measures the other load.
    """
    per_item = 5
    item, annotator, label, truth, *_ = synthetic_answers(answers // per_item, classes, 5000, per_item, seed=1)
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    if method == "labelgov":
        predicted = dawid_skene(item, annotator, label, n_iter=iterations, tol=-np.inf).labels
    else:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene, MajorityVote

        frame = pd.DataFrame({"task": item, "worker": annotator, "label": label})
        model = DawidSkene(n_iter=iterations, tol=-np.inf) if method == "crowdkit_ds" else MajorityVote()
        predicted = model.fit_predict(frame).reindex(np.arange(truth.size)).to_numpy()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_seconds": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "accuracy": float((predicted == truth).mean()),
    }


def fit_in_child(method: str, answers: int, classes: int, iterations: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_reliability",
            "--child",
            method,
            str(answers),
            str(classes),
            str(iterations),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def engine_table(sizes: list[int], classes: list[int], iterations: int, crowdkit_max: int) -> None:
    print(
        f"{'answers':>10} {'K':>3} {'method':<14} {'seconds':>8} {'CPU s':>8} {'peak GB':>8} {'accuracy':>8} "
        f"{'CPU vs ours':>11}"
    )
    for k in classes:
        for n in sizes:
            ours = fit_in_child("labelgov", n, k, iterations)
            rows = [("labelgov", ours)]
            if n <= crowdkit_max:
                rows += [(m, fit_in_child(m, n, k, iterations)) for m in ("crowdkit_ds", "crowdkit_mv")]
            for method, r in rows:
                ratio = r["cpu_seconds"] / ours["cpu_seconds"]
                print(
                    f"{n:>10,} {k:>3} {method:<14} {r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f} {r['peak_gb']:>8.2f} "
                    f"{r['accuracy']:>8.4f} {ratio:>10.1f}x"
                )


def page_table(db: str) -> None:
    from queries import reliability
    from queries.connection import connect
    from queries.filters import Filters

    with connect(db, read_only=True) as con:
        row = con.execute("SELECT annotator_id FROM d_ds_annotators ORDER BY answers DESC LIMIT 1").fetchone()
        busiest = row[0] if row else ""
        week = con.execute("SELECT max(week) FROM d_answers").fetchone()
        filtered = Filters(start=(week[0] if week and week[0] else None))
        n = con.execute("SELECT count(*) FROM d_answers").fetchone()
        print(f"\npage functions on {db} ({n[0] if n else 0:,} answers), median of 5 warm runs")
        cases: list[tuple[str, Callable[[], object]]] = [
            ("annotator_table (all)", lambda: reliability.annotator_table(con, Filters())),
            ("annotator_table (last week)", lambda: reliability.annotator_table(con, filtered)),
            ("confusion_matrix (busiest)", lambda: reliability.confusion_matrix(con, Filters(), busiest)),
            ("reliability_over_time (busiest)", lambda: reliability.reliability_over_time(con, Filters(), busiest)),
            ("reliability_over_time (all)", lambda: reliability.reliability_over_time(con, Filters())),
            ("speed_vs_accuracy (all)", lambda: reliability.speed_vs_accuracy(con, Filters())),
        ]
        for name, fn in cases:
            print(f"{name:<34} {median_warm(fn).wall * 1000:>9.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", default="1000000,10000000", help="answer counts, comma-separated (empty: skip the engine table)"
    )
    parser.add_argument("--classes", default="4,44", help="class counts (44 = leaves of the demo tree)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--crowdkit-max", type=int, default=1_000_000)
    parser.add_argument("--db", help="a refreshed warehouse for the page timings")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, k, it = args.child
        print(json.dumps(fit_once(method, int(n), int(k), int(it))))
        return
    if args.sizes:
        engine_table(
            [int(x) for x in args.sizes.split(",")],
            [int(x) for x in args.classes.split(",")],
            args.iterations,
            args.crowdkit_max,
        )
    if args.db:
        page_table(args.db)


if __name__ == "__main__":
    main()
