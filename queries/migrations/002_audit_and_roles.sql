-- The tamper-evident audit log and the roles table.
-- audit_log is append-only: each row carries the SHA-256 of its own canonical JSON and the hash of the row
-- before it, so an edit, deletion, insertion or reordering shows up in `labelgov audit verify`. The
-- primary key on seq makes two concurrent appenders collide at commit instead of forking the chain.
-- event_time is UTC. payload holds the exact canonical JSON text whose SHA-256 is payload_hash.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    event_time TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    payload JSON NOT NULL,
    payload_hash VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL
);
-- One role per user; the history of grants and revocations lives in audit_log.
CREATE TABLE roles (
    user_id VARCHAR PRIMARY KEY,
    role VARCHAR NOT NULL CHECK (role IN ('viewer', 'proposer', 'steward', 'admin', 'auditor')),
    granted_by VARCHAR NOT NULL,
    granted_at TIMESTAMP NOT NULL
);
