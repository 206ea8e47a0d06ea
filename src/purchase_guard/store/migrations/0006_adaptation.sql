-- purchase-guard schema v6: voiceprints that improve with use (issue 19 item 5, voice/adaptation.py).
--
-- Portable SQL for SQLite and PostgreSQL, like the earlier files.

-- Embeddings of confirmed purchases added to a print after enrollment: sealed like the print
-- (n_adapted rows of dim float32), never audio. The enrollment columns are never changed by them;
-- re-enrolling or a reset (ResetVoiceAdaptation) clears them.
ALTER TABLE voiceprints ADD COLUMN adapted BYTEA;
ALTER TABLE voiceprints ADD COLUMN n_adapted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE voiceprints ADD COLUMN adapted_at TEXT;

-- The request utterance's embedding and measurements, kept (sealed) with the challenge it raised
-- while that challenge is open: if it is passed, it may adapt the print of the member the voice
-- verified as. Deleted when the challenge closes, and by the minimiser once it has expired.
CREATE TABLE adaptation_samples (
    challenge_id TEXT NOT NULL PRIMARY KEY,
    household_id TEXT NOT NULL,
    member_id    TEXT NOT NULL,
    sample       BYTEA NOT NULL, -- sealed codec.adaptation_sample_to_bytes()
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    FOREIGN KEY (household_id, member_id) REFERENCES members (household_id, member_id) ON DELETE CASCADE
);

CREATE INDEX adaptation_samples_by_household ON adaptation_samples (household_id, member_id);
