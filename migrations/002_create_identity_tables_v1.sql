-- Users and accounts seen, with first/last activity. min/max are idempotent, so a message
-- written twice (a retry after a crash) leaves these exact.
CREATE TABLE IF NOT EXISTS users_v1
(
    user_id    String,
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY user_id;

CREATE TABLE IF NOT EXISTS accounts_v1
(
    account_id String,
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY account_id;

-- Traits, one row per (subject, key) per identify/group call; the current value of a trait is
-- argMax(value, timestamp). `value` is the trait's JSON text, so numbers, strings and booleans
-- keep their type for the rules.
CREATE TABLE IF NOT EXISTS user_traits_v1
(
    user_id    String,
    key        String,
    value      String,
    timestamp  DateTime64(3, 'UTC'),
    source     LowCardinality(String),
    message_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (user_id, key, timestamp, message_id);

CREATE TABLE IF NOT EXISTS account_traits_v1
(
    account_id String,
    key        String,
    value      String,
    timestamp  DateTime64(3, 'UTC'),
    source     LowCardinality(String),
    message_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (account_id, key, timestamp, message_id);

-- user -> account membership, from `group` calls and from `context.groupId` on events.
CREATE TABLE IF NOT EXISTS memberships_v1
(
    account_id String,
    user_id    String,
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (account_id, user_id);

-- Identity links: an anonymous id (or an earlier user id, from `alias`) that is the same person
-- as `user_id`. Read with GROUP BY: a link written twice is still one link.
CREATE TABLE IF NOT EXISTS identities_v1
(
    previous_id String,
    user_id     String,
    via         LowCardinality(String),
    first_seen  SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (previous_id, user_id, via);
