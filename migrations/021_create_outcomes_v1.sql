-- Outcome documents, one row per version, kept like rules_v1: every PUT that changes an outcome
-- is a new version and a DELETE is a tombstone version. A version is claimed with
-- insert_deduplication_token `outcome:id:version`, so two writers racing store one row.
CREATE TABLE IF NOT EXISTS outcomes_v1
(
    outcome_id String,
    version    UInt32,
    deleted    UInt8,
    subject    LowCardinality(String),
    -- the validated document as JSON, and the text as it was sent (YAML or JSON)
    document   String,
    source     String,
    write_id   String,
    created_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (outcome_id, version)
SETTINGS non_replicated_deduplication_window = 100000;
