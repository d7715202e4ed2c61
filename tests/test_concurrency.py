"""Concurrent use: people reading the dashboard while the warehouse is written.

Five browser sessions reload pages and twenty threads run page queries through the dashboard's access
layer while another process ingests a 300,000-row batch and refreshes, and two stewards approve and
apply a proposal from the command line. No session may see an error, every write must land exactly
once, and after the refresh every session's overview must show the new annotation count.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dashboard import access
from dashboard.navigation import PAGES as PAGE_SPECS
from governance import proposals, versions
from queries import contested, data_quality, drift, overview, reliability
from queries.connection import bump_data_version, connect, data_version, transaction, write_in_progress
from queries.errors import WarehouseBusy
from queries.filters import Filters
from tests.browser import CHROMIUM_ARGS, READY, chromium_path, dashboard_server

LABELGOV = Path(sys.executable).parent / "labelgov"
PAGES = ("overview", "label_tree", "disagreements", "annotators", "drift", "governance")
SESSIONS = 5
QUERY_THREADS = 20
BATCH_ROWS = 300_000
BAD_EVERY = 100  # every hundredth row names a label the tree lacks: quarantined, never written
# Bounds: every loop stops at its count or at the deadline, whichever comes first.
MAX_ROUNDS = 6  # rounds over PAGES per browser session
MAX_CALLS = 150  # page queries per thread, one a second: they span the writes
PHASE_S = 300.0
PAGE_MS = 180_000  # a cold page on a busy two-core machine
WRITE_S = 300.0
# Text that must never reach a reader, whatever element it is in.
FORBIDDEN = ("traceback", "stale lock", "locked by another process", "could not set lock", "conflicting lock")

MERGE = """\
title: Merge scam and phishing
rationale: Annotators cannot tell scam from phishing, and both get the same enforcement.
operations:
  - op: merge
    nodes: [spam_phishing]
    into: spam_scam
"""

# Page-level functions as the views call them: (function, keyword arguments, takes filters).
QUERIES: tuple[tuple[Callable[..., Any], dict[str, Any], bool], ...] = (
    (overview.overview, {}, True),
    (data_quality.check_counts, {}, True),
    (drift.drift_alerts, {"limit": 5}, True),
    (contested.contested_items, {"limit": 20}, True),
    (reliability.annotator_table, {}, True),
    (proposals.list_proposals, {}, False),
    (versions.versions, {}, False),
)


def labelgov(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LABELGOV), *args, "--db", str(db)], capture_output=True, text=True, timeout=WRITE_S, check=False
    )


def ok(db: Path, *args: str) -> str:
    done = labelgov(db, *args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"labelgov {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def scalar(db: Path, sql: str) -> Any:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()[0][0]


def period_annotations(db: Path) -> int:
    """What the overview's Annotations tile must say without filters: answers in the newest 28 days."""
    return int(scalar(db, "WITH e AS (SELECT max(created_at)::DATE AS d FROM annotations) "
                          "SELECT count(*) FROM annotations, e WHERE created_at::DATE BETWEEN d - 27 AND d"))


def write_batch(db: Path, target: Path) -> None:
    """300,000 answers on 30,000 new items in the week after the demo ends, from the demo's annotators."""
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute(
            "COPY (WITH leaves AS (SELECT list(n.node_id ORDER BY n.node_id) AS l FROM tree_nodes n "
            "  WHERE n.tree_version = 1 AND NOT EXISTS (SELECT 1 FROM tree_nodes c "
            "  WHERE c.tree_version = 1 AND c.parent_id = n.node_id)), "
            " people AS (SELECT list(annotator_id ORDER BY annotator_id) AS a FROM annotators) "
            "SELECT 'bulk-' || lpad(i::VARCHAR, 7, '0') AS annotation_id, "
            "  'bulk-item-' || lpad((i // 10)::VARCHAR, 6, '0') AS item_id, "
            "  a[1 + (hash(i, 1) % len(a))::INT] AS annotator_id, "
            "  CASE WHEN i % $bad = $bad - 1 THEN 'no_such_label' "
            "       ELSE l[1 + (hash(i // 10, CASE WHEN i % 3 = 0 THEN i ELSE 0 END) % len(l))::INT] END AS label, "
            "  TIMESTAMP '2026-07-06' + to_seconds((hash(i, 2) % 604800)::BIGINT) AS created_at, "
            "  20.0 AS duration_s, 0.05 AS cost "
            "FROM range($rows) t(i), leaves, people) TO '" + str(target).replace("'", "''") + "' (HEADER)",
            {"rows": BATCH_ROWS, "bad": BAD_EVERY},
        )


