-- Lifecycle: every move of a subject between stages, with its time and cause. The current stage
-- is the latest row (argMax by (at, id)); a subject that never moved is in the first stage of the
-- ladder since it was first seen. `id` is deterministic for automatic moves (the signal or trait
-- that caused them), so a move recorded twice collapses to one row.
CREATE TABLE IF NOT EXISTS stage_transitions_v1
(
    subject_type LowCardinality(String),
    subject_id   String,
    id           String,
    at           DateTime64(3, 'UTC'),
    from_stage   LowCardinality(String),
    to_stage     LowCardinality(String),
    cause_type   LowCardinality(String),
    cause        String,
    reason       String,
    recorded_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (subject_type, subject_id, id);
