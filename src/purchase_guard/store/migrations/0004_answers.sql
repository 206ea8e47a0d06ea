-- purchase-guard schema v4: what answering a challenge needs to be heard, not just typed.
--
-- Portable SQL for SQLite and PostgreSQL, like the earlier files.

-- A member's digit templates from guided enrollment (voice/digits): frame features of each digit
-- as the member says it, never audio. Biometric like a voiceprint: sealed, erased with the member.
CREATE TABLE digit_templates (
    member_id    TEXT NOT NULL PRIMARY KEY,
    household_id TEXT NOT NULL,
    features     TEXT NOT NULL, -- the feature extractor's version; other versions are not compared
    templates    BYTEA NOT NULL, -- sealed DigitTemplates.to_bytes()
    created_at   TEXT NOT NULL,
    expires_at   TEXT, -- a child's, like their voiceprint
    FOREIGN KEY (household_id, member_id) REFERENCES members (household_id, member_id) ON DELETE CASCADE
);

CREATE INDEX digit_templates_by_household ON digit_templates (household_id, member_id);

-- Fingerprints (not audio) of every utterance and answer a household sent, kept for a while, so a
-- recording played again is recognised. Household-scoped: one household's prints are never
-- compared with another's here (that is the broadcast check's fleet window).
CREATE TABLE audio_prints (
    print_id     TEXT NOT NULL PRIMARY KEY,
    household_id TEXT NOT NULL REFERENCES households (id),
    decision_id  TEXT NOT NULL,
    kind         TEXT NOT NULL, -- evaluate | confirm
    at           TEXT NOT NULL,
    print        BYTEA NOT NULL -- sealed Fingerprint.to_bytes()
);

CREATE INDEX audio_prints_by_household ON audio_prints (household_id, at);
CREATE INDEX audio_prints_by_time ON audio_prints (at);

-- Random digits a household was asked to repeat (a keyed digest, not the digits), so it is never
-- asked for the same ones again within the configured period.
CREATE TABLE issued_digits (
    household_id TEXT NOT NULL REFERENCES households (id),
    digest       TEXT NOT NULL,
    issued_at    TEXT NOT NULL,
    PRIMARY KEY (household_id, digest)
);

CREATE INDEX issued_digits_by_time ON issued_digits (issued_at);

-- A voiceprint whose enrollment takes sound like a child's (an ADULT enrolled by mistake, or a
-- child enrolled as one). Until a parent confirms the role with their own credential, purchases
-- by that voice go to a parent's approval.
ALTER TABLE voiceprints ADD COLUMN child_like BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE voiceprints ADD COLUMN role_confirmed_by TEXT;
