-- Feed activity_daily_v1 from every insert into events_v1 (activity only: track, page, screen;
-- identify, group and alias change identity and traits, not activity).
CREATE MATERIALIZED VIEW IF NOT EXISTS activity_daily_mv_v1 TO activity_daily_v1 AS
SELECT
    account_id,
    user_id,
    anonymous_id,
    toDate(timestamp) AS day,
    event,
    source,
    uniqExactState(cityHash64(source, message_id)) AS messages,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen
FROM events_v1
WHERE type IN ('track', 'page', 'screen')
GROUP BY account_id, user_id, anonymous_id, day, event, source;

-- Backfill the events stored before the view existed. Safe to re-run, and safe to overlap with
-- inserts the view already saw: the states are sets and min/max, so a message met twice counts once.
INSERT INTO activity_daily_v1
SELECT
    account_id,
    user_id,
    anonymous_id,
    toDate(timestamp) AS day,
    event,
    source,
    uniqExactState(cityHash64(source, message_id)) AS messages,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen
FROM events_v1
WHERE type IN ('track', 'page', 'screen')
GROUP BY account_id, user_id, anonymous_id, day, event, source;
