-- The initial warehouse: label trees, ingest records and the fact tables.
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE schema_migrations (
    version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL
);
CREATE TABLE tree_versions (
    tree_version INTEGER PRIMARY KEY,
    taxonomy VARCHAR NOT NULL,
    label VARCHAR,
    content_hash VARCHAR NOT NULL,
    parent_version INTEGER,
    created_by VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    source_text VARCHAR
);
CREATE TABLE tree_nodes (
    tree_version INTEGER NOT NULL,
    node_id VARCHAR NOT NULL,
    parent_id VARCHAR,
    title VARCHAR NOT NULL,
    description VARCHAR,
    codes VARCHAR[] NOT NULL,
    status VARCHAR NOT NULL DEFAULT 'active',
    depth INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    is_leaf BOOLEAN NOT NULL,
    ordinal INTEGER NOT NULL,
    replaced_by VARCHAR,
    consider VARCHAR[],
    aliases VARCHAR[],
    guideline VARCHAR,
    PRIMARY KEY (tree_version, node_id)
);
CREATE TABLE ingest_batches (
    batch_id INTEGER PRIMARY KEY,
    kind VARCHAR NOT NULL,
    file_name VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    tree_version INTEGER,
    rows_read BIGINT NOT NULL,
    rows_accepted BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    ingested_by VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL
);
CREATE TABLE quarantine (
    batch_id INTEGER NOT NULL,
    row_number BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    original JSON NOT NULL
);
CREATE TABLE items (
    item_id VARCHAR NOT NULL,
    source VARCHAR,
    segment VARCHAR,
    split VARCHAR,
    created_at TIMESTAMP,
    content_hash VARCHAR,
    metadata JSON,
    batch_id INTEGER
);
CREATE TABLE annotators (
    annotator_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL DEFAULT 'crowd',
    tier VARCHAR,
    expertise VARCHAR[],
    cost_rate DOUBLE,
    batch_id INTEGER
);
CREATE TABLE annotations (
    annotation_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    annotator_id VARCHAR NOT NULL,
    tree_version INTEGER NOT NULL,
    node_id VARCHAR NOT NULL,
    confidence DOUBLE,
    distribution MAP(VARCHAR, DOUBLE),
    stage VARCHAR NOT NULL DEFAULT 'initial',
    created_at TIMESTAMP,
    duration_s DOUBLE,
    cost DOUBLE,
    guideline_version VARCHAR,
    batch_id INTEGER NOT NULL
);
CREATE TABLE gold_labels (
    item_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,
    source VARCHAR,
    tree_version INTEGER NOT NULL,
    batch_id INTEGER NOT NULL
);
CREATE TABLE predictions (
    item_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    tree_version INTEGER NOT NULL,
    node_id VARCHAR,
    probabilities MAP(VARCHAR, DOUBLE) NOT NULL,
    created_at TIMESTAMP,
    batch_id INTEGER NOT NULL
);
CREATE TABLE escalations (
    item_id VARCHAR NOT NULL,
    trigger VARCHAR NOT NULL,
    routed_to VARCHAR,
    created_at TIMESTAMP,
    resolved_at TIMESTAMP,
    batch_id INTEGER
);
CREATE TABLE demo_manifest (key VARCHAR PRIMARY KEY, value JSON NOT NULL);