@dataclass
class Log:
    """What every reader and writer saw, appended from many threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    page_loads: int = 0
    slowest_load_s: float = 0.0
    query_calls: int = 0
    tiles_seen: dict[int, list[float]] = field(default_factory=dict)
    final_tiles: list[int] = field(default_factory=list)
    writes: dict[str, str] = field(default_factory=dict)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


# --- the writers ------------------------------------------------------------------------------------


def ingest_then_refresh(db: Path, batch: Path, log: Log) -> None:
    for args in (("ingest", "annotations", str(batch)), ("refresh",)):
        started = time.monotonic()
        done = labelgov(db, *args)
        log.writes[args[0]] = f"{time.monotonic() - started:.1f} s: " + done.stdout + done.stderr
        if done.returncode != 0 or "Traceback" in done.stderr:
            log.error(f"labelgov {args[0]} failed: {done.stderr[-2000:]}")
            return


def approve_then_apply(db: Path, proposal_id: str, report_hash: str, log: Log) -> None:
    """Approve and apply as the second steward; an ingest landing in between changes the impact report,
    so the signed report goes stale and the stewards review the new one, as the four-eyes rule asks."""
    for attempt in range(3):
        started = time.monotonic()
        approved = labelgov(db, "proposal", "approve", proposal_id, "--as", "sam", "--ack-report", report_hash)
        applied = labelgov(db, "proposal", "apply", proposal_id, "--as", "sam")
        log.writes[f"approve and apply, attempt {attempt + 1}"] = (
            f"{time.monotonic() - started:.1f} s: " + approved.stdout + applied.stdout + applied.stderr
        )
        if approved.returncode != 0 or "Traceback" in approved.stderr + applied.stderr:
            log.error(f"approve failed: {approved.stderr[-2000:]}")
            return
        if applied.returncode == 0:
            return
        if "refused by rule signed-report" not in applied.stderr:
            log.error(f"apply failed: {applied.stderr[-2000:]}")
            return
        ok(db, "proposal", "submit", proposal_id, "--as", "pat")
        report_hash = re.search(r"impact report ([0-9a-f]{64})", ok(db, "proposal", "show", proposal_id)).group(1)
    log.error("the proposal went stale three times in a row")


# --- the readers --------------------------------------------------------------------------------------


def run_queries(index: int, log: Log, stop: threading.Event, deadline: float) -> None:
    """Page queries through the dashboard's access layer (gate, read-only handle, cache on the data version).

    The last call, once the writers are done, reads the overview again: it must see the refreshed numbers.
    """
    seen: list[float] = []
    calls = 0

    def call(func: Callable[..., Any], kwargs: dict[str, Any], filtered: bool) -> None:
        try:
            result = access.query(func, Filters(), **kwargs) if filtered else access.call(func)
        except Exception as exc:  # any failure a reader meets is the finding
            log.error(f"query thread {index} {func.__name__}: {type(exc).__name__}: {exc}")
            return
        if func is overview.overview:
            seen.append(next(t.value for t in result.tiles if t.key == "annotations"))

    while calls < MAX_CALLS and not stop.is_set() and time.monotonic() < deadline:
        call(*QUERIES[(index + calls) % len(QUERIES)])
        calls += 1
        time.sleep(1.0)
    stop.wait(timeout=max(0.0, deadline - time.monotonic()))
    call(*QUERIES[0])
    with log.lock:
        log.query_calls += calls + 1
        log.tiles_seen[index] = seen


def page_url(base: str, key: str) -> str:
    return base + "/" if key == PAGES[0] else base + "/" + key


async def problems(page: Any) -> list[str]:
    found = []
    for test_id in ("stException", "stAlertContentError"):
        boxes = page.locator(f'[data-testid="{test_id}"]')
        found += [f"{test_id}: {text[:500]}" for text in await boxes.all_inner_texts()]
    text = (await page.locator('[data-testid="stApp"]').inner_text(timeout=PAGE_MS)).lower()
    found += [f"page says {needle!r}" for needle in FORBIDDEN if needle in text]
    return found


async def annotations_tile(page: Any) -> int | None:
    metrics = page.locator('[data-testid="stMetric"]')
    for i in range(await metrics.count()):
        label = await metrics.nth(i).locator('[data-testid="stMetricLabel"]').inner_text()
        if label.strip() == "Annotations":
            value = await metrics.nth(i).locator('[data-testid="stMetricValue"]').inner_text()
            return int(value.strip().replace(",", ""))
    return None


async def load(page: Any, base: str, key: str, who: str, log: Log) -> bool:
    started = time.monotonic()
    try:
        await page.goto(page_url(base, key), wait_until="commit", timeout=PAGE_MS)
        # The app reports "not running" before its first run starts too: wait for the page's own title.
        await page.locator("h1").filter(has_text=PAGE_SPECS[key].title).first.wait_for(timeout=PAGE_MS)
        await page.wait_for_selector(READY, timeout=PAGE_MS)
        await page.wait_for_timeout(300)
        await page.wait_for_selector(READY, timeout=PAGE_MS)
        found = await problems(page)
    except Exception as exc:  # a page that never finishes is an error the session saw
        found = [f"{type(exc).__name__}: {str(exc)[:300]}"]
    with log.lock:
        log.page_loads += 1
        log.slowest_load_s = max(log.slowest_load_s, time.monotonic() - started)
    for problem in found:
        log.error(f"{who} /{key}: {problem}")
    return not found


async def session(browser: Any, base: str, index: int, log: Log, stop: threading.Event, deadline: float) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    order = PAGES[index % len(PAGES):] + PAGES[: index % len(PAGES)]
    who = f"session {index}"
    for _ in range(MAX_ROUNDS):
        for key in order:
            if stop.is_set() or time.monotonic() > deadline:
                break
            await load(page, base, key, who, log)
        if stop.is_set() or time.monotonic() > deadline:
            break
    while not stop.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    # The writers are done: a reload must show the refreshed numbers.
    if await load(page, base, PAGES[0], who, log):
        await page.locator('[data-testid="stMetric"]').first.wait_for(timeout=PAGE_MS)
        value = await annotations_tile(page)
        if value is None:
            log.error(f"{who}: the overview shows no Annotations tile")
        with log.lock:
            log.final_tiles.append(value)
    await context.close()


def run_browsers(base: str, log: Log, stop: threading.Event, deadline: float) -> None:
    from playwright.async_api import async_playwright

    async def main() -> None:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                await asyncio.gather(*(session(browser, base, i, log, stop, deadline) for i in range(SESSIONS)))
            finally:
                await browser.close()

    try:
        asyncio.run(main())
    except Exception as exc:  # reported as a failure of the test, not lost in a thread
        log.error(f"browser: {type(exc).__name__}: {exc}")


# --- the gate and the cache on their own ------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
# A labelgov process holding the warehouse until its stdin closes; with "write" it then commits a write.
HOLDER = """\
import sys
from queries.connection import bump_data_version, connect, transaction
with connect(sys.argv[1], read_only=sys.argv[2] == "read") as con:
    print("open", flush=True)
    sys.stdin.read()
    if sys.argv[2] == "write":
        with transaction(con):
            bump_data_version(con)
