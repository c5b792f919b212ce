-- Claims are kept 30 days after they are stored, then dropped by background merges. Without this
-- the table grew by one row per fire and resolve, forever.
--
-- A claim matters only while its change can come up again: until the owner has recorded the
-- signal (a fire's key names the signal it follows, so once a signal is recorded the next change
-- has a new key), or, if the owner stopped first, until a later evaluation completes it (after
-- ORPHAN_MS, one minute, in rules/evaluator.ts).
--
-- The clock is the store's, in a column of its own, not claimed_at: claimed_at is the evaluator's
-- "now", which tests and backtests set in the past, and rows already past a TTL are dropped at once.
-- Rows stored before this migration count as stored when it ran.
--
-- Edge case: in per-key mode (cluster) a key whose claim expired unrecorded would be refused once
-- more by insert deduplication while its token is in the window; that needs an owner to stop
-- before recording and every evaluator to stay down for the 30 days.
ALTER TABLE signal_claims_v1 ADD COLUMN IF NOT EXISTS stored_at DateTime DEFAULT now();

ALTER TABLE signal_claims_v1 MODIFY TTL stored_at + INTERVAL 30 DAY;
