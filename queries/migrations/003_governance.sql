-- Governed change of the label tree: proposals, their reviews, applied migrations and the mappings
-- that let every historical annotation be read against any later tree version.
CREATE TABLE proposals (
    proposal_id INTEGER PRIMARY KEY,
    title VARCHAR NOT NULL,
    rationale VARCHAR NOT NULL,
    base_version INTEGER NOT NULL,
    proposer VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    compat_class VARCHAR NOT NULL,
    proposal_hash VARCHAR NOT NULL,
    target_hash VARCHAR NOT NULL,
    report JSON,
    report_hash VARCHAR,
    applied_version INTEGER,
    source_text VARCHAR,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE proposal_operations (
    proposal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    op VARCHAR NOT NULL,
    compat_class VARCHAR NOT NULL,
    spec JSON NOT NULL,
    PRIMARY KEY (proposal_id, seq)
);
-- Everyone who wrote any part of a proposal: none of them may approve it.
CREATE TABLE proposal_editors (
    proposal_id INTEGER NOT NULL,
    editor VARCHAR NOT NULL,
    first_edit_at TIMESTAMP NOT NULL,
    PRIMARY KEY (proposal_id, editor)
);
-- An approval signs the proposal, its impact report and the base version together; any change to one of
-- them voids it.
CREATE TABLE proposal_reviews (
    proposal_id INTEGER NOT NULL,
    reviewer VARCHAR NOT NULL,
    decision VARCHAR NOT NULL,
    comment VARCHAR,
    proposal_hash VARCHAR NOT NULL,
    report_hash VARCHAR,
    base_version INTEGER NOT NULL,
    base_hash VARCHAR NOT NULL,
    acknowledged_report BOOLEAN NOT NULL,
    void BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE proposal_events (
    proposal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    actor VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    from_status VARCHAR,
    to_status VARCHAR NOT NULL,
    comment VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (proposal_id, seq)
);
CREATE TABLE applied_migrations (
    migration_id INTEGER PRIMARY KEY,
    proposal_id INTEGER NOT NULL UNIQUE,
    from_version INTEGER NOT NULL,
    to_version INTEGER NOT NULL UNIQUE,
    checksum VARCHAR NOT NULL,
    annotations_mapped BIGINT NOT NULL,
    annotations_to_relabel BIGINT NOT NULL,
    items_to_relabel BIGINT NOT NULL,
    applied_by VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
);
-- Where a node of an earlier version lands in a later one, stored as the closure over the version chain
-- so that reading history "as of version V" is a single join. The original (version, node) on the
-- annotation is never rewritten.
CREATE TABLE node_mappings (
    to_version INTEGER NOT NULL,
    from_version INTEGER NOT NULL,
    from_node VARCHAR NOT NULL,
    to_node VARCHAR NOT NULL,
    automatic BOOLEAN NOT NULL,
    migration_id INTEGER NOT NULL,
    PRIMARY KEY (to_version, from_version, from_node)
);
CREATE TABLE relabel_queue (
    migration_id INTEGER NOT NULL,
    item_id VARCHAR NOT NULL,
    from_node VARCHAR NOT NULL,
    candidates VARCHAR[] NOT NULL,
    annotations BIGINT NOT NULL,
    status VARCHAR NOT NULL DEFAULT 'pending',
    queued_at TIMESTAMP NOT NULL,
    PRIMARY KEY (migration_id, item_id, from_node)
);
-- "As of version V": for every node of every version, where it lands in V. Earlier versions go through
-- the stored closure; V itself maps to itself (a deprecated node with a replacement to the replacement);
-- later versions map back to the same node id or, for nodes V does not know, to their nearest ancestor
-- that V knows (not automatic). Analytics join it: JOIN as_of_mapping(?) m ON m.tree_version = ...
CREATE MACRO as_of_mapping(target) AS TABLE
SELECT from_version AS tree_version, from_node AS node_id, to_node AS target_node_id, automatic
FROM node_mappings WHERE to_version = target
UNION ALL
SELECT tree_version, node_id,
       CASE WHEN status = 'deprecated' AND replaced_by IS NOT NULL THEN replaced_by ELSE node_id END,
       true
FROM tree_nodes WHERE tree_version = target
UNION ALL
SELECT s.tree_version, s.node_id, arg_max(s.step, s.pos), bool_or(s.step = s.node_id)
FROM (
    SELECT tree_version, node_id, unnest(string_split(path, '/')) AS step,
           generate_subscripts(string_split(path, '/'), 1) AS pos
    FROM tree_nodes WHERE tree_version > target
) s
JOIN tree_nodes t ON t.tree_version = target AND t.node_id = s.step
GROUP BY s.tree_version, s.node_id;
