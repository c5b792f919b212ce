-- Rule documents, one row per version: every PUT that changes a rule is a new version and a
-- DELETE is a tombstone version, so a signal's `rule_version` always names the document that
-- fired it. A version is claimed with insert_deduplication_token `rule_id:version` (kept in the
-- deduplication window), so two writers racing for the same version store one row, never two.
CREATE TABLE IF NOT EXISTS rules_v1
(
    rule_id    String,
    version    UInt32,
    deleted    UInt8,
    enabled    UInt8,
    kind       LowCardinality(String),
    subject    LowCardinality(String),
    -- the validated document as JSON, and the text as it was sent (YAML or JSON)
    document   String,
    source     String,
    write_id   String,
    created_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (rule_id, version)
SETTINGS non_replicated_deduplication_window = 100000;
