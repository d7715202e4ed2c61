"""`labelgov ingest`."""

from __future__ import annotations

import click


def register(root: click.Group) -> None:
    """Filled in by the ingest module."""
