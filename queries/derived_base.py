"""The base derived tables every analysis reads.

``d_answers`` is the annotation fact table denormalised once at refresh: each answer with its node's depth,
its item's and annotator's attributes and dense integer indices for the vectorised statistics. Page
queries then scan one table instead of joining four; the branch filter (an item-level property) is a
semi-join on ``d_items``. A node's lineage (root-first ids, the ancestor at depth L is ``lineage[L]``)
lives once per node in ``d_nodes``: a query that needs ancestors joins it on (tree_version, node_id), a
hash join against a few hundred rows, instead of every answer carrying a copy of the list, which cost a
third of writing the table. Each node's ``value_idx`` (its rank among all node ids, the order of
agreement.value_space) and each answer's week start as ``day`` (days since 1970) are stored with the answer,
because the statistics fetch millions of answers as integer arrays and computing both per row on every
filtered query cost a third of the fetch.

Every answer and gold label is seen "as of" one tree version (the latest unless `labelgov refresh
--as-of V` chose another): historical answers are mapped through the recorded migrations, so periods
before and after a taxonomy change stay comparable. ``tree_version`` and ``node_id`` in the derived
tables are the as-of version and the mapped node; ``source_version`` (and in ``d_gold`` and an item's detail,
``source_node_id``) keep what the annotator actually chose. The original rows are never changed.
"""

from __future__ import annotations

import duckdb

from queries.connection import meta_value
from queries.errors import LabelgovError
from queries.results import first_row

D_NODES = """
CREATE OR REPLACE TABLE d_nodes AS
SELECT tree_version, node_id, parent_id, title, depth, is_leaf, status, ordinal,
       string_split(path, '/') AS lineage, CAST(dense_rank() OVER (ORDER BY node_id) - 1 AS SMALLINT) AS value_idx
FROM tree_nodes
"""

D_ITEM_INDEX = """
CREATE TABLE IF NOT EXISTS d_item_index (item_id VARCHAR NOT NULL, item_idx INTEGER NOT NULL);
INSERT INTO d_item_index
SELECT item_id, (SELECT coalesce(max(item_idx), -1) FROM d_item_index) + row_number() OVER (ORDER BY item_id)
FROM (SELECT DISTINCT item_id FROM items) i
WHERE NOT EXISTS (SELECT 1 FROM d_item_index d WHERE d.item_id = i.item_id);
CREATE TABLE IF NOT EXISTS d_annotator_index (annotator_id VARCHAR NOT NULL, annotator_idx INTEGER NOT NULL);
INSERT INTO d_annotator_index
SELECT annotator_id,
       (SELECT coalesce(max(annotator_idx), -1) FROM d_annotator_index) + row_number() OVER (ORDER BY annotator_id)
FROM (SELECT DISTINCT annotator_id FROM annotators) i
WHERE NOT EXISTS (SELECT 1 FROM d_annotator_index d WHERE d.annotator_id = i.annotator_id);
"""

D_GOLD = """
CREATE OR REPLACE TABLE d_gold AS
SELECT DISTINCT ON (g.item_id) g.item_id, x.item_idx, CAST(? AS INTEGER) AS tree_version,
       m.target_node_id AS node_id, g.source, g.tree_version AS source_version, g.node_id AS source_node_id
FROM gold_labels g
JOIN as_of_mapping(?) m ON m.tree_version = g.tree_version AND m.node_id = g.node_id
JOIN d_item_index x USING (item_id)
ORDER BY g.item_id, g.batch_id DESC
"""

# Every answer mapped to the as-of version (parameters: that version, twice, then those of ``{answers}``,
# a predicate on the annotations ``a``) in one pass over the annotations: the item's attributes come from
# ``items`` directly, so no per-answer copy of the item's consensus is needed.
ANSWERS_SELECT = """
SELECT a.annotation_id, a.item_id, x.item_idx, a.annotator_id, ax.annotator_idx,
       n.tree_version, n.node_id, a.tree_version AS source_version, a.node_id AS source_node_id,
       n.depth, n.is_leaf, n.value_idx,
       a.stage, a.created_at, date_trunc('week', a.created_at) AS week,
       CAST(date_diff('day', DATE '1970-01-01', date_trunc('week', a.created_at)) AS INTEGER) AS day,
       a.duration_s, a.cost, a.confidence,
       i.source, i.segment,
       coalesce(an.kind, 'crowd') AS annotator_kind, an.tier
FROM annotations a
JOIN as_of_mapping(?) m ON m.tree_version = a.tree_version AND m.node_id = a.node_id
JOIN d_nodes n ON n.tree_version = ? AND n.node_id = m.target_node_id
JOIN d_item_index x USING (item_id)
JOIN d_annotator_index ax USING (annotator_id)
LEFT JOIN (SELECT DISTINCT ON (item_id) item_id, source, segment FROM items) i USING (item_id)
LEFT JOIN (SELECT DISTINCT ON (annotator_id) annotator_id, kind, tier FROM annotators) an USING (annotator_id)
WHERE {answers}
"""

