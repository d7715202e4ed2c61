"""Item profiles: the distinct (tree version, source, segment, consensus node) of the items, numbered.

These are the cell columns an item decides (Filters.cell_where), so a table of answers per cell groups its
millions of answers by one integer per item instead of four strings, and names the few thousand profiles after.
The items find their profile by a join that takes NULLs as equal, as GROUP BY does.
"""

from __future__ import annotations

COLUMNS = ("tree_version", "source", "segment", "consensus_node")
PROFILES = (
    "SELECT CAST(row_number() OVER () - 1 AS INTEGER) AS profile, " + ", ".join(COLUMNS)  # noqa: S608 - fixed columns
    + " FROM (SELECT DISTINCT " + ", ".join(COLUMNS) + " FROM d_items)"
)


def of_items(profiles: str) -> str:
    """(item_idx, profile) of every item, against ``profiles`` (a fixed relation name holding PROFILES)."""
    same = " AND ".join("i." + c + " IS NOT DISTINCT FROM p." + c for c in COLUMNS)
    return "SELECT i.item_idx, p.profile FROM d_items i JOIN " + profiles + " p ON " + same  # noqa: S608 - fixed names
