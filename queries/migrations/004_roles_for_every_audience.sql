-- The roles table holds every dashboard audience (leadership, analyst) besides the governance roles,
-- so a signed-in person's pages come from the same grant as their governance rights.
-- DuckDB cannot alter a CHECK constraint: the table is rebuilt with its rows.
CREATE TEMPORARY TABLE roles_before_004 AS SELECT user_id, role, granted_by, granted_at FROM roles;
DROP TABLE roles;
CREATE TABLE roles (
    user_id VARCHAR PRIMARY KEY,
    role VARCHAR NOT NULL CHECK (
        role IN ('viewer', 'leadership', 'analyst', 'proposer', 'steward', 'admin', 'auditor')
    ),
    granted_by VARCHAR NOT NULL,
    granted_at TIMESTAMP NOT NULL
);
INSERT INTO roles SELECT user_id, role, granted_by, granted_at FROM roles_before_004;
DROP TABLE roles_before_004;
