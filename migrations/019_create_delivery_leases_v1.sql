-- One sender per delivery attempt, across instances (Node dispatchers and the Worker's delivery
-- consumer on one store). Before attempt `attempt` of a delivery, a sender inserts a lease row for
-- (delivery_id, attempt, generation) with `lease|delivery|attempt|generation` as its
-- insert_deduplication_token: ClickHouse drops a second block with the same token atomically, so a
-- (delivery, attempt, generation) has one row, and the sender that reads its own owner back makes
-- the attempt; the others stand down. A holder that dies mid-attempt leaves its lease to expire
-- (expires_at); the next sender claims generation + 1 after checking that the delivery row still
-- shows no outcome for that attempt.
CREATE TABLE IF NOT EXISTS delivery_leases_v1
(
    delivery_id String,
    attempt     UInt32,
    generation  UInt32,
    owner       String,
    claimed_at  DateTime64(3, 'UTC'),
    expires_at  DateTime64(3, 'UTC'),
    -- the store's clock, for the TTL (claimed_at is the sender's)
    stored_at   DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (delivery_id, attempt, generation)
TTL stored_at + INTERVAL 7 DAY
SETTINGS non_replicated_deduplication_window = 1000000;
