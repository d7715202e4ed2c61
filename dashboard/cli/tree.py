"""`labelgov tree ...`: label-tree versions."""

from __future__ import annotations

import click

from dashboard.cli.common import audit_recorder, current_user, db_option
from governance import versions as tree_versions
from queries.connection import bump_data_version, connect, transaction
from queries.errors import LabelgovError
from queries.taxonomy import content_hash_of, latest_version, read_tree_file, store_tree


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
            if content_hash_of(con, existing) == tree.content_hash():
                click.echo(f"tree {tree.taxonomy!r} is already stored as version {existing}; nothing to do")
                return
            raise LabelgovError(
                f"the warehouse already has tree version {existing}; later versions go through a change "
                "proposal (`labelgov propose FILE`)"
            )
        with transaction(con):
            version = store_tree(con, tree, created_by=current_user(), source_text=text)
            bump_data_version(con)
            audit_recorder(current_user())(
                con,
                "tree.import",
                {"tree_version": version, "taxonomy": tree.taxonomy, "content_hash": tree.content_hash()},
            )
    leaves = len(tree.leaves())
    click.echo(f"stored tree {tree.taxonomy!r} as version {version}: {len(tree.nodes)} nodes, {leaves} leaves")


@tree_group.command("show")
@click.option("--version", "version", type=int, default=None, help="Tree version (default: the latest).")
@db_option
def show_command(version: int | None, db: str | None) -> None:
    """Print a tree version as an indented outline with status, codes and successors."""
    with connect(db, read_only=True) as con:
        tree = tree_versions.show(con, version)
    for node in tree.nodes:
        marks = [f"codes {','.join(node.codes)}"] if node.codes else []
        if node.status != "active":
            marks.append(node.status)
        if node.replaced_by:
            marks.append(f"replaced by {node.replaced_by}")
        if node.consider:
            marks.append(f"consider {','.join(node.consider)}")
        if node.aliases:
            marks.append(f"formerly {'; '.join(node.aliases)}")
        click.echo(f"{'  ' * (node.depth - 1)}{node.node_id}  {node.title!r}  [{'; '.join(marks)}]")


@tree_group.command("diff")
@click.argument("old", type=int)
@click.argument("new", type=int)
@db_option
def diff_command(old: int, new: int, db: str | None) -> None:
    """What changed from tree version OLD to version NEW, one line per node attribute."""
    with connect(db, read_only=True) as con:
        changes = tree_versions.diff(con, old, new)
    if changes.empty:
        click.echo(f"versions {old} and {new} have the same nodes")
        return
    click.echo(changes.fillna("").to_string(index=False))


@tree_group.command("versions")
@db_option
def versions_command(db: str | None) -> None:
    """Every tree version with its parent, content hash and the proposal that created it."""
    with connect(db, read_only=True) as con:
        frame = tree_versions.versions(con)
    if frame.empty:
        click.echo("no tree versions yet: run `labelgov tree import FILE`")
        return
    frame["content_hash"] = frame["content_hash"].str[:12]
    frame["checksum"] = frame["checksum"].str[:12]
    columns = ["tree_version", "parent_version", "taxonomy", "created_by", "created_at", "proposal_id", "nodes",
               "active_nodes", "content_hash", "checksum"]
    click.echo(frame[columns].astype(object).fillna("").to_string(index=False))


def register(root: click.Group) -> None:
    root.add_command(tree_group)
