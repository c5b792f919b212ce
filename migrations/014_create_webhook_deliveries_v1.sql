-- The webhook outbox: one row per (endpoint, signal event), written before the first attempt and
-- rewritten (higher version) after each attempt, so its state survives a restart. `id` is derived
-- from (webhook_id, event_id) and is also the `webhook-id` header. Read with FINAL.
-- status: pending (not tried yet) | retrying | delivered | dead (dead-lettered; replayable).
CREATE TABLE IF NOT EXISTS webhook_deliveries_v1
(
    id               String,
    webhook_id       String,
    event_id         String,
    type             LowCardinality(String),
    signal_id        String,
    kind             LowCardinality(String),
    rule_id          String,
    -- The JSON event {type, timestamp, data}; the body sent is built from it (json or slack).
    payload          String,
    status           LowCardinality(String),
    -- Attempts made in all; and in the current round (a manual retry starts a new round), which
    -- dead-letters the delivery when it reaches WEBHOOK_MAX_ATTEMPTS.
    attempts         UInt32,
    round_attempts   UInt32,
    next_attempt_at  Nullable(DateTime64(3, 'UTC')),
    last_status_code Nullable(UInt16),
    last_error       String,
    created_at       DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC'),
    delivered_at     Nullable(DateTime64(3, 'UTC')),
    version          UInt64,
    INDEX id_bf id TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (webhook_id, id);

-- Every attempt, append-only: what the endpoint answered (status, the start of the body) or why
-- there was no answer (timeout, connection refused, …).
CREATE TABLE IF NOT EXISTS webhook_attempts_v1
(
    delivery_id  String,
    webhook_id   String,
    attempt      UInt32,
    at           DateTime64(3, 'UTC'),
    status_code  Nullable(UInt16),
    error        String,
    response     String,
    duration_ms  UInt32
)
ENGINE = MergeTree
ORDER BY (webhook_id, delivery_id, attempt);
