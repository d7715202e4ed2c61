"""Render time of every dashboard page in Streamlit's AppTest, cold (empty result cache) and warm.

Builds the medium and large demo warehouses under /tmp when they are missing (`labelgov demo` then
`labelgov refresh`; the large one takes a few minutes). Cold clears st.cache_data before the page runs,
so every analytic query goes to DuckDB; warm is the median of the next runs of the same page. Module
imports are paid once before measuring, as a running server would have.

Each page is measured unfiltered (the stored tables answer) and, with ``--filtered``, under the busiest
branch, source and annotator tier set through the URL's query parameters, as a shared link would: those
views compute live from the answers and are the slow case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DBS = {"medium": "/tmp/labelgov_pages_medium.duckdb", "large": "/tmp/labelgov_pages_large.duckdb"}
APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


def ensure(scale: str, db: str) -> None:
    if Path(db).exists():
        return
    for args in (["demo", "--scale", scale, "--no-serve", "--db", db], ["refresh", "--db", db]):
        subprocess.run([sys.executable, "-m", "dashboard.cli", *args], check=True)


def answers(db: str) -> int:
    from queries.connection import connect

    with connect(db, read_only=True) as con:
        row = con.execute("SELECT count(*) FROM annotations").fetchone()
    return int(row[0]) if row else 0


def busiest(db: str) -> dict[str, dict[str, str]]:
    """Query parameters for the busiest top-level branch, source and tier: the largest filtered views."""
    from queries.connection import connect

    sql = {
        "branch": "SELECT consensus_lineage[2] FROM d_items GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
        "sources": "SELECT source FROM d_items GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
        "tiers": "SELECT tier FROM d_answers WHERE tier IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    }
    found: dict[str, dict[str, str]] = {}
    with connect(db, read_only=True) as con:
        for name, query in sql.items():
            row = con.execute(query).fetchone()
            if row and row[0] is not None:
                found[name + "=" + str(row[0])] = {name: str(row[0])}
    return found


def measure(
    db: str, role: str, warm_runs: int, params: dict[str, str]
) -> list[tuple[str, float, float, bool]]:
    """(page, cold seconds, warm median seconds, whether the page showed an exception) per page."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.navigation import PAGES, ROLE_PAGES, Role

    os.environ["LABELGOV_DB"] = db
    os.environ["LABELGOV_ROLE"] = role
    at = AppTest.from_file(APP, default_timeout=900)
    at.query_params = dict(params)  # the session keeps these filters from its first run on
    at.run()
    if params and "labelgov_filters" in at.session_state and at.session_state["labelgov_filters"].is_empty():
        raise SystemExit(f"the app did not take the filters {params}")
    hashes = {
        key: h
        for key in ROLE_PAGES[Role(role)]
        for h, info in at._registered_pages.items()
        if info.get("url_pathname") == key or info.get("page_name") == PAGES[key].title
    }
    for key in hashes:  # imports and first-use costs, as in a running server
        at._page_hash = hashes[key]
        at.run()
    rows = []
    for key, page_hash in hashes.items():
        st.cache_data.clear()
        at._page_hash = page_hash
        t0 = time.perf_counter()
        at.run()
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(warm_runs):
            t0 = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t0)
        rows.append((key, cold, statistics.median(warm), bool(at.exception)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", action="append", help="scale=path, e.g. medium=/tmp/m.duckdb (repeatable)")
    parser.add_argument("--role", default="admin")
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--filtered", action="store_true", help="also under the busiest branch, source and tier")
    args = parser.parse_args()
    targets = dict(item.split("=", 1) for item in args.db) if args.db else DEFAULT_DBS
    print(f"{'warehouse':10s} {'answers':>11s} {'filter':24s} {'page':15s} {'cold s':>8s} {'warm s':>8s}  note")
    for scale, db in targets.items():
        ensure(scale, db)
        n = answers(db)
        views = {"(none)": {}, **(busiest(db) if args.filtered else {})}
        for label, params in views.items():
            for page, cold, warm, failed in measure(db, args.role, args.warm_runs, params):
                note = "EXCEPTION" if failed else ("" if cold <= 3 and warm <= 1 else "over target")
                print(f"{scale:10s} {n:11,d} {label:24s} {page:15s} {cold:8.2f} {warm:8.2f}  {note}", flush=True)


if __name__ == "__main__":
    main()
