-- Daily activity per raw identity (account id on the event, user id, anonymous id), event and
-- source: the rollup the rules compiler reads for the whole days of a window instead of
-- rescanning events_v1 (the partial days at a window's edges still come from events_v1, so
-- windows stay exact to the millisecond).
--
-- Why these columns:
-- - The grain keeps the raw identity, not the resolved subject: an identify or group call that
--   arrives later (anonymous history joined to a user, a user joining an account) re-attributes
--   earlier activity at query time, which a rollup keyed by the subject could not do.
-- - `messages` is a uniqExact state of cityHash64(source, message_id), not a sum: counts stay exact if a
--   message is inserted twice (a retry around the writer, a backfill re-run), because a set
--   absorbs the repeat; a sum would count it twice. A repeat always lands in the same row (every
--   key column is a function of the message). The state holds 8 bytes per message, collisions
--   between two different message ids of one (identity, day, event, source) are ~n²/2⁶⁵ — nil.
-- - first_seen / last_seen (min / max) are idempotent too: days since last seen, champions.
-- AggregatingMergeTree merges the states in the background; readers merge with -Merge.
CREATE TABLE IF NOT EXISTS activity_daily_v1
(
    account_id   String,
    user_id      String,
    anonymous_id String,
    day          Date,
    event        String,
    source       LowCardinality(String),
    messages     AggregateFunction(uniqExact, UInt64),
    first_seen   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (account_id, user_id, anonymous_id, day, event, source);
