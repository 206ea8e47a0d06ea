-- purchase-guard schema v2: envelope encryption, erasure and retention.
--
-- Portable SQL for SQLite and PostgreSQL, like 0001. Personal values stay in their v1
-- columns but are now sealed by the store (TEXT columns hold 'pgs1:' + base64, the
-- voiceprint BYTEA holds the sealed bytes); the schema does not change for that.

-- One wrapped data key per household. The key itself is never here: only the data key
-- encrypted under a master key that lives in settings or a file. Erasure deletes the row.
-- No foreign key to households: a key is created before the household row it protects.
CREATE TABLE data_keys (
    household_id  TEXT  NOT NULL PRIMARY KEY,
    wrapped       BYTEA NOT NULL,
    master_key_id TEXT  NOT NULL, -- which master key wrapped it (rotation finds old ones)
    created_at    TEXT  NOT NULL
);

CREATE INDEX data_keys_by_master_key ON data_keys (master_key_id);

-- Shows that a household was erased, and where its (now unreadable) audit chain ended.
CREATE TABLE household_tombstones (
    household_id  TEXT   NOT NULL PRIMARY KEY,
    erased_at     TEXT   NOT NULL,
    audit_entries BIGINT NOT NULL,
    audit_head    TEXT   NOT NULL
);

-- Retention purges the oldest audit entries; the anchor keeps the hash of the last purged
-- one, so the rest of the chain still verifies from there.
CREATE TABLE audit_anchors (
    household_id TEXT   NOT NULL PRIMARY KEY,
    seq          BIGINT NOT NULL,
    entry_hash   TEXT   NOT NULL,
    at           TEXT   NOT NULL
);

-- The audit table loses its foreign key to households: after erasure the household row is
-- gone but its sealed entries stay, so the chain can still be verified. Rebuilt under a new
-- name and renamed (neither database can drop that constraint portably); building it as
-- audit_v2 first keeps PostgreSQL's constraint names from clashing with the old table's.
CREATE TABLE audit_v2 (
    household_id TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    decision_id  TEXT   NOT NULL UNIQUE,
    at           TEXT   NOT NULL,
    body         TEXT   NOT NULL,
    prev_hash    TEXT   NOT NULL,
    entry_hash   TEXT   NOT NULL,
    PRIMARY KEY (household_id, seq)
);

INSERT INTO audit_v2 (household_id, seq, decision_id, at, body, prev_hash, entry_hash)
    SELECT household_id, seq, decision_id, at, body, prev_hash, entry_hash FROM audit;

DROP TABLE audit;

ALTER TABLE audit_v2 RENAME TO audit;

-- Retention looks across households for old rows: the one kind of query that does not start
-- from a household id.
CREATE INDEX audit_by_time ON audit (at);
CREATE INDEX decisions_by_time ON decisions (created_at);
CREATE INDEX notifications_by_time ON notifications (created_at);