# The table keeps every column but the annotation id and the chosen node id: a unique string per answer was a
# fifth of the cost of writing the table and the chosen node another tenth, and only an item's detail shows
# them, which maps that item's few annotations again (ITEM_ANSWERS). Nor the item's split: the leakage checks
# read it per item, from d_items. Not sorted: ordering ten million wide rows costs more than the rest of the
# step together and spills under the refresh memory limit; readers that need an item's answers together sort
# the few columns they fetch.
D_ANSWERS = (
    "CREATE OR REPLACE TABLE d_answers AS SELECT * EXCLUDE (annotation_id, source_node_id) FROM ("  # noqa: S608 - fixed SQL
    + ANSWERS_SELECT.replace("{answers}", "TRUE")
    + ")"
)
# One item's answers as d_answers holds them, with their annotation ids (parameters: the as-of version twice,
# the item id).
ITEM_ANSWERS = "(" + ANSWERS_SELECT.replace("{answers}", "a.item_id = ?") + ")"

# Plurality node per item; ties go to the node first in the tree's order so the result is deterministic
# (the vote count is the high word of the ranking key, the negated ordinal the low word). Votes are grouped
# by the node's integer value_idx (one per node id, so one per node of the as-of version) and the id is
# looked up once per item: grouping ten million answers by the id string cost twice as much.
D_ITEMS = """
CREATE OR REPLACE TABLE d_items AS
WITH votes AS (
    SELECT item_idx, value_idx, count(*) AS n FROM d_answers GROUP BY ALL
), best AS (
    SELECT v.item_idx, sum(v.n) AS answers,
           arg_max(v.value_idx, (v.n << 32) - n.ordinal) AS value_idx, max(v.n) AS top
    FROM votes v JOIN d_nodes n ON n.tree_version = ? AND n.value_idx = v.value_idx
    GROUP BY v.item_idx
)
SELECT x.item_id, b.item_idx, i.source, i.segment, i.split, i.created_at, i.content_hash,
       b.answers, n.tree_version, n.node_id AS consensus_node, b.top / b.answers AS consensus_share,
       n.lineage AS consensus_lineage
FROM best b
JOIN d_item_index x USING (item_idx)
JOIN d_nodes n ON n.tree_version = ? AND n.value_idx = b.value_idx
LEFT JOIN (
    SELECT DISTINCT ON (item_id) item_id, source, segment, split, created_at, content_hash FROM items
) i USING (item_id)
"""


def as_of_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The tree version analytics are computed in: the one chosen at refresh, else the latest."""
    chosen = meta_value(con, "as_of_version")
    if chosen is not None:
        return int(chosen)
    latest = first_row(con.execute("SELECT max(tree_version) FROM tree_versions"))
    return int(latest[0]) if latest and latest[0] is not None else None


def choose_as_of(con: duckdb.DuckDBPyConnection, version: int | None) -> None:
    """Pin the analytics to ``version``, or follow the latest version again when None."""
    if version is None:
        con.execute("DELETE FROM meta WHERE key = 'as_of_version'")
        return
    if first_row(con.execute("SELECT 1 FROM tree_versions WHERE tree_version = ?", [version])) is None:
        raise LabelgovError(f"tree version {version} does not exist; see `labelgov tree versions`")
    con.execute("INSERT OR REPLACE INTO meta VALUES ('as_of_version', ?)", [str(version)])


def build(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild the base tables; the item and annotator indices only ever grow, so indices stay stable."""
    build_answers(con)
    build_items(con)


def build_answers(con: duckdb.DuckDBPyConnection) -> None:
    """The nodes, indices, gold and answers: all the global model's fit reads, so refresh can start it before
    the items' consensus is built."""
    version = as_of_version(con) or 0
    con.execute(D_NODES)
    con.execute(D_ITEM_INDEX)
    con.execute(D_GOLD, [version, version])
    con.execute(D_ANSWERS, [version, version])


def build_items(con: duckdb.DuckDBPyConnection) -> None:
    """Each item's attributes and consensus (its answers' plurality), read from the answers build_answers wrote."""
    version = as_of_version(con) or 0
    con.execute(D_ITEMS, [version, version])
