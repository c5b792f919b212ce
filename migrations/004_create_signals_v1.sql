-- Signals: the current state of each signal (open, or resolved). Mutable, so a
-- ReplacingMergeTree(version) read with FINAL or argMax; every change is a new row.
CREATE TABLE IF NOT EXISTS signals_v1
(
    id           String,
    rule_id      String,
    rule_version UInt32,
    kind         LowCardinality(String),
    subject_type LowCardinality(String),
    subject_id   String,
    status       LowCardinality(String),
    fired_at     DateTime64(3, 'UTC'),
    resolved_at  Nullable(DateTime64(3, 'UTC')),
    score        Nullable(Float64),
    reasons      String,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id;

-- The append-only log of what happened to signals (fired, resolved), in the order it happened
-- (`event_id` is a monotonic ULID). The live stream resumes from it and the webhook outbox is
-- fed from it, so no consumer depends on having been connected when a signal fired.
CREATE TABLE IF NOT EXISTS signal_events_v1
(
    event_id     String,
    type         LowCardinality(String),
    signal_id    String,
    rule_id      String,
    kind         LowCardinality(String),
    subject_type LowCardinality(String),
    subject_id   String,
    at           DateTime64(3, 'UTC'),
    signal       String
)
ENGINE = ReplacingMergeTree
ORDER BY event_id;
