-- Readiness probes: when no block of events was stored lately, GET /ready writes one row here to
-- learn whether the store still accepts writes (a full disk refuses them while reads still work).
-- At most one row per instance per READY_INTERVAL_MS; rows are dropped after a day.
CREATE TABLE IF NOT EXISTS health_probes_v1
(
    instance String,
    at       DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY at
TTL toDateTime(at) + INTERVAL 1 DAY;
