"""`labelgov` commands for governance."""

from __future__ import annotations

import click


def register(root: click.Group) -> None:
    """Commands are added here as the governance module grows."""
