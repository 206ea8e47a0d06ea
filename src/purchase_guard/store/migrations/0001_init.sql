-- purchase-guard schema v1.
--
-- Portable on purpose: the same file is meant to run on SQLite and PostgreSQL.
--   ids          TEXT
--   money        BIGINT minor units
--   timestamps   TEXT, fixed-width ISO-8601 UTC with microseconds ('2026-05-09T07:35:25.000000Z'),
--                so text order is time order in both databases
--   flags        BOOLEAN (SQLite stores 0/1)
--   JSON bodies  TEXT (canonical JSON written by store/codec.py)
--   binary       BYTEA (SQLite gives it BLOB-compatible storage; PostgreSQL has no BLOB type)
-- Every table with household data carries household_id, and every index used by a query
-- starts with it, because every query filters by it.

CREATE TABLE households (
    id               TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    time_zone        TEXT    NOT NULL,
    currency         TEXT    NOT NULL,
    retain_audio     BOOLEAN NOT NULL,
    admin_token_hash TEXT    NOT NULL UNIQUE,
    created_at       TEXT    NOT NULL
);

CREATE TABLE members (
    member_id    TEXT    NOT NULL PRIMARY KEY,
    household_id TEXT    NOT NULL REFERENCES households (id),
    display_name TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    is_parent    BOOLEAN NOT NULL,
    created_at   TEXT    NOT NULL,
    -- Target of the voiceprints foreign key, so a print can only belong to its member's household.
    UNIQUE (household_id, member_id)
);

CREATE INDEX members_by_household ON members (household_id, created_at);

CREATE TABLE voiceprints (
    member_id    TEXT    NOT NULL PRIMARY KEY,
    household_id TEXT    NOT NULL,
    encoder      TEXT    NOT NULL,
    embedding    BYTEA   NOT NULL, -- float32 little-endian, dim values
    dim          INTEGER NOT NULL,
    n_utterances INTEGER NOT NULL,
    created_at   TEXT    NOT NULL,
    FOREIGN KEY (household_id, member_id) REFERENCES members (household_id, member_id) ON DELETE CASCADE
);

CREATE INDEX voiceprints_by_household ON voiceprints (household_id, member_id);

CREATE TABLE policies (
    household_id TEXT   NOT NULL REFERENCES households (id),
    revision     BIGINT NOT NULL,
    body         TEXT   NOT NULL,
    created_at   TEXT   NOT NULL,
    PRIMARY KEY (household_id, revision)
);

CREATE TABLE pins (
    household_id    TEXT    NOT NULL PRIMARY KEY REFERENCES households (id),
    pin_hash        TEXT    NOT NULL,
    lockouts        INTEGER NOT NULL,
    throttled_until TEXT,
    set_at          TEXT    NOT NULL
);

CREATE TABLE decisions (
    decision_id    TEXT   NOT NULL PRIMARY KEY,
    household_id   TEXT   NOT NULL REFERENCES households (id),
    kind           TEXT   NOT NULL,
    request_id     TEXT   NOT NULL,
    request_digest TEXT   NOT NULL,
    outcome        TEXT   NOT NULL,
    seq            BIGINT NOT NULL, -- the audit seq written with it: commit order within the household
    body           TEXT   NOT NULL,
    created_at     TEXT   NOT NULL,
    UNIQUE (household_id, kind, request_id)
);

CREATE INDEX decisions_by_household ON decisions (household_id, seq);

CREATE TABLE spend (
    decision_id  TEXT    NOT NULL PRIMARY KEY REFERENCES decisions (decision_id),
    household_id TEXT    NOT NULL REFERENCES households (id),
    member_id    TEXT,
    amount_minor BIGINT  NOT NULL,
    seq          BIGINT  NOT NULL, -- audit seq of the decision; orders spend against passed challenges
    at           TEXT    NOT NULL,
    exempt       BOOLEAN NOT NULL
);

CREATE INDEX spend_by_household ON spend (household_id, at);
CREATE INDEX spend_by_member ON spend (household_id, member_id, at);
CREATE INDEX spend_exempt ON spend (household_id, exempt, seq);

CREATE TABLE audit (
    household_id TEXT   NOT NULL REFERENCES households (id),
    seq          BIGINT NOT NULL,
    decision_id  TEXT   NOT NULL UNIQUE,
    at           TEXT   NOT NULL,
    body         TEXT   NOT NULL,
    prev_hash    TEXT   NOT NULL,
    entry_hash   TEXT   NOT NULL,
    PRIMARY KEY (household_id, seq)
);

CREATE TABLE challenges (
    challenge_id  TEXT    NOT NULL PRIMARY KEY,
    household_id  TEXT    NOT NULL REFERENCES households (id),
    decision_id   TEXT    NOT NULL,
    member_id     TEXT,
    status        TEXT    NOT NULL,
    attempts_left INTEGER NOT NULL,
    expires_at    TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    -- Household audit seq at which the challenge passed (NULL until it does): exempt spend
    -- with a greater seq counts towards the next cumulative threshold.
    passed_seq    BIGINT,
    body          TEXT    NOT NULL
);

CREATE INDEX challenges_by_household ON challenges (household_id, status, created_at);
CREATE INDEX challenges_passed ON challenges (household_id, passed_seq);

CREATE TABLE notifications (
    notification_id TEXT NOT NULL PRIMARY KEY,
    household_id    TEXT NOT NULL REFERENCES households (id),
    kind            TEXT NOT NULL,
    message         TEXT NOT NULL,
    challenge_id    TEXT,
    created_at      TEXT NOT NULL
);

CREATE INDEX notifications_by_household ON notifications (household_id, created_at);
