"""`labelgov` commands for audit."""

from __future__ import annotations

import click


def register(root: click.Group) -> None:
    """Commands are added here as the audit module grows."""
