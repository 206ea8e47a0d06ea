-- purchase-guard schema v5: events pushed to parents (WatchEvents, webhooks).
--
-- Portable SQL for SQLite and PostgreSQL, like the earlier files.

-- The outbox: every event, written in the same transaction as the decision or state change that
-- caused it, so a crash loses none. It is also the log WatchEvents resumes from. A row's delivery
-- columns say where its webhook delivery stands:
--   none       no webhook was set when it was written (or it was removed): stream only
--   pending    due at next_attempt_at; a worker that claims it holds it until claimed_until
--   delivered  the receiver answered 2xx
--   dead       the receiver refused it (4xx other than 429), or every retry failed: the parent
--              sees it in ListDeadLetters and may replay it
CREATE TABLE outbox (
    household_id    TEXT NOT NULL REFERENCES households (id),
    event_id        BIGINT NOT NULL, -- monotonic per household (event_counters)
    kind            TEXT NOT NULL,
    dedup           TEXT NOT NULL, -- the fact it reports; never queued twice
    body            TEXT NOT NULL, -- sealed codec.event_to_json
    created_at      TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    claimed_until   TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    finished_at     TEXT,
    PRIMARY KEY (household_id, event_id),
    UNIQUE (household_id, dedup)
);

CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

-- The last event id given out per household (ids stay monotonic when old rows are purged).
CREATE TABLE event_counters (
    household_id TEXT NOT NULL PRIMARY KEY REFERENCES households (id),
    last_id      BIGINT NOT NULL
);

-- One webhook endpoint per household. The signing secret is sealed (the guard must sign with it).
CREATE TABLE webhooks (
    household_id TEXT NOT NULL PRIMARY KEY REFERENCES households (id),
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,
    created_at   TEXT NOT NULL
);

-- A challenge's method in clear, so expired approval requests are found without opening bodies.
-- NULL for challenges written before v5 (their expiry is not announced).
ALTER TABLE challenges ADD COLUMN method TEXT;
CREATE INDEX challenges_pending_expiry ON challenges (status, expires_at);
