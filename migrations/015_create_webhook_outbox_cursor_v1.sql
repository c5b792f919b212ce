-- How far the outbox has read the signal log (signal_events_v1, ordered by event_id): deliveries
-- for every event up to `event_id` have been recorded. One row per consumer name.
CREATE TABLE IF NOT EXISTS webhook_outbox_cursor_v1
(
    name     String,
    event_id String,
    version  UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;
