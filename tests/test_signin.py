"""Sign-in end to end: a local OpenID Connect provider, the real dashboard server, and Chromium.

The steward's approval comes last: it changes the warehouse, which empties the result cache, and
every sign-in lands on the Overview page, so the earlier tests share one cold render of it.

The provider (oidc-provider-mock) runs in this process on a free port; its login form takes the
account to sign in as. The dashboard is started with a secrets.toml whose [auth] section points at
it, from a temporary directory (Streamlit reads .streamlit/ relative to the working directory), so
the real sign-in, cookie and sign-out round trips run exactly as for a user.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from governance import audit, proposals
from governance.roles import grant
from queries.connection import connect
from tests.browser import CHROMIUM_ARGS, chromium_path, dashboard_server, wait_ready
from tests.conftest import cached_demo

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
REPO = Path(__file__).resolve().parents[1]
ADMIN, PROPOSER, STEWARD, VIEWER = "ann@example.org", "alice@example.org", "sam@example.org", "val@example.org"
NOBODY = "nobody@example.org"
SIDEBAR_NAV = '[data-testid="stSidebarNav"]'


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A demo warehouse with four granted accounts and one submitted proposal awaiting a steward."""
    db = tmp_path_factory.mktemp("signin") / "demo.duckdb"
    shutil.copy(cached_demo(tmp_path_factory, 3000), db)
    with connect(db) as con:
        grant(con, admin_user=ADMIN, user=ADMIN, role="admin")
        for user, role in ((PROPOSER, "proposer"), (STEWARD, "steward"), (VIEWER, "viewer")):
            grant(con, admin_user=ADMIN, user=user, role=role)
        spec = proposals.ProposalFile.model_validate({
            "title": "Clearer name", "rationale": "readers asked", "base_version": None,
            "operations": [{"op": "rename", "node_id": "spam_commercial", "title": "Commercial spam and ads"}],
        })
        created = proposals.create(con, spec, user=PROPOSER)
        proposals.submit(con, created.proposal_id, user=PROPOSER)
    return db, created.proposal_id


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(port=0) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def server(warehouse: tuple[Path, int], provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`labelgov serve` from a directory whose .streamlit/secrets.toml turns sign-in on."""
    chromium_path()
    app_dir = tmp_path_factory.mktemp("app")
    shutil.copytree(REPO / ".streamlit", app_dir / ".streamlit", ignore=shutil.ignore_patterns("secrets.toml*"))
    (app_dir / ".streamlit" / "secrets.toml").write_text(
        "[auth]\n"
        'redirect_uri = "http://localhost:{port}/oauth2callback"\n'
        'cookie_secret = "a-test-cookie-secret-of-some-length"\n'
        'client_id = "labelgov-test"\n'
        'client_secret = "test-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(app_dir)
        # The configured local role must not matter once sign-in is on.
        with dashboard_server(warehouse[0], "admin") as base:
            yield base


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def sign_in(browser, base: str, account: str):  # type: ignore[no-untyped-def]
    """A fresh browser context signed in as ``account`` through the provider's login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(base + "/")
    wait_ready(page)
    assert page.locator(SIDEBAR_NAV).count() == 0, "pages are reachable before signing in"
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector('input[name="sub"]', timeout=30_000)
    page.fill('input[name="sub"]', account)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(base + "/**", timeout=30_000)
    wait_ready(page, timeout_ms=180_000)
    return context, page


def heading(page) -> str:  # type: ignore[no-untyped-def]
    return page.locator("h1").first.inner_text(timeout=10_000).strip()


def test_viewer_cannot_reach_governance_and_signs_out(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    context, page = sign_in(browser, server, VIEWER)
    assert f"{VIEWER} · viewer · signed in" in page.locator('[data-testid="stSidebar"]').inner_text()
    nav = page.locator(SIDEBAR_NAV).inner_text()
    assert "Overview" in nav and "Governance" not in nav and "Roles" not in nav
    for key in ("governance", "roles"):
        page.goto(server + "/" + key)
        wait_ready(page, timeout_ms=180_000)
        assert heading(page).startswith("Overview"), f"a viewer reached /{key}"
    page.goto(server + "/")  # away from Streamlit's "page not found" dialog, which blocks the page
    wait_ready(page)
    page.get_by_role("button", name="Sign out").click()
    # The provider's end-session page asks for confirmation, then returns to the dashboard.
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(server + "/**", timeout=30_000)
    for path in ("/", "/overview"):
        page.goto(server + path)
        wait_ready(page)
        assert page.get_by_role("button", name="Sign in").count() == 1
        assert page.locator(SIDEBAR_NAV).count() == 0
    context.close()


def test_account_without_role_sees_only_whom_to_ask(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    context, page = sign_in(browser, server, NOBODY)
    assert heading(page) == "No role yet"
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert NOBODY in text and "admin" in text
    assert page.locator(SIDEBAR_NAV).count() == 0
    page.goto(server + "/overview")
    wait_ready(page)
    assert heading(page) == "No role yet"
    context.close()


def test_steward_signs_in_and_approves_as_themselves(server: str, browser, warehouse: tuple[Path, int]) -> None:  # type: ignore[no-untyped-def]
    db, proposal_id = warehouse
    context, page = sign_in(browser, server, STEWARD)
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert f"{STEWARD} · steward · signed in" in sidebar
    assert "Local mode" not in page.content()
    assert "Governance" in page.locator(SIDEBAR_NAV).inner_text()
    page.goto(server + "/governance")
    wait_ready(page, timeout_ms=180_000)
    assert heading(page).startswith("Governance")
    page.get_by_role("button", name="Approve").click()
    page.get_by_text(f"Proposal {proposal_id} is now approved.").wait_for(timeout=60_000)
    context.close()
    with connect(db, read_only=True) as con:
        assert proposals.load(con, proposal_id).approvers == [STEWARD]
        approvals = [e for e in audit.recent_events(con, 50) if e.action == "proposal.approve"]
    assert [(e.actor, e.role) for e in approvals] == [(STEWARD, "steward")]
