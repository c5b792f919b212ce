-- One row per stored message (track, page, screen, identify, group, alias), deduplicated by
-- (source, message_id) at write time. The sort key serves the rules' scans: an account's or a
-- user's events over a time window. Monthly partitions keep window scans to a few parts.
CREATE TABLE IF NOT EXISTS events_v1
(
    source             LowCardinality(String),
    message_id         String,
    type               LowCardinality(String),
    event              String,
    user_id            String,
    anonymous_id       String,
    account_id         String,
    timestamp          DateTime64(3, 'UTC'),
    original_timestamp Nullable(DateTime64(3, 'UTC')),
    sent_at            Nullable(DateTime64(3, 'UTC')),
    received_at        DateTime64(3, 'UTC'),
    properties         String,
    traits             String,
    context            String,
    previous_id        String,
    -- The dedup lookup: "which of these message ids does this source already have?" is answered
    -- by this projection's primary key. It is part of every data part, so it is written
    -- atomically with the rows it indexes (a materialized view would not be).
    PROJECTION by_message_id (SELECT source, message_id ORDER BY source, message_id)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (account_id, user_id, timestamp)
SETTINGS deduplicate_merge_projection_mode = 'rebuild';
