-- The per-day state the rules read (rules/compile/state.ts): activity already attributed to its
-- subjects, one row per (subject, user, day, raw identity), written by the ingestion writer as each
-- block is stored (rules/state/write.ts) and re-attributed when identify / alias / group change
-- who an id belongs to. A full evaluation reads subjects × days of it instead of every event.
--
-- Why these columns:
-- - subject_type / subject_id: an account's rows hold its members' and its tagged activity; a
--   user's rows its own and its joined anonymous history (rules/attribution.ts).
-- - user_key: the user the activity resolves to (or the anonymous id on an account's tagged
--   events that resolve to nobody); raw_id: the user id or anonymous id it was sent under. Rows
--   are per raw identity so that re-attribution can cancel exactly one id's rows.
-- - n: activity messages (track, page, screen). A cancelled row sums to n = 0 and is dead:
--   readers skip it, so its max / min columns (which cannot be cancelled) are never read.
-- - first_seen / last_seen: the row's first and last event; a window edge that falls between
--   them sends the reader to events_v1 for that row's events of the day.
-- - tags: the account ids on the row's events ('' for untagged), so the reader finds those events
--   again by events_v1's sorting key (account_id, user_id, timestamp).
-- - events / event_last: messages and last time (ms) per event name: any event selector without
--   property filters is served from them, for any rule, with no backfill.
-- - sums / maxes / mins: the measures the enabled rules need beyond that (property-filtered counts
--   and last times, numeric property sums / counts / max / min, decayed points), keyed by a hash of
--   their definition (rules/state/measures.ts); state_measures_v1 says which are complete.
-- Every column is a SimpleAggregateFunction, so parts merge without decoding states.
CREATE TABLE IF NOT EXISTS state_daily_v1
(
    subject_type LowCardinality(String),
    subject_id   String,
    user_key     String,
    day          Date,
    raw_id       String,
    n            SimpleAggregateFunction(sum, Int64),
    first_seen   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen    SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    tags         SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    events       SimpleAggregateFunction(sumMap, Map(String, Int64)),
    event_last   SimpleAggregateFunction(maxMap, Map(String, Int64)),
    sums         SimpleAggregateFunction(sumMap, Map(UInt32, Float64)),
    maxes        SimpleAggregateFunction(maxMap, Map(UInt32, Float64)),
    mins         SimpleAggregateFunction(minMap, Map(UInt32, Float64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (subject_type, subject_id, user_key, day, raw_id);

-- Where each raw identity's rows are: re-attribution reads an id's rows by the state's key.
CREATE TABLE IF NOT EXISTS state_owners_v1
(
    raw_id       String,
    subject_type LowCardinality(String),
    subject_id   String,
    user_key     String
)
ENGINE = ReplacingMergeTree
ORDER BY (raw_id, subject_type, subject_id, user_key);

CREATE MATERIALIZED VIEW IF NOT EXISTS state_owners_mv_v1 TO state_owners_v1 AS
SELECT DISTINCT raw_id, subject_type, subject_id, user_key
FROM state_daily_v1
WHERE n > 0;

-- The measures the enabled rules need (rules/state/measures.ts) and whether their values are
-- complete for every stored event (`ready`) or still being backfilled (`building`). The latest
-- version of a key wins.
CREATE TABLE IF NOT EXISTS state_measures_v1
(
    key        UInt32,
    subject    LowCardinality(String),
    definition String,
    status     LowCardinality(String),
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key;

-- Whether the state holds every stored event (`ready`, written by a rebuild or by the first start
-- of an empty store), and when. Without it the rules read events_v1 (rules/compile.ts, plan).
CREATE TABLE IF NOT EXISTS state_builds_v1
(
    name     String,
    status   LowCardinality(String),
    built_at DateTime64(3, 'UTC'),
    version  UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;
