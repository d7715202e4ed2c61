"""Audit the packages installed in this virtualenv for known vulnerabilities with pip-audit.

Run by `make audit` (part of `make check`, which `make test` runs). Outcomes:

- vulnerabilities found: every one is listed and the exit code is 1;
- no vulnerability service answered for any package: one line says the audit was not performed, exit 0.
  pip-audit itself reports "No known vulnerabilities found" when every lookup came back "not found" (as a
  registry mirror without per-version data answers), so a run that audited nothing is never taken as clean;
- otherwise one line with how many packages were audited and how many could not be looked up, exit 0.

Each service is tried in turn under a hard time limit, so an unreachable network can never hang the build.
LABELGOV_OSV_URL points the OSV lookups at another OSV-compatible server (a mirror inside a closed network).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# OSV first: it covers every package index; PyPI's own JSON API answers where OSV is out of reach.
SERVICES = ("osv", "pypi")
SOCKET_TIMEOUT_S = 15
RUN_LIMIT_S = 240


def run_pip_audit(service: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The per-package report from one service, or None and why the service gave no report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        command = [
            sys.executable, "-m", "pip_audit", "--local", "--skip-editable", "--vulnerability-service", service,
            "--format", "json", "--output", str(report), "--progress-spinner", "off",
            "--timeout", str(SOCKET_TIMEOUT_S),
        ]
        if service == "osv" and os.environ.get("LABELGOV_OSV_URL"):
            command += ["--osv-url", os.environ["LABELGOV_OSV_URL"]]
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and pip-audit, no shell
                command, capture_output=True, text=True, timeout=RUN_LIMIT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return None, f"{service}: no answer within {RUN_LIMIT_S} s"
        if not report.exists():
            lines = (done.stderr or done.stdout).strip().splitlines()
            reason = lines[-1].split(" (Caused by")[0] if lines else f"pip-audit exited {done.returncode}"
            return None, f"{service}: {reason}"
        return json.loads(report.read_text())["dependencies"], ""


def main() -> int:
    failures: list[str] = []
    for service in SERVICES:
        dependencies, failure = run_pip_audit(service)
        if dependencies is None:
            failures.append(failure)
            continue
        audited = [d for d in dependencies if "skip_reason" not in d]
        if not audited:
            first = dependencies[0]["skip_reason"] if dependencies else "no packages listed"
            failures.append(f"{service}: none of {len(dependencies)} packages could be looked up (first: {first})")
            continue
        vulnerable = [d for d in audited if d["vulns"]]
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixes = ", ".join(vuln["fix_versions"]) or "no fixed version yet"
                print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})")
        unaudited = len(dependencies) - len(audited)
        print(
            f"dependency audit ({service}): {len(audited)} packages audited, {unaudited} could not be looked up, "
            f"{sum(len(d['vulns']) for d in vulnerable)} known vulnerabilities"
        )
        return 1 if vulnerable else 0
    print("dependency audit NOT performed: no vulnerability service could be reached (" + "; ".join(failures) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
