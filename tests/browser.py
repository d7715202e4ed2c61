"""Running the real dashboard in Debian's Chromium for the browser tests.

Chromium is never downloaded: Playwright drives /usr/bin/chromium. Without it the browser tests skip
with a message saying how to enable them, except under CI (CI=true), where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's Chromium, or skip (fail under CI) when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Debian's chromium is not installed: run `make browser` (apt-get install chromium) to enable"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " — under CI a missing browser is a failure")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dashboard_server(db: Path, role: str, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`labelgov serve` on a free localhost port; yields the base URL and stops the server after."""
    port = free_port()
    env = dict(os.environ, LABELGOV_DB=str(db), LABELGOV_ROLE=role, **(extra_env or {}))
    command = [sys.executable, "-m", "dashboard.cli", "serve", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    raise RuntimeError("dashboard did not start:\n" + output[-3000:]) from None
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_ready(page, timeout_ms: int = 60_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until the script has run to the end (and stays finished for a moment)."""
    page.wait_for_selector(READY, timeout=timeout_ms)
    page.wait_for_timeout(300)
    page.wait_for_selector(READY, timeout=timeout_ms)
