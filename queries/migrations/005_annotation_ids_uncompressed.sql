-- Annotation ids and item ids are (nearly) unique strings. DuckDB's default string compression for them
-- (DICT_FSST) makes them about 2.5x smaller but is the largest cost of writing a batch: stored uncompressed,
-- writing ten million annotations takes half the CPU time, for about 18 bytes more per annotation, and scans
-- of these columns are no slower. Low-cardinality strings (annotator, node, stage) keep their compression.
-- DuckDB cannot alter a column's compression: the table is rebuilt with its rows, in the same order, as a
-- table beside the old one (not a temporary copy, which would hold every annotation in memory).
CREATE TABLE annotations_005 (
    annotation_id VARCHAR USING COMPRESSION uncompressed NOT NULL,
    item_id VARCHAR USING COMPRESSION uncompressed NOT NULL,
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
INSERT INTO annotations_005 SELECT * FROM annotations;
DROP TABLE annotations;
ALTER TABLE annotations_005 RENAME TO annotations;
