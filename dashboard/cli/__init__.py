"""The ``labelgov`` command line.

Each topic lives in its own module and registers its commands on the root group. ``main`` turns every
expected fault into one line on stderr and a non-zero exit code; a traceback is shown only when
``LABELGOV_DEBUG`` is set.
"""

from __future__ import annotations

import os
import sys

import click

from dashboard.cli import analytics, audit, demo, governance, info, ingest, serve, tree
from dashboard.cli.common import root
from queries.errors import LabelgovError

for module in (analytics, audit, demo, governance, info, ingest, serve, tree):
    module.register(root)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        # Without standalone mode click returns ctx.exit(n)'s code instead of exiting: pass it on.
        code = root.main(args=argv, prog_name="labelgov", standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("labelgov: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except LabelgovError as exc:
        click.echo(f"labelgov: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("labelgov: interrupted; nothing was half-written", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("LABELGOV_DEBUG"):
            raise
        click.echo(
            f"labelgov: internal error: {type(exc).__name__}: {exc} (set LABELGOV_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(3)
