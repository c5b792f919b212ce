-- Rejected messages (level = error) and corrected ones (level = warning, e.g. a timestamp in the
-- future), with the reason and the message as sent, so nothing vanishes unseen.
CREATE TABLE IF NOT EXISTS ingest_errors_v1
(
    id          String,
    received_at DateTime64(3, 'UTC'),
    source      LowCardinality(String),
    level       LowCardinality(String),
    route       LowCardinality(String),
    batch_index Int32,
    message_id  String,
    path        String,
    message     String,
    payload     String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (received_at, id)
TTL toDateTime(received_at) + INTERVAL 90 DAY;
