"""The real dashboard in Chromium: every page for each role, no exception block, screenshots saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.navigation import PAGES, ROLE_PAGES
from governance.roles import Role
from tests.browser import CHROMIUM_ARGS, chromium_path, dashboard_server, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
SHOTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"
ROLES = (Role.LEADERSHIP, Role.ANALYST, Role.STEWARD)
# Each server starts with an empty result cache, so every page is a cold render; on a busy two-core
# machine the heaviest cold pages take longer than wait_ready's default minute.
COLD_PAGE_MS = 180_000


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("browser") / "demo.duckdb"
    for args in (["demo", "--scale", "3000", "--no-serve"], ["refresh"]):
        subprocess.run([sys.executable, "-m", "dashboard.cli", *args, "--db", str(db)], check=True)
    return db


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _url(base: str, role: Role, key: str) -> str:
    # The role's first page is its default page and lives at the root path.
    return base + "/" if ROLE_PAGES[role][0] == key else base + "/" + key


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_every_page_renders_without_exception(role: Role, demo_db: Path, browser) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    with dashboard_server(demo_db, role.value) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for key in ROLE_PAGES[role]:
            page.goto(_url(base, role, key))
            wait_ready(page, timeout_ms=COLD_PAGE_MS)
            assert page.locator('[data-testid="stException"]').count() == 0, f"{role.value}/{key} shows an exception"
            heading = page.locator("h1").first.inner_text(timeout=10_000)
            assert PAGES[key].title.lower() in heading.lower(), f"{role.value}/{key} shows {heading!r}"
            page.screenshot(path=str(SHOTS / f"{role.value}-{key}.png"), full_page=True)
        page.close()


def test_pages_outside_the_role_are_not_routable(demo_db: Path, browser) -> None:  # type: ignore[no-untyped-def]
    with dashboard_server(demo_db, Role.LEADERSHIP.value) as base:
        page = browser.new_page()
        for key in ("governance", "audit", "disagreements"):
            page.goto(base + "/" + key)
            wait_ready(page)
            heading = page.locator("h1").first.inner_text(timeout=10_000)
            assert heading.strip().lower().startswith("overview"), f"leadership reached {key}: {heading!r}"
            assert PAGES[key].title not in page.locator('[data-testid="stSidebarNav"]').inner_text()
        page.close()
