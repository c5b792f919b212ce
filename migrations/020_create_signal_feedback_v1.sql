-- Feedback on signals: a person's verdict on whether a signal was worth acting on (accepted,
-- dismissed with a reason). Append-only: every verdict is kept, so a signal's history of
-- judgements is readable, oldest first, and the quality report counts the latest per signal.
CREATE TABLE IF NOT EXISTS signal_feedback_v1
(
    id         String,
    signal_id  String,
    verdict    LowCardinality(String),
    reason     String,
    by         String,
    created_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (signal_id, created_at, id);
