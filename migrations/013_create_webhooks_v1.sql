-- Webhook endpoints. Mutable (PATCH, secret rotation, delete), so a ReplacingMergeTree(version)
-- read with FINAL: every change writes the whole row again with a higher version. A deleted
-- endpoint stays as a row with deleted = 1, so nothing written later can bring it back.
-- The secret is kept as such: signing (HMAC) needs it, and only the admin API reaches this table.
CREATE TABLE IF NOT EXISTS webhooks_v1
(
    id                    String,
    url                   String,
    description           String,
    kinds                 Array(String),
    rule_ids              Array(String),
    format                LowCardinality(String),
    enabled               Bool,
    secret                String,
    -- After a rotation the old secret still signs (a second signature) until this time, so
    -- receivers can switch without losing deliveries.
    previous_secret       String,
    previous_secret_until Nullable(DateTime64(3, 'UTC')),
    created_at            DateTime64(3, 'UTC'),
    -- Deliveries are made for signal events from this time on: creation, or the last time the
    -- endpoint was enabled again (what fired while it was disabled is not sent).
    active_since          DateTime64(3, 'UTC'),
    updated_at            DateTime64(3, 'UTC'),
    deleted               Bool,
    version               UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id;
