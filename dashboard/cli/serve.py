"""`labelgov serve`: start the dashboard.

Without sign-in the dashboard trusts its configured local identity, so it must not be reachable from
other machines: local mode binds the loopback address only, and ``--address`` is accepted only once
an ``[auth]`` section in .streamlit/secrets.toml makes every visitor sign in.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tomllib
from pathlib import Path

import click

from dashboard.cli.common import db_option
from queries.connection import resolve_db_path
from queries.errors import LabelgovError

APP = Path(__file__).resolve().parent.parent / "app.py"
LOOPBACK = "127.0.0.1"


def secrets_files() -> list[Path]:
    """Where Streamlit looks for secrets.toml for this app: user-wide, working directory, beside the app."""
    return [
        Path.home() / ".streamlit" / "secrets.toml",
        Path.cwd() / ".streamlit" / "secrets.toml",
        APP.parent / ".streamlit" / "secrets.toml",
    ]


def auth_in_files(paths: list[Path]) -> bool:
    """Whether any secrets file has an ``[auth]`` section: the same test the app makes through st.secrets."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            if tomllib.loads(path.read_text(encoding="utf-8")).get("auth"):
                return True
        except tomllib.TOMLDecodeError as exc:
            raise LabelgovError(f"{path} is not valid TOML: {exc}") from None
    return False


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def bind_address(requested: str | None, sign_in: bool) -> str:
    """The address to listen on: loopback unless sign-in is configured and another one was asked for."""
    if requested is None:
        return LOOPBACK
    if not sign_in and not _is_loopback(requested):
        raise LabelgovError(
            f"--address {requested} needs sign-in: without it the dashboard runs in local mode and serves "
            f"{LOOPBACK} only. Add an [auth] section to .streamlit/secrets.toml "
            "(see .streamlit/secrets.toml.example), or drop --address"
        )
    return requested


def serve(db: str | None, port: int, address: str | None = None) -> None:
    """Run Streamlit on the app with the warehouse path handed over in the environment."""
    path = resolve_db_path(db)
    if not path.exists():
        raise LabelgovError(f"no warehouse at {path}: build one with `labelgov demo --no-serve` first")
    sign_in = auth_in_files(secrets_files())
    address = bind_address(address, sign_in)
    env = dict(os.environ, LABELGOV_DB=str(path.resolve()))
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]
    mode = "sign-in required" if sign_in else "local mode, sign-in not configured"
    click.echo(f"labelgov dashboard on http://{address}:{port} ({mode}; warehouse {path})", err=True)
    sys.stdout.flush()
    # Become the server process, so that a signal to `labelgov serve` reaches Streamlit itself and no
    # orphaned server is left behind.
    os.execve(sys.executable, command, env)  # noqa: S606 - fixed argv, no shell


@click.command("serve")
@db_option
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--address", default=None,
    help=f"Address to listen on (default {LOOPBACK}); another one only with sign-in configured.",
)
def serve_command(db: str | None, port: int, address: str | None) -> None:
    """Serve the dashboard on http://127.0.0.1:PORT (or --address, once sign-in is configured)."""
    serve(db, port, address)


def register(root: click.Group) -> None:
    root.add_command(serve_command)
