-- Exactly-once firing and resolving. Before a signal fires (or resolves), the evaluator inserts a
-- claim whose key is deterministic for that entry: `fire|rule|subject type|subject id|previous
-- signal id` (or `resolve|signal id`), with the key as insert_deduplication_token. ClickHouse
-- drops a second block with the same token atomically, so whichever evaluator (instance, shard
-- overlap, restart) claims first owns the entry; everyone reads the claim back and only the owner
-- records the signal. The window must outlive the entries: claims are also checked before insert.
CREATE TABLE IF NOT EXISTS signal_claims_v1
(
    claim_key  String,
    -- unique per attempt: who claimed (two resolvers of one signal carry the same signal_id)
    owner      String,
    signal_id  String,
    -- the signal as the owner will record it, so an owner that died between claim and record can
    -- be completed by a later evaluation
    signal     String,
    claimed_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY claim_key
SETTINGS non_replicated_deduplication_window = 1000000;
