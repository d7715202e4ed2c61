"""Every benchmark in turn, on the demo warehouses it needs (built under ./warehouse/bench when missing).

Each script prints its own table; this only sequences them. Expect well over half an hour at full
scale on a 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = HERE.parent / "warehouse" / "bench"


def demo(scale: str) -> Path:
    path = FOLDER / f"{scale}.duckdb"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        for args in (["demo", "--scale", scale, "--no-serve"], ["refresh"]):
            subprocess.run([sys.executable, "-m", "dashboard.cli", *args, "--db", str(path)], check=True)
    return path


def run(module: str, *args: str) -> None:
    print(f"\n=== {module} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "benchmarks." + module, *args], check=False)


def main() -> None:
    run("bench_demo")
    run("bench_ingest")
    large = str(demo("large"))
    medium = str(demo("medium"))
    run("bench_analytics", "--db", large)
    run("bench_impact", "--db", large)
    run("bench_pages", "--db", f"medium={medium}", "--db", f"large={large}")


if __name__ == "__main__":
    main()
