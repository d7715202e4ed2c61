"""The base derived tables every analysis reads.

``d_answers`` is the annotation fact table denormalised once at refresh: each answer with its node's
lineage (root-first ids, so the ancestor at depth L is ``lineage[L]``), its item's and annotator's
attributes, dense integer indices for the vectorised statistics, and its item's consensus lineage for
branch filtering. Page queries then scan one table instead of joining four.
"""

from __future__ import annotations

import duckdb

D_NODES = """
CREATE OR REPLACE TABLE d_nodes AS
SELECT tree_version, node_id, parent_id, title, depth, is_leaf, status, ordinal,
       string_split(path, '/') AS lineage
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

# Plurality node per item; ties go to the node first in the tree's order so the result is deterministic.
D_ITEMS = """
CREATE OR REPLACE TABLE d_items AS
WITH votes AS (
    SELECT a.item_id, a.tree_version, a.node_id, count(*) AS n, min(n.ordinal) AS ordinal
    FROM annotations a JOIN d_nodes n USING (tree_version, node_id)
    GROUP BY ALL
), ranked AS (
    SELECT *, sum(n) OVER (PARTITION BY item_id) AS answers,
           row_number() OVER (PARTITION BY item_id ORDER BY n DESC, ordinal) AS rk
    FROM votes
)
SELECT r.item_id, x.item_idx, i.source, i.segment, i.split, i.created_at, i.content_hash,
       r.answers, r.tree_version, r.node_id AS consensus_node, r.n / r.answers AS consensus_share,
       n.lineage AS consensus_lineage
FROM ranked r
JOIN d_item_index x USING (item_id)
JOIN d_nodes n USING (tree_version, node_id)
LEFT JOIN (SELECT DISTINCT ON (item_id) * FROM items) i USING (item_id)
WHERE r.rk = 1
"""

D_ANSWERS = """
CREATE OR REPLACE TABLE d_answers AS
SELECT a.annotation_id, a.item_id, x.item_idx, a.annotator_id, ax.annotator_idx,
       a.tree_version, a.node_id, n.depth, n.is_leaf, n.lineage,
       a.stage, a.created_at, date_trunc('week', a.created_at) AS week,
       a.duration_s, a.cost, a.confidence, a.guideline_version, a.batch_id,
       di.source, di.segment, di.split, di.consensus_lineage AS item_lineage,
       coalesce(an.kind, 'crowd') AS annotator_kind, an.tier
FROM annotations a
JOIN d_nodes n USING (tree_version, node_id)
JOIN d_item_index x USING (item_id)
JOIN d_annotator_index ax USING (annotator_id)
LEFT JOIN d_items di USING (item_id)
LEFT JOIN (SELECT DISTINCT ON (annotator_id) * FROM annotators) an USING (annotator_id)
ORDER BY x.item_idx
"""


def build(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild the base tables; the item and annotator indices only ever grow, so indices stay stable."""
    con.execute(D_NODES)
    con.execute(D_ITEM_INDEX)
    con.execute(D_ITEMS)
    con.execute(D_ANSWERS)
