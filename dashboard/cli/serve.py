"""`labelgov serve`: start the dashboard."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from dashboard.cli.common import db_option
from queries.connection import resolve_db_path
from queries.errors import LabelgovError

APP = Path(__file__).resolve().parent.parent / "app.py"


def serve(db: str | None, port: int, address: str = "localhost") -> None:
    """Run Streamlit on the app with the warehouse path handed over in the environment."""
    path = resolve_db_path(db)
    if not path.exists():
        raise LabelgovError(f"no warehouse at {path}: build one with `labelgov demo --no-serve` first")
    env = dict(os.environ, LABELGOV_DB=str(path.resolve()))
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]
    click.echo(f"labelgov dashboard on http://{address}:{port} (warehouse {path})", err=True)
    sys.stdout.flush()
    # Become the server process, so that a signal to `labelgov serve` reaches Streamlit itself and no
    # orphaned server is left behind.
    os.execve(sys.executable, command, env)  # noqa: S606 - fixed argv, no shell


@click.command("serve")
@db_option
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535))
def serve_command(db: str | None, port: int) -> None:
    """Serve the dashboard on http://localhost:PORT."""
    serve(db, port)


def register(root: click.Group) -> None:
    root.add_command(serve_command)
