"""`labelgov tree ...`: label-tree versions."""

from __future__ import annotations

import click

from dashboard.cli.common import current_user, db_option
from queries.connection import bump_data_version, connect, transaction
from queries.errors import LabelgovError
from queries.taxonomy import latest_version, read_tree_file, store_tree


@click.group("tree")
def tree_group() -> None:
    """Label trees: import the first version, inspect versions."""


@tree_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@db_option
def import_command(file: str, db: str | None) -> None:
    """Store FILE as version 1 of the warehouse's label tree."""
    tree = read_tree_file(file)
    with open(file, encoding="utf-8-sig") as handle:
        text = handle.read()
    with connect(db) as con:
        existing = latest_version(con)
        if existing is not None:
            stored = con.execute(
                "SELECT content_hash FROM tree_versions WHERE tree_version = ?", [existing]
            ).fetchone()
            if stored and stored[0] == tree.content_hash():
                click.echo(f"tree {tree.taxonomy!r} is already stored as version {existing}; nothing to do")
                return
            raise LabelgovError(
                f"the warehouse already has tree version {existing}; later versions go through a change "
                "proposal (`labelgov propose FILE`)"
            )
        with transaction(con):
            version = store_tree(con, tree, created_by=current_user(), source_text=text)
            bump_data_version(con)
    leaves = len(tree.leaves())
    click.echo(f"stored tree {tree.taxonomy!r} as version {version}: {len(tree.nodes)} nodes, {leaves} leaves")


def register(root: click.Group) -> None:
    root.add_command(tree_group)
