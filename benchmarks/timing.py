"""How every benchmark times a function, so that their tables measure the same thing."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple


class Timing(NamedTuple):
    wall: float
    cpu: float


def cpu_seconds() -> float:
    """This process's CPU time, DuckDB's threads included: wall time swings with the machine's load, CPU time
    much less, so CPU seconds compare across runs on a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_warm(fn: Callable[[], object], runs: int = 5) -> Timing:
    """Median wall and CPU seconds of ``runs`` calls after one untimed call, which fills DuckDB's caches and
    imports lazily loaded modules: the dashboard serves warm calls, so cold start is not what is measured."""
    fn()
    walls, cpus = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), cpu_seconds()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
    return Timing(statistics.median(walls), statistics.median(cpus))
