"""The static checks keep their promises: bandit's skipped rules stay enforced by ruff, and the dependency
audit fails on a planted vulnerability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# One violation of each rule bandit leaves to ruff, in a file that sits where product code does.
PROBE = '''import os
import random

import yaml


def rows(con, table):
    return con.execute("SELECT * FROM " + table + " WHERE id = 1").fetchall()


def jitter():
    return random.random()


def parse(text):
    return yaml.load(text)


def restart():
    os.execv("/usr/bin/python3", ["python3"])
'''


def test_every_rule_bandit_skips_is_enforced_by_ruff_on_product_code() -> None:
    skips = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["bandit"]["skips"]
    found = subprocess.run(
        [str(BIN / "ruff"), "check", "--output-format", "json", "--stdin-filename", "queries/_probe.py", "-"],
        input=PROBE, capture_output=True, text=True, cwd=ROOT, check=False,
    )
    codes = {finding["code"] for finding in json.loads(found.stdout)}
    assert skips, "bandit skips nothing: the explanation in pyproject.toml is stale"
    assert {"S" + skip[1:] for skip in skips} <= codes


class _OneVulnerableOsv(BaseHTTPRequestHandler):
    """An OSV-compatible service that knows one vulnerability, in PyYAML (installed with labelgov)."""

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        vulns = []
        if query["package"]["name"].lower() == "pyyaml":
            vulns = [{
                "id": "PLANTED-0001", "summary": "planted", "modified": "2026-01-01T00:00:00Z",
                "affected": [{"package": {"name": "pyyaml", "ecosystem": "PyPI"},
                              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999"}]}]}],
            }]
        body = json.dumps({"vulns": vulns} if vulns else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture
def osv_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _OneVulnerableOsv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/query"
    server.shutdown()
    server.server_close()


def test_dependency_audit_fails_and_names_a_planted_vulnerability(osv_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "audit_dependencies.py")],
        env={**os.environ, "LABELGOV_OSV_URL": osv_url}, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    vulnerable = [line for line in done.stdout.splitlines() if line.startswith("VULNERABLE")]
    assert len(vulnerable) == 1
    assert vulnerable[0].startswith("VULNERABLE pyyaml ") and "PLANTED-0001 (fixed in: 999)" in vulnerable[0]
    assert "1 known vulnerabilities" in done.stdout