"""


def holder(db: Path, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), mode], cwd=REPO, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc


def wait_open(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    db = tmp_path / "w.duckdb"
    with connect(db):
        pass
    return db


def version_of(db: Path) -> int:
    with connect(db, read_only=True, wait_s=30) as con:
        return data_version(con)


def test_a_waiting_writer_queues_new_readers_and_then_writes(warehouse: Path) -> None:
    before = version_of(warehouse)
    reader = holder(warehouse, "read")
    wait_open(reader)
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(warehouse), "write"], cwd=REPO, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not write_in_progress(warehouse):
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached the gate"
            time.sleep(0.05)
        # The reader inside keeps the writer out; a new reader would be let in by DuckDB, but the gate holds it.
        with pytest.raises(WarehouseBusy), connect(warehouse, read_only=True, wait_s=0.5):
            pass
        assert writer.poll() is None
        assert reader.stdin is not None
        reader.stdin.close()
        assert reader.wait(timeout=60) == 0
        assert writer.wait(timeout=60) == 0
    finally:
        for proc in (reader, writer):
            proc.kill()
            proc.wait()
    assert not write_in_progress(warehouse)
    assert version_of(warehouse) == before + 1


def test_a_writer_that_dies_leaves_no_lock_behind(warehouse: Path) -> None:
    proc = holder(warehouse, "write")
    wait_open(proc)
    assert write_in_progress(warehouse)
    proc.kill()
    proc.wait()
    assert not write_in_progress(warehouse)
    assert version_of(warehouse) == 0


def test_pages_keep_the_last_committed_state_during_a_write_and_cache_nothing_under_a_moved_key(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch, quiet_streamlit: None
) -> None:
    monkeypatch.setenv("LABELGOV_DB", str(warehouse))
    monkeypatch.setattr(access, "READ_WAIT_S", 0.5)  # a reader that does wait fails fast here

    def version_seen(con: duckdb.DuckDBPyConnection) -> int:
        return data_version(con)

    before = access.call(version_seen)
    old_key = access.warehouse_state().key
    proc = holder(warehouse, "write")
    try:
        wait_open(proc)
        # Another process is writing: the state from before the write, and its cached result, at once.
        assert access.warehouse_state().key == old_key
        assert access.call(version_seen) == before
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    # The write committed: the files changed, so the next read sees the new version.
    assert access.call(version_seen) == before + 1
    assert access.warehouse_state().key != old_key
    # A query first asked under the old key, after the write: the data moved on, so nothing is stored.
    for _ in range(2):
        with pytest.raises(access._KeyMoved):
            access._cached_plain(str(warehouse), old_key, version_seen, "asked late", "()")
    with connect(warehouse) as con, transaction(con):
        bump_data_version(con)
    assert access.call(version_seen) == before + 2


def test_a_question_asked_with_and_without_its_defaults_is_computed_once(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch, quiet_streamlit: None
) -> None:
    monkeypatch.setenv("LABELGOV_DB", str(warehouse))
    runs: list[tuple[str, int]] = []

    def grouped(con: duckdb.DuckDBPyConnection, f: Filters, by: str = "level", bootstrap: int = 0) -> int:
        runs.append((by, bootstrap))
        return data_version(con)

    first = access.query(grouped, Filters(), by="level")
    assert access.query(grouped, Filters(), by="level", bootstrap=0) == first
    assert access.query(grouped, Filters()) == first
    assert runs == [("level", 0)]
    access.query(grouped, Filters(), bootstrap=200)
    assert runs == [("level", 0), ("level", 200)]


# --- the test -------------------------------------------------------------------------------------


@pytest.fixture
def quiet_streamlit() -> None:
    """Page queries run here outside `streamlit run`; Streamlit says so on every call."""
    for name in ("streamlit.runtime.caching.cache_data_api", "streamlit.runtime.scriptrunner_utils.script_run_context",
                 "streamlit.runtime.state.session_state_proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)


@pytest.mark.browser
@pytest.mark.xdist_group("browser")
@pytest.mark.timeout(1500)  # bounded loops inside; on a machine shared with other jobs the writes crawl
def test_readers_see_no_error_while_ingest_refresh_and_apply_write_once(
    small_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_streamlit: None
) -> None:
    chromium_path()
    db = tmp_path / "busy.duckdb"
    shutil.copy(small_demo, db)
    monkeypatch.setenv("LABELGOV_DB", str(db))
    ok(db, "roles", "grant", "alice", "admin", "--as", "alice")
    for steward in ("sam", "pat"):
        ok(db, "roles", "grant", steward, "steward", "--as", "alice")
    (tmp_path / "merge.yaml").write_text(MERGE)
    created = ok(db, "propose", str(tmp_path / "merge.yaml"), "--as", "pat")
    proposal_id = re.search(r"proposal (\d+) created", created).group(1)
    ok(db, "proposal", "submit", proposal_id, "--as", "pat")
    report_hash = re.search(r"impact report ([0-9a-f]{64})", ok(db, "proposal", "show", proposal_id)).group(1)
    batch = tmp_path / "batch.csv"
    write_batch(db, batch)

    with duckdb.connect(str(db), read_only=True) as con:
        annotations_before, batches_before, versions_before = con.execute(
            "SELECT (SELECT count(*) FROM annotations), (SELECT count(*) FROM ingest_batches), "
            "(SELECT count(*) FROM tree_versions)"
        ).fetchall()[0]
    tile_before = period_annotations(db)

    log = Log()
    stop = threading.Event()
    started = time.monotonic()
    deadline = started + PHASE_S
    with dashboard_server(db, "steward") as base:
        local = base.replace("localhost", "127.0.0.1")
        readers = [threading.Thread(target=run_browsers, args=(local, log, stop, deadline))]
        readers += [
            threading.Thread(target=run_queries, args=(i, log, stop, deadline)) for i in range(QUERY_THREADS)
        ]
        for thread in readers:
            thread.start()
        time.sleep(3)  # the readers are at work before the writers start
        writers = [
            threading.Thread(target=ingest_then_refresh, args=(db, batch, log)),
            threading.Thread(target=approve_then_apply, args=(db, proposal_id, report_hash, log)),
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=2 * WRITE_S)
        writes_s = time.monotonic() - started
        stop.set()
        for thread in readers:
            thread.join(timeout=PHASE_S)
        assert not any(t.is_alive() for t in readers + writers), "a reader or writer did not finish in time"
    elapsed = time.monotonic() - started

    summary = (
        f"{SESSIONS} sessions, {log.page_loads} page loads (slowest {log.slowest_load_s:.1f} s), "
        f"{QUERY_THREADS} query threads, {log.query_calls} calls; writers done after {writes_s:.1f} s, "
        f"phase {elapsed:.1f} s"
    )
    print(summary)
    for name, output in log.writes.items():
        print(f"{name}: {output.strip()[:400]}")
    assert not log.errors, summary + "\n" + "\n".join(log.errors[:20])

    # The batch landed exactly once, with exactly its accepted rows.
    accepted = BATCH_ROWS - BATCH_ROWS // BAD_EVERY
    with duckdb.connect(str(db), read_only=True) as con:
        batches, annotations, distinct_ids, versions_after, applies, ingests, status = con.execute(
            "SELECT (SELECT count(*) FROM ingest_batches), (SELECT count(*) FROM annotations), "
            "(SELECT count(DISTINCT annotation_id) FROM annotations), (SELECT count(*) FROM tree_versions), "
            "(SELECT count(*) FROM audit_log WHERE action = 'proposal.apply'), "
            "(SELECT count(*) FROM audit_log WHERE action = 'ingest.annotations'), "
            "(SELECT status FROM proposals WHERE proposal_id = ?)",
            [int(proposal_id)],
        ).fetchall()[0]
        landed = con.execute(
            "SELECT rows_read, rows_accepted FROM ingest_batches ORDER BY batch_id DESC LIMIT 1"
        ).fetchall()[0]
    assert (batches, ingests) == (batches_before + 1, 1)
    assert landed == (BATCH_ROWS, accepted)
    assert annotations == distinct_ids == annotations_before + accepted
    # The proposal applied exactly once, and applying again changes nothing.
    assert (applies, versions_after, status) == (1, versions_before + 1, "applied")
    assert "already applied" in ok(db, "proposal", "apply", proposal_id, "--as", "sam")
    assert scalar(db, "SELECT count(*) FROM tree_versions") == versions_after
    assert "verified" in ok(db, "audit", "verify")

    # Readers saw the old number, then the new one, never anything else and never going back.
    tile_after = period_annotations(db)
    assert tile_after > tile_before
    assert log.final_tiles == [tile_after] * SESSIONS
    for index, seen in log.tiles_seen.items():
        assert seen, f"query thread {index} never read the overview"
        assert set(seen) <= {tile_before, tile_after}, f"query thread {index} saw {sorted(set(seen))}"
        assert seen == sorted(seen), f"query thread {index} went back to old numbers"
        assert seen[-1] == tile_after, f"query thread {index} did not see the refreshed numbers"
