-- purchase-guard schema v3: credentials of their own for parents, devices and backends; the PIN
-- guess budget kept with the PIN; children's voiceprints that expire.
--
-- Portable SQL for SQLite (3.35 or newer, for DROP COLUMN) and PostgreSQL, like 0001 and 0002.

-- A credential is a random token shown once; only its sha256 is kept. Parent credentials act as
-- that parent (ResolveApproval approves as them); device credentials call Evaluate and Confirm for
-- one household and device; backend credentials call them for every household. Revoked ones stay
-- (revoked_at set) so the audit trail can name who acted.
CREATE TABLE credentials (
    credential_id TEXT NOT NULL PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    household_id  TEXT,
    member_id     TEXT,
    device_id     TEXT,
    label         TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT
);

CREATE INDEX credentials_by_household ON credentials (household_id, kind, created_at);

-- The PIN guess budget (NIST SP 800-63B-4 rate limiting), counted in the same transaction as the
-- decision that checked the PIN: wrong PINs since the last right one, when the next may be checked,
-- and when the PIN was disabled (after too many; until a parent sets a new one).
ALTER TABLE pins ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pins ADD COLUMN next_try_at TEXT;
ALTER TABLE pins ADD COLUMN disabled_at TEXT;
-- TRUE when the argon2id hash is over HMAC(the household's PIN pepper, PIN); FALSE for hashes made before
-- which are rehashed with the pepper the next time the right PIN is spoken.
ALTER TABLE pins ADD COLUMN peppered BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE pins SET next_try_at = throttled_until WHERE throttled_until IS NOT NULL;

ALTER TABLE pins DROP COLUMN lockouts;

ALTER TABLE pins DROP COLUMN throttled_until;

-- Children's voiceprints expire (COPPA 2025: no indefinite retention of a child's biometrics)
-- unless a parent renews them; expiry_notified_at marks the reminder sent before.
ALTER TABLE voiceprints ADD COLUMN expires_at TEXT;
ALTER TABLE voiceprints ADD COLUMN expiry_notified_at TEXT;
